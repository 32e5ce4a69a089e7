"""The heavy per-op kernels of a semiring backward pass, eager or fused with ``torch.compile``.

Two rules dominate the cost of a semiring pass on a transformer:

* the signed **max-product contraction** (a matmul's ⊕ over its inner index is a ``max``, which
  no BLAS routine computes): eagerly it materialises ``[..., inner]`` products in chunks;
* the **dense per-row Jacobians** of LayerNorm and softmax (``[rows, d, d]``), built and then
  contracted with the output state.

Each kernel here is one pure tensor function. Eagerly it runs in chunks over its first dim of
about 2**20 products (at least one slice of that dim). With ``compiled=True`` it goes through ``torch.compile``
(inductor: fused C++/OpenMP loops on CPU, Triton on GPU), so the products and Jacobian entries
are generated inside the reduction and never stored. The first call of each kernel compiles
(tens of seconds on CPU; inductor caches the code on disk), later calls reuse it. Compiled and
eager kernels compute the same function (tested to float tolerance).

Where the semiring sums over the Jacobian (``real``) or its absolute value (the op-granular
max-product), LayerNorm and softmax need no dense Jacobian: closed forms in ``O(d)`` per row
(softmax, log-softmax, LayerNorm for ``real``) and ``O(d log d)`` (``|J|`` of LayerNorm, from
prefix sums over the sorted normalised inputs) replace it. The scalar max-product and entropy
semirings need every entry (a ``max``, or ``|J| log |J|``, has no such structure).

Unreached elements of a max-product state are ``(-inf, +inf)``, and an edge of weight 0 into one
(``0·∞ = NaN``) is no path; when neither the state nor the weights hold an infinity
(:func:`all_reached`), no such product can occur and the kernels skip that check.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "DenseKind",
    "dense_jacobian",
    "dense_semiring_vjp",
    "max_product_reduce",
    "kernel",
    "signed_products",
    "all_reached",
]

DenseKind = Literal["softmax", "log_softmax", "layer_norm"]

_CHUNK_ELEMENTS = 1 << 20
_RECOMPILE_LIMIT = 64
#: with compile=True, the op-granular LayerNorm rule uses the dense fused kernel up to this width
_SORT_RULE_MIN_D = 512
_INF = float("inf")


def signed_products(
    w: Tensor, mx: Tensor, mn: Tensor, all_reached: bool = False
) -> tuple[Tensor, Tensor]:
    """``(max, min)`` of ``w·mx`` and ``w·mn`` (broadcast): a negative ``w`` swaps them.
    ``0·∞`` (an edge of weight 0 into an unreached element, ``(-inf, +inf)``) is no path;
    ``all_reached=True`` promises there is no such element and skips that check."""
    pos = w >= 0
    a, b = w * mx, w * mn
    hi, lo = torch.where(pos, a, b), torch.where(pos, b, a)
    if all_reached:
        return hi, lo
    # ``x != x`` marks NaN; fused, it is several times faster than ``nan_to_num``.
    return torch.where(hi != hi, -_INF, hi), torch.where(lo != lo, _INF, lo)


def all_reached(*tensors: Tensor) -> bool:
    """True when none of ``tensors`` (a max-product state, and the weights it meets) holds an
    infinity, so no ``0·∞`` product can occur."""
    return not any(bool(t.isinf().any()) for t in tensors)


def _max_product_reduce(
    w: Tensor, mx: Tensor, mn: Tensor, dims: tuple[int, ...], reached: bool = False
) -> tuple[Tensor, Tensor]:
    hi, lo = signed_products(w, mx, mn, reached)
    return (hi.amax(dims), lo.amin(dims)) if dims else (hi, lo)


def _max_product_reduce_chunked(
    w: Tensor, mx: Tensor, mn: Tensor, dims: tuple[int, ...], reached: bool = False
) -> tuple[Tensor, Tensor]:
    """Eager version: chunks over dim 0 (about ``_CHUNK_ELEMENTS`` products at a time, at least
    one slice); in one piece when dim 0 is reduced."""
    full = torch.broadcast_shapes(w.shape, mx.shape, mn.shape)
    if 0 in dims or not full:
        return _max_product_reduce(w, mx, mn, dims, reached)
    per_row = max(1, full.numel() // max(1, full[0]))
    step = max(1, _CHUNK_ELEMENTS // per_row)
    his, los = [], []
    for start in range(0, full[0], step):
        sl = slice(start, start + step)
        pick = [(t[sl] if t.shape[0] != 1 else t) for t in (w, mx, mn)]
        hi, lo = _max_product_reduce(*pick, dims, reached)
        his.append(hi)
        los.append(lo)
    hi, lo = torch.cat(his), torch.cat(los)
    shape = [n for i, n in enumerate(full) if i not in dims]
    return hi.expand(shape), lo.expand(shape)


def _eye(like: Tensor) -> Tensor:
    """Identity ``[d, d]`` for the last dim of ``like``, as an index comparison (which
    ``torch.compile`` fuses into the consumer instead of reading a stored matrix)."""
    idx = torch.arange(like.shape[-1], device=like.device)
    return (idx[:, None] == idx[None, :]).to(like.dtype)


def dense_jacobian(kind: DenseKind, *tensors: Tensor) -> Tensor:
    """Per-row transposed Jacobian ``Jt[r, j, i] = ∂out_i / ∂in_j``, ``[rows, d, d]``.

    Transposed so that the ⊕ over outputs ``i`` runs along the contiguous last dim.
    ``softmax`` / ``log_softmax``: ``tensors = (p,)``, the softmax output ``[rows, d]``.
    ``layer_norm``: ``tensors = (xhat [rows, d], rstd [rows, 1], gamma [d] or [1])``.
    """
    if kind == "softmax":
        (p,) = tensors
        return p[:, None, :] * (_eye(p) - p[:, :, None])
    if kind == "log_softmax":
        (p,) = tensors
        return _eye(p) - p[:, :, None]
    xhat, rstd, gamma = tensors
    d = xhat.shape[-1]
    eye = _eye(xhat)
    jac = eye - 1.0 / d - xhat[:, :, None] * xhat[:, None, :] / d
    return (gamma.reshape(1, 1, -1) * rstd[:, :, None]) * jac


def _dense_vjp(
    semiring: str,
    kind: DenseKind,
    tensors: tuple[Tensor, ...],
    state: tuple[Tensor, ...],
    reached: bool = False,
) -> tuple[Tensor, ...]:
    """⊗ then ⊕ over the output index ``i`` of ``J[r, i, j]`` with the state ``[rows, d]``."""
    jac = dense_jacobian(kind, *tensors)  # [rows, j, i]
    # written as products reduced with sum/amax (not einsum, which compile lowers to a batched
    # matmul over a stored Jacobian), so that compile generates the Jacobian inside one loop
    if semiring == "real":
        return ((jac * state[0][:, None, :]).sum(-1),)
    if semiring == "max_product_op":
        return ((jac.abs() * state[0][:, None, :]).sum(-1),)
    if semiring == "entropy":
        a = jac.abs()
        z_out, e_out = state[0][:, None, :], state[1][:, None, :]
        z = (a * z_out).sum(-1)
        e = (a * e_out - torch.xlogy(a, a) * z_out).sum(-1)
        return (z, e)
    mx, mn = state
    return _max_product_reduce(jac, mx[:, None, :], mn[:, None, :], (2,), reached)


def _dense_vjp_chunked(
    semiring: str,
    kind: DenseKind,
    tensors: tuple[Tensor, ...],
    state: tuple[Tensor, ...],
    reached: bool = False,
) -> tuple[Tensor, ...]:
    """Eager version: chunks over rows (about ``_CHUNK_ELEMENTS`` Jacobian entries at a time,
    at least one row)."""
    rows, d = state[0].shape
    step = max(1, _CHUNK_ELEMENTS // max(1, d * d))
    if step >= rows:
        return _dense_vjp(semiring, kind, tensors, state, reached)
    parts = [
        _dense_vjp(
            semiring,
            kind,
            tuple(t[r : r + step] if t.dim() > 1 else t for t in tensors),
            tuple(t[r : r + step] for t in state),
            reached,
        )
        for r in range(0, rows, step)
    ]
    return tuple(torch.cat(ts) for ts in zip(*parts))


@cache
def kernel(name: str, compiled: bool) -> Callable[..., tuple[Tensor, ...]]:
    """The kernel ``name`` (``"max_product_reduce"`` or ``"dense_vjp"``), eager or compiled.

    Compiled kernels use ``torch.compile(dynamic=True)``: one compilation serves every shape.
    """
    if not compiled:
        return {"max_product_reduce": _max_product_reduce_chunked, "dense_vjp": _dense_vjp_chunked}[
            name
        ]
    fused = torch.compile(
        {"max_product_reduce": _max_product_reduce, "dense_vjp": _dense_vjp}[name],
        dynamic=True,
        fullgraph=True,
    )

    # the dynamo setting that caps recompilations (renamed in newer torch releases)
    config = torch._dynamo.config
    limit_key = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"

    def run(*args: object) -> tuple[Tensor, ...]:
        # each rank / broadcast pattern / semiring is one specialisation; allow all of them
        # (scoped: the user's dynamo settings are left as they are)
        with config.patch(**{limit_key: _RECOMPILE_LIMIT}):
            return fused(*args)

    return run


def _fresh(t: Tensor) -> Tensor:
    """``t`` as a contiguous tensor that is not a view (copied only when needed): compiled
    kernels then see one layout per rank and guard on nothing else."""
    if t.is_contiguous() and t._base is None:
        return t
    return t.clone(memory_format=torch.contiguous_format)


def max_product_reduce(
    w: Tensor, mx: Tensor, mn: Tensor, dims: tuple[int, ...], *, compiled: bool = False
) -> tuple[Tensor, Tensor]:
    """Signed max-product ⊗ then ⊕ over ``dims``: ``(max, min)`` over ``dims`` of the products
    of ``w`` with ``mx`` / ``mn`` (all broadcast to one shape; ``dims`` are removed)."""
    if compiled:  # fresh contiguous tensors: no view or stride guards, fewer recompilations
        w, mx, mn = _fresh(w), _fresh(mx), _fresh(mn)
    reached = all_reached(w, mx, mn)
    return kernel("max_product_reduce", compiled)(w, mx, mn, dims, reached)  # type: ignore[return-value]


def _layer_norm_abs_vjp(xhat: Tensor, rstd: Tensor, gamma: Tensor, b: Tensor) -> Tensor:
    """``Σ_i |J_ji| b_i`` for LayerNorm (``b >= 0``, ``[rows, d]``) in ``O(d log d)`` per row.

    Off the diagonal ``|J_ji| = a'_i |1 + x̂_i x̂_j| / d`` with ``a'_i = |γ_i| rstd``. For a fixed
    ``t = x̂_j`` the sign of ``1 + x̂_i t`` flips once along sorted ``x̂_i`` (at ``-1/t``), so the
    sum is ``(A - 2 A⁻) + t (B - 2 B⁻)`` from prefix sums of ``a_i`` and ``a_i x̂_i`` over the
    negative part. The ``i = j`` term is then swapped for the true diagonal
    ``a'_j |1 - (1 + x̂_j²) / d|``.
    """
    d = xhat.shape[-1]
    scale = gamma.abs().reshape(1, -1) * rstd  # a'_i, [rows, d] (gamma may be [1])
    a = scale * b / d
    xs, order = xhat.sort(-1)
    a_sorted = a.gather(-1, order)
    zero = a.new_zeros(a.shape[0], 1)
    pa = torch.cat([zero, a_sorted.cumsum(-1)], -1)  # [rows, d + 1]
    pb = torch.cat([zero, (a_sorted * xs).cumsum(-1)], -1)
    total_a, total_b = pa[:, -1:], pb[:, -1:]
    t = xhat
    flip = torch.where(t != 0, -1.0 / t, torch.zeros_like(t))
    k_left = torch.searchsorted(xs, flip, side="left")  # t > 0: x̂_i < -1/t
    k_right = torch.searchsorted(xs, flip, side="right")  # t < 0: x̂_i > -1/t
    neg_a = torch.where(t > 0, pa.gather(-1, k_left), total_a - pa.gather(-1, k_right))
    neg_b = torch.where(t > 0, pb.gather(-1, k_left), total_b - pb.gather(-1, k_right))
    neg_a = torch.where(t == 0, torch.zeros_like(neg_a), neg_a)
    neg_b = torch.where(t == 0, torch.zeros_like(neg_b), neg_b)
    off = (total_a - 2 * neg_a) + t * (total_b - 2 * neg_b)
    sq = 1 + t * t
    return off - a * sq + scale * b * (1 - sq / d).abs()


def _structured_vjp(
    semiring: str, kind: DenseKind, tensors: tuple[Tensor, ...], state: tuple[Tensor, ...]
) -> tuple[Tensor, ...] | None:
    """``O(d)`` / ``O(d log d)`` closed forms of the dense VJP where the semiring's ⊕ is a sum
    over the Jacobian (``real``) or its absolute value (``max_product_op``); else ``None``."""
    if semiring not in ("real", "max_product_op"):
        return None
    s = state[0]
    if kind == "layer_norm":
        xhat, rstd, gamma = tensors
        if semiring == "max_product_op":
            return (_layer_norm_abs_vjp(xhat, rstd, gamma, s),)
        gs = gamma.reshape(1, -1) * s  # Σ_i J_ji s_i = rstd (γs_j - mean(γs) - x̂_j mean(γs x̂))
        return (
            rstd * (gs - gs.mean(-1, keepdim=True) - xhat * (gs * xhat).mean(-1, keepdim=True)),
        )
    (p,) = tensors
    if kind == "softmax":  # J_ji = p_i (δ_ij - p_j)
        if semiring == "real":
            return (p * (s - (p * s).sum(-1, keepdim=True)),)
        weighted = (p * s).sum(-1, keepdim=True)  # |J_ji| = p_i p_j off the diagonal
        return (p * (weighted - p * s) + p * (1 - p) * s,)
    if semiring == "real":  # log_softmax: J_ji = δ_ij - p_j
        return (s - p * s.sum(-1, keepdim=True),)
    return (p * (s.sum(-1, keepdim=True) - s) + (1 - p).abs() * s,)


def dense_semiring_vjp(
    semiring: str,
    kind: DenseKind,
    tensors: tuple[Tensor, ...],
    state: tuple[Tensor, ...],
    *,
    compiled: bool = False,
) -> tuple[Tensor, ...]:
    """Semiring VJP through per-row dense Jacobians (see :func:`dense_jacobian`).

    Args:
        semiring: ``"real"``, ``"max_product"``, ``"max_product_op"`` or ``"entropy"``.
        kind: which Jacobian.
        tensors: its inputs, rows first.
        state: the output state, tensors ``[rows, d]``.
        compiled: fuse with ``torch.compile``.

    Returns:
        The input state, tensors ``[rows, d]``.
    """
    # closed forms first; the sort-based LayerNorm rule of the op granularity only when the
    # compiled dense kernel would be slower (it is for small d: sort/searchsorted are not cheap)
    sort_based = semiring == "max_product_op" and kind == "layer_norm"
    if not (sort_based and compiled and state[0].shape[-1] <= _SORT_RULE_MIN_D):
        structured = _structured_vjp(semiring, kind, tensors, state)
        if structured is not None:
            return structured
    if compiled:
        tensors = tuple(_fresh(t) for t in tensors)
        state = tuple(_fresh(t) for t in state)
    reached = semiring == "max_product" and all_reached(*state, *tensors)
    return kernel("dense_vjp", compiled)(semiring, kind, tensors, state, reached)
