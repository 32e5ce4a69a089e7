"""Which computation graph the semiring pass walks: ATen ops, with a few fused ops decomposed.

The tracer (`trace`) records the model at the ATen level and replaces every op in
`DECOMPOSITIONS` by the primitive ops its decomposition calls, so that those appear as
nodes of the gradient graph (and of a top gradient path).

Why decompose. A semiring other than ``real`` depends on the graph, not only on the function it
computes: a path through a LayerNorm written as one op with a dense ``[d, d]`` Jacobian is a
single edge, while the paper's own code (brunoflow) computes LayerNorm and softmax from
primitive ops (mean, variance, square root, exp, sum, division), so its gradient graph routes
through the row statistics. We walk that primitive-op graph, as the paper does. It has ``O(d)``
edges per row where a dense Jacobian has ``d²``, so every semiring costs about what autograd's
backward costs. The decompositions:

* ``native_layer_norm``: ``μ = mean(x)``, ``c = x - μ``, ``v = mean(c ** 2)``,
  ``r = rsqrt(v + eps)``, ``out = c · r · γ + β`` (the two-pass form; ``c ** 2`` is one edge of
  weight ``2c``, as brunoflow's ``x ** 2``).
* ``_softmax``: ``e = exp(x - m)``, ``s = Σ e``, ``p = e / s``, with the row maximum ``m``
  detached: the shift leaves softmax unchanged, so its paths would add up to zero in the real
  semiring and are no part of the computation's dependence on ``x``.
* ``_log_softmax``: ``(x - m) - log(Σ exp(x - m))``, ``m`` detached.
* ``_safe_softmax`` (rows that are all ``-inf`` give zeros): as ``_softmax``, with an empty
  row's maximum and sum replaced by 0 and 1 (not on the gradient graph).
* ``mv`` / ``dot`` (a matrix or vector times a 1-D vector, e.g. a model ending in ``h @ w``):
  the matrix product ``mm`` with the vector as one column (and row).
* fused attention kernels (scaled dot-product attention): PyTorch's own decompositions into
  matmul, softmax and elementwise ops.

The real semiring is the same on every graph of one function (it equals autograd's gradient).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch._decomp import get_decompositions

aten = torch.ops.aten

__all__ = ["DECOMPOSITIONS", "dot", "layer_norm", "log_softmax", "mv", "safe_softmax", "softmax"]


def layer_norm(
    x: Tensor,
    normalized_shape: Sequence[int],
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """``native_layer_norm`` from primitive ops; returns ``(out, mean, rstd)`` like the op
    (``mean``/``rstd`` keep the normalised dims as size 1)."""
    dims = list(range(x.dim() - len(normalized_shape), x.dim()))
    mean = aten.mean.dim(x, dims, True)
    centered = aten.sub.Tensor(x, mean)
    var = aten.mean.dim(aten.pow.Tensor_Scalar(centered, 2), dims, True)
    rstd = aten.rsqrt.default(aten.add.Scalar(var, eps))
    out = aten.mul.Tensor(centered, rstd)
    if weight is not None:
        out = aten.mul.Tensor(out, weight)
    if bias is not None:
        out = aten.add.Tensor(out, bias)
    return out, mean, rstd


def _shifted(x: Tensor, dim: int, safe: bool) -> Tensor:
    """``x - m`` with the detached row maximum ``m`` (0 for an all ``-inf`` row if ``safe``)."""
    m = aten.detach.default(aten.amax.default(x, [dim], True))
    if safe:
        m = aten.where.self(aten.isinf.default(m), aten.zeros_like.default(m), m)
    return aten.sub.Tensor(x, m)


def _upcast(x: Tensor, half_to_float: bool) -> Tensor:
    return aten._to_copy.default(x, dtype=torch.float32) if half_to_float else x


def softmax(x: Tensor, dim: int, half_to_float: bool) -> Tensor:
    """``_softmax`` as ``exp(x - m) / Σ exp(x - m)`` (``m`` detached)."""
    e = aten.exp.default(_shifted(_upcast(x, half_to_float), dim, False))
    return aten.div.Tensor(e, aten.sum.dim_IntList(e, [dim], True))


def log_softmax(x: Tensor, dim: int, half_to_float: bool) -> Tensor:
    """``_log_softmax`` as ``(x - m) - log Σ exp(x - m)`` (``m`` detached)."""
    u = _shifted(_upcast(x, half_to_float), dim, False)
    total = aten.sum.dim_IntList(aten.exp.default(u), [dim], True)
    return aten.sub.Tensor(u, aten.log.default(total))


def safe_softmax(x: Tensor, dim: int, dtype: torch.dtype | None = None) -> Tensor:
    """``_safe_softmax``: softmax, zeros on rows that are all ``-inf``."""
    if dtype is not None:
        x = aten._to_copy.default(x, dtype=dtype)
    e = aten.exp.default(_shifted(x, dim, True))
    total = aten.sum.dim_IntList(e, [dim], True)
    empty = aten._to_copy.default(aten.eq.Scalar(total, 0), dtype=total.dtype)
    return aten.div.Tensor(e, aten.add.Tensor(total, empty))


def mv(matrix: Tensor, vector: Tensor) -> Tensor:
    """``aten.mv`` (``h @ w`` with a 1-D ``w``) as ``mm(matrix, w[:, None])[:, 0]``: the
    edges of a matrix product, so every semiring rule of ``mm`` applies."""
    return aten.squeeze.dim(aten.mm.default(matrix, aten.unsqueeze.default(vector, 1)), 1)


def dot(a: Tensor, b: Tensor) -> Tensor:
    """``aten.dot`` (two 1-D tensors) as ``mm(a[None, :], b[:, None])[0, 0]``."""
    out = aten.mm.default(aten.unsqueeze.default(a, 0), aten.unsqueeze.default(b, 1))
    return aten.squeeze.dims(out, [0, 1])


#: op overload -> function of the op's arguments that computes it from primitive ATen ops.
DECOMPOSITIONS: dict[Any, Callable[..., Any]] = {
    **get_decompositions(
        [
            aten._scaled_dot_product_flash_attention_for_cpu,
            aten._scaled_dot_product_efficient_attention,
            aten._scaled_dot_product_flash_attention,
        ]
    ),
    aten.native_layer_norm.default: layer_norm,
    aten._softmax.default: softmax,
    aten._log_softmax.default: log_softmax,
    aten._safe_softmax.default: safe_softmax,
    aten.mv.default: mv,
    aten.dot.default: dot,
}
