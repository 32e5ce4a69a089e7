"""Per-op semiring VJP rules for ATen-level graphs (the op table of semiring backpropagation).

Every supported op falls in one of four kinds; each kind has one generic rule, written only in
terms of the `Semiring` primitives:

* ``elementwise`` (with broadcasting): local derivatives in closed form for the frequent ops,
  else from ``torch.func.jvp`` with an all-ones tangent (each output element depends on exactly
  one element of the argument), then ⊕ over broadcast dims;
* ``structural`` (views, permutes, slices, cat, gather, ...): each output element copies one
  input element with weight 1; slices, selects, cat and split write the state into an empty
  one, the others take the copy map from running the op on ``arange``;
* ``reduction`` (sum, mean): weight 1 (or ``1/n``) from each input element to its output;
* ``contraction`` (mm, bmm, addmm, baddbmm): edge ``A[i,j] -> C[i,k]`` has weight ``B[j,k]``
  (a semiring matrix product with the other operand).

LayerNorm and softmax are not ops of this table: the tracer decomposes them into primitive ops
(`decompositions`), as the paper's code computes them.

At the scalar granularity each (input element, output element) pair of one argument slot is
one edge whose weight is the partial derivative, so `edge_weights` (a ``jvp`` with a
one-hot tangent) returns the exact out-edges of one element; path recovery uses it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from iit.errors import UnsupportedOpError, did_you_mean
from iit.semiring.semirings import Semiring, State

aten = torch.ops.aten

OpKind = Literal["elementwise", "structural", "reduction", "contraction"]
Slot = tuple[int, int | None]  # (argument position, index inside a list argument or None)

__all__ = [
    "OpCall", "OpKind", "Slot", "op_kind", "supported_op_names", "slot_vjp", "edge_weights",
    "value_reads", "is_contraction",
]  # fmt: skip

_ELEMENTWISE = [
    "add", "sub", "rsub", "mul", "div", "neg", "tanh", "relu", "gelu", "sigmoid", "silu", "exp",
    "log", "sqrt", "rsqrt", "pow", "where", "_to_copy", "abs", "erf", "masked_fill", "clamp",
    "maximum", "minimum", "leaky_relu", "hardtanh", "sin", "cos", "reciprocal", "expm1",
    "log1p", "softplus", "elu", "square", "to",
]  # fmt: skip
_STRUCTURAL = [
    "view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand", "unsqueeze",
    "squeeze", "clone", "slice", "select", "alias", "cat", "stack", "index_select", "gather",
    "split", "split_with_sizes", "unbind", "chunk", "narrow", "repeat", "contiguous",
    "lift_fresh_copy", "index", "embedding", "flatten", "unflatten", "movedim",
]  # fmt: skip
_REDUCTION = ["sum", "mean"]
_CONTRACTION = ["mm", "bmm", "addmm", "baddbmm"]

_KIND: dict[str, OpKind] = {}
for _names, _kind in (
    (_ELEMENTWISE, "elementwise"),
    (_STRUCTURAL, "structural"),
    (_REDUCTION, "reduction"),
    (_CONTRACTION, "contraction"),
):
    for _n in _names:
        _KIND[_n] = _kind  # type: ignore[assignment]

#: ops that stop gradients: their outputs do not depend on the sources.
NO_GRAD_OPS = frozenset({"detach", "argmax", "argmin", "eq", "ne", "lt", "le", "gt", "ge"})


def supported_op_names() -> list[str]:
    """Names (ATen overload packets, e.g. ``"addmm"``) of every op with a semiring rule.

    Returns:
        The names, sorted.

    Raises:
        TypeError: called with an argument (it takes none); it raises nothing else.

    Examples:
        >>> from iit.semiring import supported_op_names
        >>> "addmm" in supported_op_names() and "tanh" in supported_op_names()
        True
    """
    return sorted(_KIND)


@functools.cache
def packet_name(target: Any) -> str:
    """The ATen overload-packet name of an FX node target (``aten.addmm.default -> "addmm"``)."""
    packet = getattr(target, "overloadpacket", None)
    if packet is not None:
        return str(packet.__name__)
    return getattr(target, "__name__", str(target))


def is_contraction(target: Any) -> bool:
    """Whether an FX node target is a matrix product with a contraction rule."""
    return _KIND.get(packet_name(target)) == "contraction"


def op_kind(target: Any, where: str = "") -> OpKind:
    """Return the kind of an ATen op target.

    Raises:
        UnsupportedOpError: if the op has no rule; names the op and the nearest supported ops.
    """
    name = packet_name(target)
    if name in _KIND:
        return _KIND[name]
    hint = did_you_mean(name, _KIND, n=4)
    raise UnsupportedOpError(
        f"op {target} ({name}){where} has no semiring backward rule{hint}; supported ops: "
        f"{supported_op_names()}"
    )


@dataclass
class OpCall:
    """One traced op application: ``target(*args, **kwargs)``, then ``[index]`` for getitem."""

    target: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    index: int | None
    output: Tensor

    @property
    def name(self) -> str:
        """The op's name, e.g. ``"aten.addmm.default"`` (``"...[0]"`` for a getitem)."""
        return str(self.target) + (f"[{self.index}]" if self.index is not None else "")

    @property
    def kind(self) -> OpKind:
        return op_kind(self.target)

    def arg(self, slot: Slot) -> Tensor:
        value = self.args[slot[0]]
        return value if slot[1] is None else value[slot[1]]

    def with_slot(
        self, slot: Slot, value: Tensor, others: Callable[[Tensor], Tensor] | None = None
    ):
        """Arguments with ``slot`` replaced by ``value`` (and other float tensors mapped)."""
        args = []
        for i, a in enumerate(self.args):
            if isinstance(a, (list, tuple)):
                items = []
                for j, b in enumerate(a):
                    if (i, j) == slot:
                        items.append(value)
                    elif others is not None and isinstance(b, Tensor) and b.is_floating_point():
                        items.append(others(b))
                    else:
                        items.append(b)
                args.append(type(a)(items) if isinstance(a, tuple) else items)
            elif (i, None) == slot:
                args.append(value)
            elif others is not None and isinstance(a, Tensor) and a.is_floating_point():
                args.append(others(a))
            else:
                args.append(a)
        return tuple(args)

    def call_slot(self, slot: Slot) -> Callable[[Tensor], Tensor]:
        """The op as a function of one argument slot, other arguments fixed."""

        def fn(x: Tensor) -> Tensor:
            out = self.target(*self.with_slot(slot, x), **self.kwargs)
            return out[self.index] if self.index is not None else out

        return fn


def edge_weights(call: OpCall, slot: Slot, flat_index: int) -> Tensor:
    """Local derivatives of every output element w.r.t. one element of the slot argument.

    Returns a tensor of the output's shape: at the scalar granularity, the weights of the edges
    leaving that element through this op and slot (zero where there is no edge).
    """
    x = call.arg(slot)
    tangent = torch.zeros_like(x).reshape(-1)
    tangent[flat_index] = 1
    _, out = torch.func.jvp(call.call_slot(slot), (x,), (tangent.reshape(x.shape),))
    return out


def _to_shape(semiring: Semiring, s: State, out_shape: torch.Size, shape: torch.Size) -> State:
    """⊕ a state of ``out_shape`` over the dims that ``shape`` was broadcast along."""
    if out_shape == shape:
        return s
    lead = len(out_shape) - len(shape)
    dims = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and out_shape[lead + i] != 1
    )
    s = semiring.within(s, dims)
    return tuple(t.reshape(shape) for t in s)


def _float_of(value: Any, dtype: torch.dtype) -> Tensor | float:
    return value.to(dtype) if isinstance(value, Tensor) else float(value)


def _closed_form_derivative(call: OpCall, slot: Slot) -> Tensor | float | None:
    """``∂out/∂arg`` elementwise for the frequent ops (a tensor broadcastable to the output, or
    a constant), or ``None`` to fall back to ``jvp``. Same formulas as autograd's."""
    name, pos, args, out = packet_name(call.target), slot[0], call.args, call.output
    if slot[1] is not None or call.index is not None:
        return None
    alpha = call.kwargs.get("alpha", 1)
    if name in ("addmm", "baddbmm"):  # the bias slot (the matrix slots are contractions)
        return float(call.kwargs.get("beta", 1))
    if name == "add":
        return 1.0 if pos == 0 else float(alpha)
    if name == "sub":
        return 1.0 if pos == 0 else -float(alpha)
    if name == "rsub":  # other - alpha * self (alpha is positional in this schema)
        alpha = args[2] if len(args) > 2 else alpha
        return -float(alpha) if pos == 0 else 1.0
    if name == "mul":
        return _float_of(args[1 - pos], out.dtype)
    if name == "div" and not call.kwargs.get("rounding_mode"):
        divisor = args[1]
        if pos == 0 and isinstance(divisor, Tensor):
            return 1.0 / divisor.to(out.dtype)
        if pos == 0:
            return 1.0 / float(divisor) if float(divisor) != 0 else None  # x/0: leave to jvp
        return -out / divisor
    if name == "neg":
        return -1.0
    if name in ("_to_copy", "to"):
        return 1.0 if out.is_floating_point() else None
    if name == "tanh":
        return 1 - out * out
    if name == "relu":
        return torch.sign(out)  # 0 or 1 (out >= 0); one pass, where a comparison is slow
    if name == "exp":
        return out
    if name == "log":
        return 1.0 / args[0]
    if name == "rsqrt":
        return -0.5 * out * out * out
    if name == "sqrt":
        return 0.5 / out
    if name == "reciprocal":
        return -out * out
    if name == "sigmoid":
        return out * (1 - out)
    if name == "pow" and pos == 0 and not isinstance(args[1], Tensor):
        n = float(args[1])
        if n == 2.0:
            return 2.0 * args[0]
        return n * args[0].pow(n - 1) if n != 0 else 0.0
    if name == "masked_fill" and pos == 0:
        return (~args[1]).to(out.dtype)
    if name == "gelu":
        x = args[0]
        approximate = call.kwargs.get("approximate", args[1] if len(args) > 1 else "none")
        return aten.gelu_backward(torch.ones_like(x), x, approximate=approximate)
    if name == "where" and pos in (1, 2):
        cond = args[0]
        return (cond if pos == 1 else ~cond).to(out.dtype)
    return None


def _elementwise(call: OpCall, slot: Slot, s: State, semiring: Semiring) -> State:
    x = call.arg(slot)
    d = _closed_form_derivative(call, slot)
    if d is None:
        _, d = torch.func.jvp(call.call_slot(slot), (x,), (torch.ones_like(x),))
    out_shape = call.output.shape if call.index is None else s[0].shape
    if not isinstance(d, Tensor):
        d = float(d)
        if d == 1.0:
            return _to_shape(semiring, s, out_shape, x.shape)
    return _to_shape(semiring, semiring.scale(d, s), out_shape, x.shape)


_RESHAPES = frozenset(
    {"view", "_unsafe_view", "reshape", "clone", "alias", "contiguous", "lift_fresh_copy",
     "unsqueeze", "squeeze", "flatten", "unflatten"}
)  # fmt: skip


def _written_into(
    semiring: Semiring,
    s: State,
    shape: torch.Size,
    like: Tensor,
    write: Callable[[Tensor, Tensor], Tensor],
) -> State:
    """An empty state of ``shape`` with ``s`` written in by ``write(empty_tensor, state_tensor)``
    (the inverse of an injective copy such as a slice)."""
    empty = semiring.zero(shape, like)
    return tuple(write(e, t) for e, t in zip(empty, s))


def _injective_copy(call: OpCall, slot: Slot, s: State, semiring: Semiring) -> State | None:
    """Slices, selects, cat and split pieces: each input element is copied at most once, so
    the input state is the output state written into an empty state; ``None`` for other ops."""
    name, x, args = packet_name(call.target), call.arg(slot), call.args
    like = s[0]
    if name == "slice" and call.index is None:
        dim = args[1] if len(args) > 1 else 0
        start = args[2] if len(args) > 2 else None
        end = args[3] if len(args) > 3 else None
        step = args[4] if len(args) > 4 else 1
        return _written_into(
            semiring, s, x.shape, like,
            lambda e, t: torch.slice_scatter(e, t, dim % x.dim(), start, end, step),
        )  # fmt: skip
    if name == "select" and call.index is None:
        dim, index = args[1] % x.dim(), args[2]
        return _written_into(
            semiring, s, x.shape, like, lambda e, t: e.select_scatter(t, dim, index)
        )
    if name == "cat" and call.index is None and slot[1] is not None:
        dim = args[1] if len(args) > 1 else 0
        parts = [t for t in args[0] if not (t.dim() == 1 and t.shape[0] == 0)]
        if len(parts) != len(args[0]) or x.dim() == 0:
            return None
        dim %= x.dim()
        offset = sum(int(t.shape[dim]) for t in args[0][: slot[1]])
        return tuple(t.narrow(dim, offset, x.shape[dim]) for t in s)
    if name in ("split", "split_with_sizes") and call.index is not None:
        dim = (args[2] if len(args) > 2 else 0) % x.dim()
        if name == "split":
            offset = call.index * int(args[1])
        else:
            offset = sum(int(n) for n in args[1][: call.index])
        size = s[0].shape[dim]
        return _written_into(
            semiring, s, x.shape, like,
            lambda e, t: torch.slice_scatter(e, t, dim, offset, offset + size),
        )  # fmt: skip
    if name == "unbind" and call.index is not None:
        dim = (args[1] if len(args) > 1 else 0) % x.dim()
        return _written_into(
            semiring, s, x.shape, like, lambda e, t: e.select_scatter(t, dim, call.index)
        )
    return None


def _structural(call: OpCall, slot: Slot, s: State, semiring: Semiring) -> State:
    x = call.arg(slot)
    name = packet_name(call.target)
    # fast paths: pure reshapes, transposes and broadcasts need no index map
    if name in _RESHAPES and call.index is None:
        return tuple(t.reshape(x.shape) for t in s)
    if name in ("t", "transpose", "permute") and call.index is None:
        if name == "permute":
            perm = [d % x.dim() for d in call.args[1]]
        else:
            perm = list(range(x.dim()))
            if x.dim() == 2 or name == "transpose":
                a, b = (0, 1) if name == "t" else (call.args[1] % x.dim(), call.args[2] % x.dim())
                perm[a], perm[b] = perm[b], perm[a]
        inverse = [perm.index(d) for d in range(x.dim())]
        return tuple(t.permute(inverse) for t in s)
    if name == "expand" and call.index is None:
        return _to_shape(semiring, s, call.output.shape, x.shape)
    copied = _injective_copy(call, slot, s, semiring)
    if copied is not None:
        return copied
    src_ids = torch.arange(x.numel(), device=x.device, dtype=torch.float64).reshape(x.shape)
    args = call.with_slot(
        slot, src_ids, others=lambda t: torch.full_like(t, -1, dtype=torch.float64)
    )
    out = call.target(*args, **call.kwargs)
    out = out[call.index] if call.index is not None else out
    index = out.reshape(-1).long()
    flat = semiring.scatter(tuple(t.reshape(-1) for t in s), index, x.numel())
    return tuple(t.reshape(x.shape) for t in flat)


def _reduction(call: OpCall, slot: Slot, s: State, semiring: Semiring) -> State:
    x = call.arg(slot)
    dims_arg = call.args[1] if len(call.args) > 1 else call.kwargs.get("dim")
    dims = list(range(x.dim())) if dims_arg is None or dims_arg == [] else list(dims_arg)
    dims = sorted(d % x.dim() for d in dims) if x.dim() else []
    keepdim = bool(call.args[2]) if len(call.args) > 2 else bool(call.kwargs.get("keepdim", False))
    states = []
    for t in s:
        if not keepdim:
            for d in dims:
                t = t.unsqueeze(d)
        states.append(t.expand(x.shape))
    if packet_name(call.target) != "mean":
        return tuple(states)
    return semiring.scale(1.0 / math.prod(x.shape[d] for d in dims), tuple(states))


def _contraction(
    call: OpCall, slot: Slot, s: State, semiring: Semiring, rows: Tensor | None = None
) -> State:
    name = packet_name(call.target)
    pos = slot[0]
    alpha = 1.0
    if name in ("addmm", "baddbmm"):
        if pos == 0:
            return _elementwise(call, slot, s, semiring)
        alpha = float(call.kwargs.get("alpha", 1))
        a, b = call.args[1], call.args[2]
        pos -= 1
    else:
        a, b = call.args[0], call.args[1]
    if rows is not None:  # only these rows i of C (dim -2) are reached: the rest is zero
        s = tuple(t.index_select(-2, rows) for t in s)
    if pos == 0:  # edge A[i,j] -> C[i,k] has weight B[j,k]: s [i,k] (x) B^T [k,j]
        w = b.mT
        part = semiring.matmul(s, w if alpha == 1.0 else alpha * w)
        if rows is None:
            return part
        empty = semiring.zero(a.shape, part[0])
        return tuple(e.index_copy(-2, rows, p) for e, p in zip(empty, part))
    # edge B[j,k] -> C[i,k] has weight A[i,j]: (s^T [k,i] (x) A [i,j])^T, over reached i only
    if rows is not None:
        a = a.index_select(-2, rows)
    out = semiring.matmul(tuple(t.mT for t in s), a if alpha == 1.0 else alpha * a)
    return tuple(t.mT for t in out)


_RULES: dict[OpKind, Callable[[OpCall, Slot, State, Semiring], State]] = {
    "elementwise": _elementwise,
    "structural": _structural,
    "reduction": _reduction,
    "contraction": _contraction,
}


def slot_vjp(
    call: OpCall, slot: Slot, s: State, semiring: Semiring, rows: Tensor | None = None
) -> State:
    """Semiring VJP of one op through one argument slot.

    Args:
        call: the op application (argument values, output value).
        slot: which argument receives the contribution.
        s: the output's state (tensors of the output's shape).
        semiring: the semiring to use.
        rows: for a contraction, the indices along dim -2 of the output outside which its
            state is known to be the semiring zero (no path reaches them): the matrix
            products then run on those rows only. ``None``: all rows.

    Returns:
        The contribution to the argument's state, tensors of the argument's shape.

    Raises:
        UnsupportedOpError: if the op (or that argument slot of it) has no rule.
    """
    kind = op_kind(call.target)
    if kind == "contraction":
        return _contraction(call, slot, s, semiring, rows)
    return _RULES[kind](call, slot, s, semiring)


#: ops whose rule reads no argument or output values, only shapes
_SHAPE_ONLY = frozenset(
    {"add", "sub", "rsub", "neg", "_to_copy", "to", "sum", "mean", "expand", "t", "transpose",
     "permute", "slice", "select", "cat", "split", "split_with_sizes", "unbind"} | _RESHAPES
)  # fmt: skip
#: elementwise ops whose derivative is a function of their output alone
_OUTPUT_ONLY = frozenset({"tanh", "relu", "exp", "rsqrt", "sqrt", "reciprocal", "sigmoid"})


def value_reads(target: Any, slots: list[int]) -> tuple[frozenset[int] | None, bool]:
    """Which values the rule of ``target`` reads when it runs for the argument positions
    ``slots``: ``(argument positions, whether the output value is read)``. Everything else is
    read for its shape, dtype and device only, so the walk may keep a stand-in of it (as
    autograd saves only what a backward formula needs). Conservative: an op without an entry
    here reads every argument (``None``) and its output."""
    name = packet_name(target)
    if name in _SHAPE_ONLY:
        return frozenset(), False
    if name in _OUTPUT_ONLY:
        return frozenset(), True
    if name == "mul":
        return frozenset(1 - p for p in slots if p in (0, 1)), False
    if name in ("mm", "bmm"):
        return frozenset(1 - p for p in slots), False
    if name in ("addmm", "baddbmm"):
        return frozenset(3 - p for p in slots if p in (1, 2)), False
    if name in ("where", "masked_fill"):
        return frozenset({0, 1, 2} - set(slots)), False
    return None, True
