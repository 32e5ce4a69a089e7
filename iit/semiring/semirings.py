"""Semiring algebra on tensors: the states a semiring backward pass carries per graph node.

A *state* is a tuple of tensors with the shape of the node's value. Each semiring defines the
handful of vectorised primitives the reverse walk needs:

* ``one(shape)`` / ``zero(shape)``: the seed at the output and the empty accumulator;
* ``scale(w, s)``: multiply a state by elementwise local derivatives ``w`` (⊗ along one edge);
* ``within(s, dims)``: ⊕ over dims *inside one op* (broadcast fan-out, a summed index);
* ``scatter(s, index, numel)``: ⊕ of output elements into the input element they copy;
* ``matmul(s, w)``: ⊗ then ⊕ over a contracted index: a state ``[..., i, j]`` times the edge
  weights ``[..., j, k]`` (a matmul's other operand), ``[..., i, k]``;
* ``combine(a, b)``: ⊕ across *branches* (one tensor feeding several ops or argument slots).

Semirings:

``RealSemiring`` (+, ×): ordinary reverse-mode gradient; state ``(g,)``.

``MaxProductSemiring`` (max, ×) on the scalar graph, signed: state ``(mx, mn)``, the largest and
smallest signed product of local derivatives over all paths to the output. Multiplying by a
negative derivative swaps the two. Unreached elements hold ``(-inf, +inf)``; ``0 · ∞`` (an edge
of weight zero into an unreached element) counts as no path.

``OpMaxProductSemiring``: the paper's released-code granularity: inside an op everything is
summed with absolute local derivatives (a matmul's inner index, broadcasting), and ``max`` is
taken only across branches. State ``(b,)``, ``b >= 0``.

``EntropySemiring``: first-order expectation semiring on absolute derivatives; state ``(Z, E)``
with ``Z = Σ_π p(π)`` and ``E = -Σ_π p(π) log p(π)``, ``p(π) = Π_e |w_e|``; ``0 · log 0 = 0``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Literal

import torch
from torch import Tensor

from iit.errors import ArgumentError, unknown_name
from iit.semiring.kernels import max_product_matmul, signed_products
from iit.semiring.weights import cached_transform

State = tuple[Tensor, ...]
SemiringName = Literal["real", "max_product", "entropy"]
"""The semiring of a backward pass: ``real`` (the gradient), ``max_product`` (top gradient path) or ``entropy`` (gradient-graph entropy)."""
Granularity = Literal["scalar", "op"]
"""Whether the semiring walk treats each scalar as a node (``scalar``) or each op as one node (``op``)."""

__all__ = [
    "State",
    "SemiringName",
    "Granularity",
    "Semiring",
    "RealSemiring",
    "MaxProductSemiring",
    "OpMaxProductSemiring",
    "EntropySemiring",
    "neg_xlogx",
]


def neg_xlogx(w: Tensor) -> Tensor:
    """``-|w| log |w|`` elementwise with ``0 · log 0 = 0``; same shape as ``w``."""
    return _neg_alog(w.abs())


def _neg_alog(a: Tensor) -> Tensor:
    """``-a log a`` for ``a >= 0`` with ``0 · log 0 = 0`` (the NaN of ``0 · -inf`` set to 0).
    Equal to ``torch.special.entr`` (up to a NaN input, which gives 0), whose CPU kernel is
    several times slower than this ``log``, ``mul``, ``neg`` and ``nan_to_num``."""
    h = torch.log(a).mul_(a).neg_()
    return torch.nan_to_num_(h, nan=0.0, posinf=math.inf, neginf=-math.inf)


class Semiring(ABC):
    """Abstract base: a semiring's vectorised primitives (see the module docs)."""

    name: str = "semiring"
    arity: int = 1

    def __init__(self, *, compiled: bool = False) -> None:
        #: the walk is being recorded into a compiled program (`compiled_walk`): no
        #: branches on the data, the max-product kernel called as a custom op
        self.compiled = compiled

    @abstractmethod
    def one(self, shape: torch.Size, like: Tensor) -> State:
        """The starting state 1̄ at the output (the multiplicative identity), tensors of ``shape``."""

    @abstractmethod
    def zero(self, shape: torch.Size, like: Tensor) -> State:
        """The empty accumulator 0̄ (no path), tensors of ``shape``."""

    @abstractmethod
    def scale(self, w: Tensor | float, s: State) -> State:
        """⊗ of a state with elementwise local derivatives ``w`` (broadcastable to the state's
        shape, or one constant for every element)."""

    @abstractmethod
    def within(self, s: State, dims: tuple[int, ...]) -> State:
        """⊕ over ``dims`` inside one op (keepdim)."""

    @abstractmethod
    def scatter(self, s: State, index: Tensor, numel: int) -> State:
        """⊕ of flat output elements into input element ``index[o]`` (``-1`` = none); ``[numel]``."""

    @abstractmethod
    def matmul(self, s: State, w: Tensor) -> State:
        """⊕ over ``j`` of ``s[..., i, j] ⊗ w[..., j, k]`` (batch dims broadcast), ``[..., i, k]``."""

    @abstractmethod
    def combine(self, a: State, b: State) -> State:
        """⊕ across branches."""


class _SumSemiring(Semiring):
    """Shared code of semirings whose in-op ⊕ is a sum and whose states are linear in ``w``."""

    def within(self, s: State, dims: tuple[int, ...]) -> State:
        return tuple(t.sum(dims, keepdim=True) for t in s) if dims else s

    def scatter(self, s: State, index: Tensor, numel: int) -> State:
        out = []
        for t in s:
            acc = t.new_zeros(numel)
            keep = index >= 0
            acc.index_add_(0, index[keep], t.reshape(-1)[keep])
            out.append(acc)
        return tuple(out)

    def zero(self, shape: torch.Size, like: Tensor) -> State:
        return tuple(like.new_zeros(shape) for _ in range(self.arity))


class RealSemiring(_SumSemiring):
    """(+, ×): the ordinary gradient. State ``(g,)``."""

    name = "real"

    def one(self, shape: torch.Size, like: Tensor) -> State:
        return (like.new_ones(shape),)

    def scale(self, w: Tensor | float, s: State) -> State:
        return (s[0] * w,)

    def matmul(self, s: State, w: Tensor) -> State:
        return (torch.matmul(s[0], w),)

    def combine(self, a: State, b: State) -> State:
        return (a[0] + b[0],)


class OpMaxProductSemiring(_SumSemiring):
    """Op-granular max-product on absolute derivatives: in-op ⊕ = +, branch ⊕ = max."""

    name = "max_product_op"

    def one(self, shape: torch.Size, like: Tensor) -> State:
        return (like.new_ones(shape),)

    def scale(self, w: Tensor | float, s: State) -> State:
        return (s[0] * abs(w),)

    def matmul(self, s: State, w: Tensor) -> State:
        return (torch.matmul(s[0], cached_transform("abs", w, torch.abs)),)

    def combine(self, a: State, b: State) -> State:
        return (torch.maximum(a[0], b[0]),)


class EntropySemiring(_SumSemiring):
    """Expectation semiring ⟨Z, E⟩ on ``|w|`` with edges lifted to ``⟨|w|, -|w| log |w|⟩``."""

    name = "entropy"
    arity = 2

    def one(self, shape: torch.Size, like: Tensor) -> State:
        return (like.new_ones(shape), like.new_zeros(shape))

    def scale(self, w: Tensor | float, s: State) -> State:
        if not isinstance(w, Tensor):
            a = abs(float(w))
            h = -a * math.log(a) if a > 0 else 0.0
            return (s[0] * a, torch.add(s[1] * a, s[0], alpha=h))
        a = w.abs()
        return (a * s[0], torch.addcmul(a * s[1], _neg_alog(a), s[0]))

    def matmul(self, s: State, w: Tensor) -> State:
        a = cached_transform("abs", w, torch.abs)
        h = cached_transform("neg_alog", w, neg_xlogx)
        both = torch.matmul(torch.stack(torch.broadcast_tensors(*s)), a)  # [Z; E] (x) |w|
        return (both[0], both[1].add_(torch.matmul(s[0], h)))

    def combine(self, a: State, b: State) -> State:
        return (a[0] + b[0], a[1] + b[1])


class MaxProductSemiring(Semiring):
    """Signed max-product on the scalar graph. State ``(mx, mn)``."""

    name = "max_product"
    arity = 2

    def one(self, shape: torch.Size, like: Tensor) -> State:
        return (like.new_ones(shape), like.new_ones(shape))

    def zero(self, shape: torch.Size, like: Tensor) -> State:
        return (like.new_full(shape, -torch.inf), like.new_full(shape, torch.inf))

    def scale(self, w: Tensor | float, s: State) -> State:
        if not isinstance(w, Tensor) and w != 0:  # no 0·∞: unreached stays (-inf, +inf)
            a, b = s[0] * w, s[1] * w
            return (a, b) if w > 0 else (b, a)
        if not isinstance(w, Tensor):
            w = torch.tensor(float(w), dtype=s[0].dtype, device=s[0].device)
        return signed_products(w, s[0], s[1], branch_free=self.compiled)

    def within(self, s: State, dims: tuple[int, ...]) -> State:
        if not dims:
            return s
        return (s[0].amax(dims, keepdim=True), s[1].amin(dims, keepdim=True))

    def scatter(self, s: State, index: Tensor, numel: int) -> State:
        keep = index >= 0
        idx = index[keep]
        hi = s[0].new_full((numel,), -torch.inf)
        lo = s[1].new_full((numel,), torch.inf)
        hi.scatter_reduce_(0, idx, s[0].reshape(-1)[keep], "amax", include_self=True)
        lo.scatter_reduce_(0, idx, s[1].reshape(-1)[keep], "amin", include_self=True)
        return (hi, lo)

    def matmul(self, s: State, w: Tensor) -> State:
        return max_product_matmul(s[0], s[1], w, compiled=self.compiled)

    def combine(self, a: State, b: State) -> State:
        return (torch.maximum(a[0], b[0]), torch.minimum(a[1], b[1]))


def make_semiring(
    name: SemiringName, granularity: Granularity, *, compiled: bool = False
) -> Semiring:
    """Return the semiring object for ``name`` at ``granularity`` (``op`` only for max_product);
    ``compiled``: for a walk recorded into a compiled program (see `Semiring`).

    Raises:
        ArgumentError: for an unknown name, or ``granularity="op"`` with ``real``/``entropy``.
    """
    if granularity not in ("scalar", "op"):
        raise ArgumentError(f"granularity must be 'scalar' or 'op', got {granularity!r}")
    if name == "max_product":
        cls = OpMaxProductSemiring if granularity == "op" else MaxProductSemiring
        return cls(compiled=compiled)
    if granularity == "op":
        raise ArgumentError(
            f"granularity='op' only changes the max_product semiring (max across op branches, "
            f"sum inside an op); {name!r} is computed on the scalar graph, use granularity='scalar'"
        )
    if name == "real":
        return RealSemiring(compiled=compiled)
    if name == "entropy":
        return EntropySemiring(compiled=compiled)
    raise ArgumentError(unknown_name(name, ["real", "max_product", "entropy"], "semiring"))
