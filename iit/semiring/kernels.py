"""The heavy kernel of a semiring backward pass: the signed max-product matrix product.

In the real and entropy semirings (and the op-granular max-product, which sums inside an op)
a matmul's ⊕ over its inner index is a sum, so their contractions are BLAS matrix products.
The scalar max-product semiring's ⊕ is a ``max``, which no BLAS routine computes:
`max_product_matmul` hands it to `tropical` (a register-tiled C++ kernel on CPU,
``torch.compile`` or chunked torch ops elsewhere; all exact).

Unreached elements of a max-product state are ``(-inf, +inf)``, and an edge of weight 0 into one
(``0·∞ = NaN``) is no path (`signed_products`, the elementwise ⊗).

For the compiled walk (`compiled_walk`) the matrix product is also the custom op
``torch.ops.iit.signed_max_product_matmul``, registered by the first call that asks for it (so that a recorded program calls the kernel
instead of freezing its result), and `signed_products` has a form without branches on
the data.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from iit.semiring.tropical import signed_max_product_matmul

__all__ = ["max_product_matmul", "signed_products"]

_INF = float("inf")


def signed_products(
    w: Tensor, mx: Tensor, mn: Tensor, *, branch_free: bool = False
) -> tuple[Tensor, Tensor]:
    """``(max, min)`` of ``w·mx`` and ``w·mn`` (broadcast): a negative ``w`` swaps them.
    ``0·∞`` (an edge of weight 0 into an unreached element, ``(-inf, +inf)``) is no path.

    ``branch_free``: skip the fast path taken when every product is finite (it reads the data
    to choose, which a recorded program would freeze); the result is the same."""
    a, b = w * mx, w * mn
    cpu = a.device.type == "cpu"  # (reading the sums would wait for a GPU: no fast path there)
    if not branch_free and cpu and math.isfinite(float(a.sum()) + float(b.sum())):
        # all products finite, so every element is reached (``mx >= mn``): the sign-selected
        # products are the larger and the smaller one (sums: fast reductions, where the
        # comparisons and ``fmax`` below are several times slower elementwise passes)
        return torch.maximum(a, b), torch.minimum(a, b)
    pos = w >= 0
    hi, lo = torch.where(pos, a, b), torch.where(pos, b, a)
    # fmax / fmin ignore NaN (a 0·∞ product), so these turn it into "no path" in one op each
    return torch.fmax(hi, hi.new_full((), -_INF)), torch.fmin(lo, lo.new_full((), _INF))


def max_product_matmul(
    mx: Tensor, mn: Tensor, w: Tensor, *, compiled: bool = False
) -> tuple[Tensor, Tensor]:
    """Signed max-product matrix product of a state ``[..., i, j]`` with weights ``[..., j, k]``
    (batch dims broadcast): ``(max, min)`` over ``j`` of ``w[j, k] · state[i, j]``,
    ``[..., i, k]``. Unreached elements (``-inf, +inf``) and ``0·∞`` products are no path.
    Computed by `signed_max_product_matmul` (a register-tiled C++ kernel on
    CPU, a ``torch.compile`` reduction elsewhere with ``compiled=True``). ``compiled`` also
    calls it through the custom op ``torch.ops.iit.signed_max_product_matmul``, which
    recorded programs keep as a call."""
    if compiled:
        return _registered_op()(mx, mn, w)
    return signed_max_product_matmul(mx, mn, w)


@functools.cache
def _registered_op() -> Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Register ``torch.ops.iit.signed_max_product_matmul`` on first use (once per process:
    nothing is registered when `iit.semiring` is imported) and return it."""

    @torch.library.custom_op("iit::signed_max_product_matmul", mutates_args=())
    def op(s_max: Tensor, s_min: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        return signed_max_product_matmul(s_max, s_min, w, compiled=True)

    @op.register_fake
    def _shape(s_max: Tensor, s_min: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        batch = torch.broadcast_shapes(s_max.shape[:-2], w.shape[:-2])
        dtype = torch.promote_types(torch.promote_types(s_max.dtype, s_min.dtype), w.dtype)
        hi = s_max.new_empty((*batch, s_max.shape[-2], w.shape[-1]), dtype=dtype)
        return hi, torch.empty_like(hi)

    return torch.ops.iit.signed_max_product_matmul
