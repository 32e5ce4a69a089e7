"""The heavy kernel of a semiring backward pass: the signed max-product matrix product.

In the real and entropy semirings (and the op-granular max-product, which sums inside an op)
a matmul's ⊕ over its inner index is a sum, so their contractions are BLAS matrix products.
The scalar max-product semiring's ⊕ is a ``max``, which no BLAS routine computes: this module
computes ``(max, min)`` over the inner index of the signed products, eagerly in chunks of
about 2**20 products, or fused with ``torch.compile`` (``compiled=True``: inductor's C++/OpenMP
loops on CPU, Triton on GPU), so the products are generated inside the reduction and never
stored. Both compute the same function exactly (each candidate is one rounded product, and
max/min are exact).

Unreached elements of a max-product state are ``(-inf, +inf)``, and an edge of weight 0 into one
(``0·∞ = NaN``) is no path; when neither the state nor the weights hold an infinity
(:func:`all_reached`), no such product can occur and the kernels skip that check.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch
from torch import Tensor

__all__ = ["max_product_reduce", "max_product_matmul", "kernel", "signed_products", "all_reached"]

_CHUNK_ELEMENTS = 1 << 20
_RECOMPILE_LIMIT = 64
_INF = float("inf")


def signed_products(
    w: Tensor, mx: Tensor, mn: Tensor, all_reached: bool = False
) -> tuple[Tensor, Tensor]:
    """``(max, min)`` of ``w·mx`` and ``w·mn`` (broadcast): a negative ``w`` swaps them.
    ``0·∞`` (an edge of weight 0 into an unreached element, ``(-inf, +inf)``) is no path;
    ``all_reached=True`` promises there is no such element and skips that check."""
    a, b = w * mx, w * mn
    if all_reached:  # mx >= mn everywhere, so the sign of w picks the larger product
        return torch.maximum(a, b), torch.minimum(a, b)
    pos = w >= 0
    hi, lo = torch.where(pos, a, b), torch.where(pos, b, a)
    # fmax / fmin ignore NaN (a 0·∞ product), so these turn it into "no path" in one op each
    return torch.fmax(hi, hi.new_full((), -_INF)), torch.fmin(lo, lo.new_full((), _INF))


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


@cache
def kernel(name: str, compiled: bool) -> Callable[..., tuple[Tensor, ...]]:
    """The kernel ``name`` (``"max_product_reduce"``), eager or compiled.

    Compiled kernels use ``torch.compile(dynamic=True)``: one compilation serves every shape.
    """
    eager = {"max_product_reduce": _max_product_reduce_chunked}
    if not compiled:
        return eager[name]
    fused = torch.compile(
        {"max_product_reduce": _max_product_reduce}[name], dynamic=True, fullgraph=True
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


def max_product_matmul(
    mx: Tensor, mn: Tensor, w: Tensor, *, compiled: bool = False
) -> tuple[Tensor, Tensor]:
    """Signed max-product matrix product of a state ``[..., i, j]`` with weights ``[..., j, k]``
    (batch dims broadcast): ``(max, min)`` over ``j`` of ``w[j, k] · state[i, j]``,
    ``[..., i, k]``. Unreached elements (``-inf, +inf``) and ``0·∞`` products are no path.
    Computed by :func:`~.tropical.signed_max_product_matmul` (a register-tiled C++ kernel on
    CPU, a ``torch.compile`` reduction with ``compiled=True``)."""
    from iit.attribution.semiring.tropical import signed_max_product_matmul

    return signed_max_product_matmul(mx, mn, w, compiled=compiled)
