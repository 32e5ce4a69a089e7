"""The heavy kernel of a semiring backward pass: the signed max-product matrix product.

In the real and entropy semirings (and the op-granular max-product, which sums inside an op)
a matmul's ⊕ over its inner index is a sum, so their contractions are BLAS matrix products.
The scalar max-product semiring's ⊕ is a ``max``, which no BLAS routine computes:
:func:`max_product_matmul` hands it to :mod:`.tropical` (a register-tiled C++ kernel on CPU,
``torch.compile`` or chunked torch ops elsewhere; all exact).

Unreached elements of a max-product state are ``(-inf, +inf)``, and an edge of weight 0 into one
(``0·∞ = NaN``) is no path (:func:`signed_products`, the elementwise ⊗).
"""

from __future__ import annotations

import torch
from torch import Tensor

from iit.attribution.semiring.tropical import signed_max_product_matmul

__all__ = ["max_product_matmul", "signed_products"]

_INF = float("inf")


def signed_products(w: Tensor, mx: Tensor, mn: Tensor) -> tuple[Tensor, Tensor]:
    """``(max, min)`` of ``w·mx`` and ``w·mn`` (broadcast): a negative ``w`` swaps them.
    ``0·∞`` (an edge of weight 0 into an unreached element, ``(-inf, +inf)``) is no path."""
    a, b = w * mx, w * mn
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
    Computed by :func:`~.tropical.signed_max_product_matmul` (a register-tiled C++ kernel on
    CPU, a ``torch.compile`` reduction with ``compiled=True``)."""
    return signed_max_product_matmul(mx, mn, w, compiled=compiled)
