"""Exact signed max-product matrix product: the ⊗-then-⊕ of a max-product state with a matmul.

`signed_max_product_matmul` is the max-product counterpart of ``torch.matmul``: where a
matmul sums ``w[j, k] * s[i, j]`` over ``j``, it takes the largest and the smallest of those
products, for a state that carries both extremes ``(s_max, s_min)`` of its signed paths (a
negative weight turns the smallest into the largest). Every candidate is one rounded product and
``max``/``min`` round nothing, so the result is exact: every backend returns the brute-force
value bit for bit (up to the sign of a zero result).

Three implementations compute the same function (``backend``, ``compiled``):

* a **C++ kernel** (CPU, float32/float64; ``backend="auto"`` picks it whenever it is there, with
  or without ``compiled``): AVX-512 register tiles of 4 rows x 32 columns (float32) held across
  the whole ``j`` loop, three multiplies, a max and a min per vector of 16 candidates, threads
  from PyTorch's pool (``torch.set_num_threads``); about 2-3x ``torch.mm`` on the shapes of a
  BERT layer. Tiles of rows that are entirely unreached are filled, not computed (after a
  target that reads one token, most rows of the last layer). Built by
  ``torch.utils.cpp_extension.load_inline`` on first use (about 30 s, once: then cached on
  disk); where it cannot be built (no compiler) a warning is issued and
  the torch paths below serve instead. ``IIT_TROPICAL_CPP=0`` never builds it;
* ``compiled=True`` (GPU tensors, ``backend="torch"``, or no C++ kernel): one
  ``torch.compile(dynamic=True)`` reduction (inductor: C++/OpenMP on CPU, Triton on GPU) that
  generates the products inside the loop over ``j`` and stores none. On CPU the candidates are
  reduced as order-preserving integer keys (an integer ``max`` is one instruction; inductor's
  float ``max`` also propagates NaN, four); 5-7x ``torch.mm`` on those shapes (the C++ kernel
  fuses the sign selection into masked multiplies, inductor cannot), plus ~0.1 ms per call of
  dynamo overhead;
* otherwise **chunked torch ops**, no compiler at all: the products of ``[rows, k, 2j]`` blocks
  of about ``_CHUNK_ELEMENTS`` candidates, reduced over the contiguous last dim (20-45x).

An unreached element is ``(s_max, s_min) = (-inf, +inf)``; ``0 * inf`` (a zero weight into an
unreached or overflowed element) is no path. When the state and the weights are all finite, the
torch paths use the cheaper form ``max(w*s_max, w*s_min)`` (equal to the sign-selected product
because ``s_max >= s_min``) and skip the NaN checks.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import warnings
from collections.abc import Callable
from functools import cache
from typing import Any, Literal

import torch
from torch import Tensor

from iit.errors import ArgumentError, ArgumentTypeError

__all__ = ["Backend", "signed_max_product_matmul", "cpp_kernel_available"]

Backend = Literal["auto", "cpp", "torch"]

_log = logging.getLogger(__name__)

#: eager torch path: candidates materialised at once (at least one ``(row, column)`` pair)
_CHUNK_ELEMENTS = 1 << 20
_RECOMPILE_LIMIT = 64
_INF = float("inf")
_KEY_DTYPES = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


def signed_max_product_matmul(
    s_max: Tensor,
    s_min: Tensor,
    w: Tensor,
    *,
    compiled: bool = False,
    backend: Backend = "auto",
) -> tuple[Tensor, Tensor]:
    """Signed max-product "matmul" of a state ``(s_max, s_min)`` with local derivatives ``w``.

    ``hi[..., i, k] = max_j c[i, j, k]`` and ``lo[..., i, k] = min_j c'[i, j, k]`` with the
    sign-selected products ``c = w[j, k] * (s_max[i, j] if w[j, k] >= 0 else s_min[i, j])`` and
    ``c' = w[j, k] * (s_min[i, j] if w[j, k] >= 0 else s_max[i, j])``. A product ``0 * inf``
    (NaN: a zero weight into an unreached element) is no path; where no ``j`` gives a path,
    ``hi = -inf`` and ``lo = +inf``. The result is exact (equal to the brute-force reference;
    only the sign of a zero may differ).

    Args:
        s_max: ``[..., i, j]``, the largest signed path product of each state element; ``-inf``
            where unreached.
        s_min: ``[..., i, j]`` (the shape of ``s_max``), the smallest; ``+inf`` where unreached.
            Where reached, ``s_max >= s_min`` is assumed (as any max-product state holds).
        w: ``[..., j, k]`` local derivatives (finite; an infinite weight makes ``inf * 0`` no
            path, like a zero one). Batch dims broadcast against the state's.
        compiled: where the C++ kernel does not serve, fuse with ``torch.compile(dynamic=True)``
            (the first call of each rank / broadcast pattern / dtype compiles, a few seconds;
            the dynamo recompile limit is raised only while this runs) instead of running
            chunked torch ops.
        backend: ``"auto"``: the C++ kernel for float32/float64 CPU tensors when it builds;
            ``"cpp"``: only the C++ kernel (an error where it cannot serve); ``"torch"``: never
            the C++ kernel (``compiled`` then picks inductor or torch ops).

    Returns:
        ``(hi, lo)``, each ``[*batch, i, k]`` in the promoted floating dtype of the inputs. Not
        differentiable (computed without autograd).

    Raises:
        ArgumentError: for fewer than 2 dims, ``s_max``/``s_min`` of different shapes, an inner
            size mismatch, batch dims that do not broadcast, tensors on different devices, an
            unknown ``backend``, or ``backend="cpp"`` for tensors not on the CPU.
        ArgumentTypeError: for a non-floating dtype, or ``backend="cpp"`` for a dtype it lacks
            (float16 / bfloat16).
        RuntimeError: ``backend="cpp"`` when the C++ kernel cannot be built.
    """
    sx, sn, wb, batch = _prepare(s_max, s_min, w)
    if backend not in ("auto", "cpp", "torch"):
        raise ArgumentError(f"backend must be 'auto', 'cpp' or 'torch', got {backend!r}")
    n_i, n_j = sx.shape[1:]
    n_k = wb.shape[2]
    out_shape = (*batch, n_i, n_k)
    if sx.numel() == 0 or wb.numel() == 0:  # some size is 0: nothing to compute
        hi = sx.new_full(out_shape, -_INF)
        return hi, torch.full_like(hi, _INF)
    if sx.requires_grad or sn.requires_grad or wb.requires_grad:
        with torch.no_grad():
            hi, lo = _dispatch(sx, sn, wb, compiled, backend)
    else:
        hi, lo = _dispatch(sx, sn, wb, compiled, backend)
    return hi.reshape(out_shape), lo.reshape(out_shape)


def _prepare(s_max: Tensor, s_min: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor, tuple]:
    """Validate, promote, and flatten the batch: ``s [B, i, j]`` and ``w [1 or B, j, k]``,
    contiguous (``w`` stays unexpanded when it is shared by the whole batch)."""
    if s_max.dim() < 2 or w.dim() < 2:
        raise ArgumentError(
            f"need at least 2 dims, got s_max {tuple(s_max.shape)} and w {tuple(w.shape)}"
        )
    if s_max.shape != s_min.shape:
        raise ArgumentError(f"s_max {tuple(s_max.shape)} and s_min {tuple(s_min.shape)} differ")
    if s_max.shape[-1] != w.shape[-2]:
        raise ArgumentError(
            f"inner sizes differ: state {tuple(s_max.shape)} (j = {s_max.shape[-1]}) and "
            f"w {tuple(w.shape)} (j = {w.shape[-2]})"
        )
    if not (s_max.device == s_min.device == w.device):
        raise ArgumentError(
            f"tensors on different devices: {s_max.device}, {s_min.device}, {w.device}"
        )
    dtype = torch.promote_types(torch.promote_types(s_max.dtype, s_min.dtype), w.dtype)
    if not dtype.is_floating_point:
        raise ArgumentTypeError(f"need floating tensors, got {s_max.dtype}, {s_min.dtype}, {w.dtype}")
    # (the common cases without torch.broadcast_shapes, which alone costs microseconds)
    s_batch, w_batch = tuple(s_max.shape[:-2]), tuple(w.shape[:-2])
    if s_batch == w_batch or not w_batch:
        batch = s_batch
    elif not s_batch:
        batch = w_batch
    else:
        try:
            batch = tuple(torch.broadcast_shapes(s_batch, w_batch))
        except RuntimeError as err:
            raise ArgumentError(
                f"batch dims do not broadcast: state {tuple(s_max.shape)}, w {tuple(w.shape)}"
            ) from err
    n_b = math.prod(batch)
    n_i, n_j = s_max.shape[-2:]
    n_k = w.shape[-1]

    def flat(t: Tensor, rows: int, cols: int) -> Tensor:
        if t.dtype != dtype:
            t = t.to(dtype)
        if t.dim() == 2 or math.prod(t.shape[:-2]) == 1:  # one matrix for the whole batch
            return t.reshape(1, rows, cols).contiguous()
        if tuple(t.shape[:-2]) != batch:
            t = t.expand(*batch, rows, cols)
        return t.reshape(n_b, rows, cols).contiguous()

    sx, sn = flat(s_max, n_i, n_j), flat(s_min, n_i, n_j)
    if sx.shape[0] != n_b:  # a state shared by a batch of weights: one copy per batch element
        sx, sn = sx.expand(n_b, n_i, n_j).contiguous(), sn.expand(n_b, n_i, n_j).contiguous()
    return sx, sn, flat(w, n_j, n_k), batch


def _dispatch(
    sx: Tensor, sn: Tensor, w: Tensor, compiled: bool, backend: Backend
) -> tuple[Tensor, Tensor]:
    cpu = sx.device.type == "cpu"
    if backend == "cpp":
        if not cpu:
            raise ArgumentError(f"backend='cpp' needs CPU tensors, got {sx.device}")
        if sx.dtype not in (torch.float32, torch.float64):
            raise ArgumentTypeError(f"backend='cpp' takes float32/float64, got {sx.dtype}")
        module = _cpp_module()
        if module is None:
            raise RuntimeError(f"the C++ kernel could not be built: {_CPP_STATE['error']}")
        return _run_cpp(module, sx, sn, w)
    if backend == "auto" and cpu and sx.dtype in (torch.float32, torch.float64):
        module = _cpp_module()
        if module is not None:
            return _run_cpp(module, sx, sn, w)
    finite = _all_finite(sx, sn, w)
    if compiled:
        return _compiled(finite, cpu)(sx, sn, w)
    return _eager(sx, sn, w, finite)


def _all_finite(*tensors: Tensor) -> bool:
    """No infinity or NaN in any of ``tensors`` (non-empty): from their extremes, one
    vectorised pass each and one sync (``isfinite().all()`` is many times slower)."""
    extremes = torch.cat([torch.stack(torch.aminmax(t)) for t in tensors])
    return bool(extremes.isfinite().all())


# ---------------------------------------------------------------------------------------------
# chunked torch ops


def _eager(sx: Tensor, sn: Tensor, w: Tensor, finite: bool) -> tuple[Tensor, Tensor]:
    """Chunked torch ops, in one of three forms (fewest passes first).

    Candidates are laid out ``[b, rows, k, j]``, so that each reduction runs over the contiguous
    last dim, in chunks of about ``_CHUNK_ELEMENTS`` (at least one ``(row, k)`` pair: all of
    ``j``) written into one reused buffer.

    * All finite: the ``2j`` candidates ``[s_max, s_min] * [w, w]`` of each ``(i, k)``, then
      their ``amax`` and ``amin`` (``max(w*s_max, w*s_min)`` is the sign-selected product when
      ``s_max >= s_min``).
    * Unreached elements, but otherwise finite: the same with unreached elements set to 0 and
      a penalty added to their (then zero) products: ``-inf`` for the ``max``, ``+inf`` for the
      ``min`` (``addcmul``: exact, the addend is ``0`` or ``±inf``).
    * Else (a reached element at ``±inf`` or an infinite weight, where ``0 * inf`` can meet a
      reached element): the sign-selected products, NaN made no path.
    """
    wt = w.transpose(1, 2)  # [Bw, k, j]
    if finite:
        s2 = torch.cat([sx, sn], 2)  # [B, i, 2j]
        return _chunked(s2, torch.cat([wt, wt], 2), "finite", s2)
    unreached = (sx == -_INF) & (sn == _INF)
    sx0, sn0 = sx.masked_fill(unreached, 0.0), sn.masked_fill(unreached, 0.0)
    if _all_finite(sx0, sn0, w):
        penalty = torch.zeros_like(sx).masked_fill_(unreached, -_INF)
        s2 = torch.cat([sx0, sn0], 2)
        return _chunked(s2, torch.cat([wt, wt], 2), "penalty", torch.cat([penalty, penalty], 2))
    return _chunked(sx, wt, "where", sn)


def _chunked(s: Tensor, wt: Tensor, form: str, t: Tensor) -> tuple[Tensor, Tensor]:
    """``s``, ``t``: ``[B, i, L]``; ``wt``: ``[1 or B, k, L]``. ``form`` (see `_eager`):
    ``"finite"``: ``amax``/``amin`` of ``s * wt``; ``"penalty"``: of ``t + s * wt`` and
    ``-t + s * wt``; ``"where"``: ``s``, ``t`` are ``s_max``, ``s_min``, sign-selected."""
    wt = wt.contiguous()
    n_b, n_i, n_l = s.shape
    n_k = wt.shape[1]
    hi = s.new_empty(n_b, n_i, n_k)
    lo = torch.empty_like(hi)
    shared = wt.shape[0] == 1
    k_step = max(1, min(n_k, _CHUNK_ELEMENTS // n_l))
    rows = max(1, _CHUNK_ELEMENTS // (n_l * k_step))  # (batch, row) pairs per chunk
    b_step, i_step = (min(n_b, max(1, rows // n_i)), n_i) if rows >= n_i else (1, rows)
    # one buffer for every chunk (a fresh multi-MB tensor per chunk costs page faults)
    buf = s.new_empty(b_step * min(i_step, n_i) * k_step * n_l)
    buf2 = torch.empty_like(buf) if form == "where" else None
    neg = -t if form == "penalty" else None
    for b0 in range(0, n_b, b_step):
        bs = slice(b0, b0 + b_step)
        wbs = slice(0, 1) if shared else bs
        for i0 in range(0, n_i, i_step):
            rs = slice(i0, i0 + i_step)
            for k0 in range(0, n_k, k_step):
                ks = slice(k0, k0 + k_step)
                wk = wt[wbs, None, ks, :]  # [b, 1, k, L]
                sk = s[bs, rs, None, :]  # [b, i, 1, L]
                shape = (sk.shape[0], sk.shape[1], wk.shape[2], n_l)
                out = buf[: math.prod(shape)].view(shape)
                if form == "finite":
                    torch.mul(sk, wk, out=out)
                    torch.amax(out, -1, out=hi[bs, rs, ks])
                    torch.amin(out, -1, out=lo[bs, rs, ks])
                elif form == "penalty":
                    assert neg is not None
                    torch.addcmul(t[bs, rs, None, :], sk, wk, out=out)
                    torch.amax(out, -1, out=hi[bs, rs, ks])
                    torch.addcmul(neg[bs, rs, None, :], sk, wk, out=out)
                    torch.amin(out, -1, out=lo[bs, rs, ks])
                else:
                    assert buf2 is not None
                    out2 = buf2[: math.prod(shape)].view(shape)
                    pos = wk >= 0
                    a = torch.mul(sk, wk, out=out)
                    b = torch.mul(t[bs, rs, None, :], wk, out=out2)
                    up, down = torch.where(pos, a, b), torch.where(pos, b, a)
                    up = up.masked_fill_(up != up, -_INF)  # ``x != x`` marks NaN
                    down = down.masked_fill_(down != down, _INF)
                    torch.amax(up, -1, out=hi[bs, rs, ks])
                    torch.amin(down, -1, out=lo[bs, rs, ks])
    return hi, lo


# ---------------------------------------------------------------------------------------------
# torch.compile


def _key(x: Tensor) -> Tensor:
    """Order-preserving integer key of a float tensor (an involution on the bits: ``_unkey``
    inverts it). NaNs get keys beyond ``±inf``; only NaN-free candidates are keyed."""
    bits = x.view(_KEY_DTYPES[x.dtype])
    width = bits.element_size() * 8
    return bits ^ ((bits >> (width - 1)) & ((1 << (width - 1)) - 1))


def _unkey(k: Tensor, dtype: torch.dtype) -> Tensor:
    width = k.element_size() * 8
    return (k ^ ((k >> (width - 1)) & ((1 << (width - 1)) - 1))).view(dtype)


def _products(sx: Tensor, sn: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """``w * s_max`` and ``w * s_min`` broadcast to ``[B, i, j, k]`` (never stored when
    compiled: inductor generates them inside the reduction over ``j``, ``k`` vectorised)."""
    wk = w[:, None, :, :]
    return sx[..., None] * wk, sn[..., None] * wk


def _fused(sx: Tensor, sn: Tensor, w: Tensor, finite: bool, keyed: bool) -> tuple[Tensor, Tensor]:
    a, b = _products(sx, sn, w)
    if finite:
        if keyed:
            ka, kb = _key(a), _key(b)
            up_k, down_k = torch.maximum(ka, kb).amax(2), torch.minimum(ka, kb).amin(2)
            return _unkey(up_k, sx.dtype), _unkey(down_k, sx.dtype)
        return torch.maximum(a, b).amax(2), torch.minimum(a, b).amin(2)
    pos = (w >= 0)[:, None, :, :]
    up, down = torch.where(pos, a, b), torch.where(pos, b, a)
    up = torch.where(up != up, -_INF, up)
    down = torch.where(down != down, _INF, down)
    if keyed:
        return _unkey(_key(up).amax(2), sx.dtype), _unkey(_key(down).amin(2), sx.dtype)
    return up.amax(2), down.amin(2)


@cache
def _compiled(finite: bool, cpu: bool) -> Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The fused kernel for all-finite inputs or not; integer-keyed reductions on CPU."""
    fused = torch.compile(_fused, dynamic=True, fullgraph=True)
    config = torch._dynamo.config
    # the dynamo setting that caps recompilations (renamed in newer torch releases)
    limit_key = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"

    def run(sx: Tensor, sn: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        # each dtype / shared-or-batched w / size-1 dim is one specialisation; allow them all,
        # scoped to this call: the user's setting is restored after it (set and restored by
        # hand: ``config.patch`` costs several times more per call)
        old = getattr(config, limit_key)
        setattr(config, limit_key, max(old, _RECOMPILE_LIMIT))
        try:
            return fused(sx, sn, w, finite, cpu and sx.dtype in _KEY_DTYPES)
        finally:
            setattr(config, limit_key, old)

    return run


# ---------------------------------------------------------------------------------------------
# C++ kernel

_CPP_SOURCE = r"""
#include <ATen/Parallel.h>
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace {

constexpr int MR = 4;  // rows per register tile
constexpr int NV = 2;  // vectors per register tile

#ifdef __AVX512F__
template <typename T> struct Vec;
template <> struct Vec<float> {
  using V = __m512; using M = __mmask16; static constexpr int W = 16;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V load(M m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void store(float* p, M m, V v) { _mm512_mask_storeu_ps(p, m, v); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V mul(V src, M m, V a, V b) { return _mm512_mask_mul_ps(src, m, a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static M nonneg(V a) { return _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GE_OQ); }
};
template <> struct Vec<double> {
  using V = __m512d; using M = __mmask8; static constexpr int W = 8;
  static V load(const double* p) { return _mm512_loadu_pd(p); }
  static V load(M m, const double* p) { return _mm512_maskz_loadu_pd(m, p); }
  static void store(double* p, V v) { _mm512_storeu_pd(p, v); }
  static void store(double* p, M m, V v) { _mm512_mask_storeu_pd(p, m, v); }
  static V set1(double x) { return _mm512_set1_pd(x); }
  static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
  static V mul(V src, M m, V a, V b) { return _mm512_mask_mul_pd(src, m, a, b); }
  static V max(V a, V b) { return _mm512_max_pd(a, b); }
  static V min(V a, V b) { return _mm512_min_pd(a, b); }
  static M nonneg(V a) { return _mm512_cmp_pd_mask(a, _mm512_setzero_pd(), _CMP_GE_OQ); }
};
template <typename T> constexpr int lanes() { return Vec<T>::W; }

// rows x nv vectors of columns; the last vector holds `tail` valid lanes (TAIL) or all of them
template <typename T, int R, int N, bool TAIL>
void tile(const T* sx, const T* sn, int64_t ld_s, const T* w, int64_t ld_w, int64_t J,
          T* hi, T* lo, int64_t ld_o, int tail) {
  using X = Vec<T>; using V = typename X::V; using M = typename X::M;
  constexpr int W = X::W;
  const T inf = std::numeric_limits<T>::infinity();
  const M tm = TAIL ? (M)((1u << tail) - 1u) : (M)~0u;
  V h[R][N], l[R][N];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < N; ++v) { h[r][v] = X::set1(-inf); l[r][v] = X::set1(inf); }
  for (int64_t j = 0; j < J; ++j) {
    const T* wr = w + j * ld_w;
    V wv[N]; M pos[N];
    for (int v = 0; v < N; ++v) {
      wv[v] = (TAIL && v == N - 1) ? X::load(tm, wr + v * W) : X::load(wr + v * W);
      pos[v] = X::nonneg(wv[v]);
    }
    for (int r = 0; r < R; ++r) {
      const V bx = X::set1(sx[r * ld_s + j]), bn = X::set1(sn[r * ld_s + j]);
      for (int v = 0; v < N; ++v) {
        const V b = X::mul(wv[v], bn);                      // w * s_min
        const V up = X::mul(b, pos[v], wv[v], bx);          // w >= 0 ? w * s_max : w * s_min
        const V down = X::mul(b, (M)~pos[v], wv[v], bx);    // w >= 0 ? w * s_min : w * s_max
        // max(x, acc) returns acc when x is NaN (0 * inf: no path); acc is never NaN
        h[r][v] = X::max(up, h[r][v]);
        l[r][v] = X::min(down, l[r][v]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < N; ++v) {
      if (TAIL && v == N - 1) {
        X::store(hi + r * ld_o + v * W, tm, h[r][v]);
        X::store(lo + r * ld_o + v * W, tm, l[r][v]);
      } else {
        X::store(hi + r * ld_o + v * W, h[r][v]);
        X::store(lo + r * ld_o + v * W, l[r][v]);
      }
    }
}

// dispatch a partial tile (rows < MR, vectors < NV, ragged last vector) to its instantiation
template <typename T, int R, int N>
void block(int rows, int nv, int tail, const T* sx, const T* sn, int64_t ld_s, const T* w,
           int64_t ld_w, int64_t J, T* hi, T* lo, int64_t ld_o) {
  if constexpr (R > 1) {
    if (rows < R) return block<T, R - 1, N>(rows, nv, tail, sx, sn, ld_s, w, ld_w, J, hi, lo, ld_o);
  }
  if constexpr (N > 1) {
    if (nv < N) return block<T, R, N - 1>(rows, nv, tail, sx, sn, ld_s, w, ld_w, J, hi, lo, ld_o);
  }
  if (tail == Vec<T>::W) tile<T, R, N, false>(sx, sn, ld_s, w, ld_w, J, hi, lo, ld_o, tail);
  else tile<T, R, N, true>(sx, sn, ld_s, w, ld_w, J, hi, lo, ld_o, tail);
}
#else
template <typename T> constexpr int lanes() { return 16; }

// portable tile: the same sign-selected products, `x > acc ? x : acc` skips NaN
template <typename T>
void block(int rows, int nv, int tail, const T* sx, const T* sn, int64_t ld_s, const T* w,
           int64_t ld_w, int64_t J, T* hi, T* lo, int64_t ld_o) {
  constexpr int KT = NV * lanes<T>();
  const int cols = (nv - 1) * lanes<T>() + tail;
  const T inf = std::numeric_limits<T>::infinity();
  T h[MR][KT], l[MR][KT];
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < KT; ++c) { h[r][c] = -inf; l[r][c] = inf; }
  for (int64_t j = 0; j < J; ++j) {
    const T* wr = w + j * ld_w;
    for (int r = 0; r < rows; ++r) {
      const T x = sx[r * ld_s + j], n = sn[r * ld_s + j];
      for (int c = 0; c < cols; ++c) {
        const T wv = wr[c];
        const bool pos = wv >= 0;
        const T up = wv * (pos ? x : n), down = wv * (pos ? n : x);
        h[r][c] = up > h[r][c] ? up : h[r][c];
        l[r][c] = down < l[r][c] ? down : l[r][c];
      }
    }
  }
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) { hi[r * ld_o + c] = h[r][c]; lo[r * ld_o + c] = l[r][c]; }
}
#endif

template <typename T>
void launch(const T* sx, const T* sn, const T* w, int64_t w_batch_stride, T* hi, T* lo,
            int64_t B, int64_t I, int64_t J, int64_t K) {
  constexpr int W = lanes<T>();
  constexpr int KT = NV * W;  // columns per tile
  const int64_t ni = (I + MR - 1) / MR, nk = (K + KT - 1) / KT;
  const T inf = std::numeric_limits<T>::infinity();
  // row blocks whose rows are all unreached ((-inf, +inf) throughout: every candidate is
  // -inf / +inf or NaN) have an unreached result: filled, not computed (exact)
  std::vector<char> empty_block(B * ni, 1);
  for (int64_t r = 0; r < B * I; ++r) {
    const T* x = sx + r * J; const T* n = sn + r * J;
    int64_t j = 0;
    while (j < J && x[j] == -inf && n[j] == inf) ++j;
    if (j < J) empty_block[(r / I) * ni + (r % I) / MR] = 0;
  }
  // about 2**16 candidates per task at least: small products stay on one thread
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, MR * KT * J));
  at::parallel_for(0, B * ni * nk, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      // tile order: batch, column block, row block (consecutive tiles share one w panel)
      const int64_t b = t / (ni * nk), rem = t % (ni * nk), kb = rem / ni, ib = rem % ni;
      const int64_t i0 = ib * MR, k0 = kb * KT;
      const int rows = (int)std::min<int64_t>(MR, I - i0);
      const int64_t cols = std::min<int64_t>(KT, K - k0);
      if (empty_block[b * ni + ib]) {
        for (int r = 0; r < rows; ++r) {
          std::fill_n(hi + (b * I + i0 + r) * K + k0, cols, -inf);
          std::fill_n(lo + (b * I + i0 + r) * K + k0, cols, inf);
        }
        continue;
      }
      const int nv = (int)((cols + W - 1) / W);
      const int tail = (int)(cols - (int64_t)(nv - 1) * W);
      const int64_t s_off = (b * I + i0) * J, o_off = (b * I + i0) * K + k0;
#ifdef __AVX512F__
      block<T, MR, NV>(rows, nv, tail, sx + s_off, sn + s_off, J, w + b * w_batch_stride + k0, K,
                       J, hi + o_off, lo + o_off, K);
#else
      block<T>(rows, nv, tail, sx + s_off, sn + s_off, J, w + b * w_batch_stride + k0, K, J,
               hi + o_off, lo + o_off, K);
#endif
    }
  });
}

}  // namespace

// s_max, s_min: [B, I, J]; w: [1 or B, J, K]; all contiguous, one floating dtype
std::vector<at::Tensor> signed_max_product_matmul(at::Tensor sx, at::Tensor sn, at::Tensor w) {
  TORCH_CHECK(sx.is_contiguous() && sn.is_contiguous() && w.is_contiguous(), "need contiguous");
  TORCH_CHECK(sx.dim() == 3 && sn.sizes() == sx.sizes() && w.dim() == 3, "bad shapes");
  TORCH_CHECK(w.size(1) == sx.size(2) && (w.size(0) == 1 || w.size(0) == sx.size(0)), "bad w");
  TORCH_CHECK(sn.scalar_type() == sx.scalar_type() && w.scalar_type() == sx.scalar_type(),
              "one dtype");
  const int64_t B = sx.size(0), I = sx.size(1), J = sx.size(2), K = w.size(2);
  auto hi = at::empty({B, I, K}, sx.options()), lo = at::empty({B, I, K}, sx.options());
  const int64_t wbs = w.size(0) == 1 ? 0 : w.stride(0);
  AT_DISPATCH_FLOATING_TYPES(sx.scalar_type(), "signed_max_product_matmul", [&] {
    launch<scalar_t>(sx.data_ptr<scalar_t>(), sn.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                     wbs, hi.data_ptr<scalar_t>(), lo.data_ptr<scalar_t>(), B, I, J, K);
  });
  return {hi, lo};
}
"""

_CPP_STATE: dict[str, Any] = {"built": False, "module": None, "error": None}
_CPP_LOCK = threading.Lock()


def _isa_flags() -> tuple[str, list[str]]:
    """A name tag and the compiler flags for this CPU's vector extensions (explicit flags, not
    ``-march=native``, so that a shared build cache never serves a binary to a CPU without its
    instructions)."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.startswith("AVX512"):
        return "avx512", ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"]
    if capability.startswith("AVX2"):
        return "avx2", ["-mavx2", "-mfma"]
    return "generic", []


def _cpp_module() -> Any | None:
    """The built C++ extension (built on the first call, then cached on disk by
    ``torch.utils.cpp_extension``), or ``None`` where it cannot be built or is disabled
    (``IIT_TROPICAL_CPP=0``)."""
    if _CPP_STATE["built"]:
        return _CPP_STATE["module"]
    with _CPP_LOCK:
        if _CPP_STATE["built"]:
            return _CPP_STATE["module"]
        module = None
        if os.environ.get("IIT_TROPICAL_CPP", "1") == "0":
            _CPP_STATE["error"] = "disabled by IIT_TROPICAL_CPP=0"
        else:
            tag, isa = _isa_flags()
            try:
                from torch.utils.cpp_extension import load_inline

                _log.info("loading (on the first use here: building, ~30 s) the C++ kernel")
                _clear_stale_build_lock(f"iit_tropical_{tag}")
                module = load_inline(
                    name=f"iit_tropical_{tag}",
                    cpp_sources=[_CPP_SOURCE],
                    functions=["signed_max_product_matmul"],
                    extra_cflags=["-O3", "-ffp-contract=off", "-fopenmp", *isa],
                    extra_ldflags=["-fopenmp"],
                    verbose=False,
                )
            except Exception as err:  # no compiler / ninja / headers: the torch ops instead
                _CPP_STATE["error"] = f"{type(err).__name__}: {err}"
                warnings.warn(
                    "signed_max_product_matmul: the C++ kernel could not be built, using torch "
                    f"ops (slower): {_CPP_STATE['error'][:500]}",
                    RuntimeWarning,
                    stacklevel=4,
                )
        _CPP_STATE["module"] = module
        _CPP_STATE["built"] = True
        return module


#: a build lock older than this is left by an interrupted build (a build takes about 30 s)
_STALE_LOCK_SECONDS = 600


def _clear_stale_build_lock(name: str) -> None:
    """Remove the build lock of extension ``name`` if an interrupted build left it behind:
    ``torch.utils.cpp_extension`` would otherwise wait for it forever."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        lock = os.path.join(_get_build_directory(name, verbose=False), "lock")
        if time.time() - os.path.getmtime(lock) > _STALE_LOCK_SECONDS:
            _log.warning("removing the stale build lock %s (an interrupted build)", lock)
            os.remove(lock)
    except (ImportError, OSError):  # no lock (the usual case), or another torch layout
        pass


def cpp_kernel_available() -> bool:
    """Whether the C++ kernel is (or can be) built here; builds it if not tried yet."""
    return _cpp_module() is not None


def _run_cpp(module: Any, sx: Tensor, sn: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    hi, lo = module.signed_max_product_matmul(sx, sn, w)
    return hi, lo
