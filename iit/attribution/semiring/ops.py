"""Per-op semiring VJP rules for ATen-level graphs (the op table of semiring backpropagation).

Every supported op falls in one of five kinds; each kind has one generic rule, written only in
terms of the :class:`~iit.attribution.semiring.semirings.Semiring` primitives:

* ``elementwise`` (with broadcasting): local derivatives come from ``torch.func.jvp`` with an
  all-ones tangent (each output element depends on exactly one element of the argument), then
  ⊕ over broadcast dims;
* ``structural`` (views, permutes, slices, cat, gather, ...): each output element copies one
  input element with weight 1; the copy map comes from running the op on ``arange``;
* ``reduction`` (sum, mean): weight 1 (or ``1/n``) from each input element to its output;
* ``contraction`` (mm, bmm, addmm, baddbmm): edge ``A[i,j] -> C[i,k]`` has weight ``B[j,k]``;
* ``dense`` (softmax, log_softmax, layer_norm): explicit per-row Jacobians ``[rows, d, d]``.

At the scalar granularity each (input element, output element) pair of one argument slot is
one edge whose weight is the partial derivative, so :func:`edge_weights` (a ``jvp`` with a
one-hot tangent) returns the exact out-edges of one element; path recovery uses it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from iit.attribution.semiring.kernels import DenseKind, dense_semiring_vjp
from iit.attribution.semiring.semirings import Semiring, State
from iit.errors import UnsupportedOpError

aten = torch.ops.aten

OpKind = Literal["elementwise", "structural", "reduction", "contraction", "dense"]
Slot = tuple[int, int | None]  # (argument position, index inside a list argument or None)

__all__ = ["OpCall", "OpKind", "Slot", "op_kind", "supported_op_names", "slot_vjp", "edge_weights"]

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
_DENSE = ["_softmax", "_safe_softmax", "_log_softmax", "native_layer_norm"]

_KIND: dict[str, OpKind] = {}
for _names, _kind in (
    (_ELEMENTWISE, "elementwise"),
    (_STRUCTURAL, "structural"),
    (_REDUCTION, "reduction"),
    (_CONTRACTION, "contraction"),
    (_DENSE, "dense"),
):
    for _n in _names:
        _KIND[_n] = _kind  # type: ignore[assignment]

#: ops that stop gradients: their outputs do not depend on the sources.
NO_GRAD_OPS = frozenset({"detach", "argmax", "argmin", "eq", "ne", "lt", "le", "gt", "ge"})


def supported_op_names() -> list[str]:
    """Names (ATen overload packets, e.g. ``"addmm"``) of every op with a semiring rule."""
    return sorted(_KIND)


def packet_name(target: Any) -> str:
    """The ATen overload-packet name of an FX node target (``aten.addmm.default -> "addmm"``)."""
    packet = getattr(target, "overloadpacket", None)
    if packet is not None:
        return str(packet.__name__)
    return getattr(target, "__name__", str(target))


def op_kind(target: Any, where: str = "") -> OpKind:
    """Return the kind of an ATen op target.

    Raises:
        UnsupportedOpError: if the op has no rule; names the op and the nearest supported ops.
    """
    name = packet_name(target)
    if name in _KIND:
        return _KIND[name]
    close = difflib.get_close_matches(name, list(_KIND), n=4)
    hint = f"; nearest supported ops: {close}" if close else ""
    raise UnsupportedOpError(
        f"op {target} ({name}){where} has no semiring backward rule{hint}; supported ops: "
        f"{supported_op_names()}"
    )


@dataclass
class OpCall:
    """One traced op application: ``target(*args, **kwargs)``, then ``[index]`` for getitem."""

    name: str
    target: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    index: int | None
    output: Tensor

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
    lead = len(out_shape) - len(shape)
    dims = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and out_shape[lead + i] != 1
    )
    s = semiring.within(s, dims)
    return tuple(t.reshape(shape) for t in s)


def _closed_form_derivative(call: OpCall, slot: Slot) -> Tensor | float | None:
    """``∂out/∂arg`` elementwise for the most frequent ops (a tensor broadcastable to the
    output, or a constant), or ``None`` to fall back to ``jvp``. Same formulas as autograd."""
    name, pos, args = packet_name(call.target), slot[0], call.args
    if slot[1] is not None or call.index is not None:
        return None
    alpha = call.kwargs.get("alpha", 1)
    if name == "add":
        return 1.0 if pos == 0 else alpha
    if name == "sub":
        return 1.0 if pos == 0 else -alpha
    if name == "mul":
        other = args[1 - pos]
        return other.to(call.output.dtype) if isinstance(other, Tensor) else float(other)
    if name == "div" and not call.kwargs.get("rounding_mode"):
        divisor = args[1]
        if pos == 0 and isinstance(divisor, Tensor):
            return 1.0 / divisor.to(call.output.dtype)
        if pos == 0:
            return 1.0 / float(divisor) if float(divisor) != 0 else None  # x/0: leave to jvp
        return -call.output / divisor
    if name == "neg":
        return -1.0
    if name in ("_to_copy", "to") and call.output.is_floating_point():
        return 1.0
    if name == "tanh":
        return 1 - call.output * call.output
    if name == "relu":
        return (call.output > 0).to(call.output.dtype)
    if name == "gelu":
        x = args[0]
        approximate = call.kwargs.get("approximate", args[1] if len(args) > 1 else "none")
        return aten.gelu_backward(torch.ones_like(x), x, approximate=approximate)
    if name == "where" and pos in (1, 2):
        cond = args[0]
        return (cond if pos == 1 else ~cond).to(call.output.dtype)
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
        d = torch.tensor(d, dtype=s[0].dtype, device=s[0].device)
    return _to_shape(semiring, semiring.scale(d, s), out_shape, x.shape)


_RESHAPES = frozenset(
    {"view", "_unsafe_view", "reshape", "clone", "alias", "contiguous", "lift_fresh_copy",
     "unsqueeze", "squeeze", "flatten", "unflatten"}
)  # fmt: skip


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
    n = 1
    for d in dims:
        n *= x.shape[d]
    weight = 1.0 / n if packet_name(call.target) == "mean" else 1.0
    return semiring.scale(torch.full_like(x, weight), tuple(states))


def _contraction(call: OpCall, slot: Slot, s: State, semiring: Semiring) -> State:
    name = packet_name(call.target)
    pos = slot[0]
    if name in ("addmm", "baddbmm"):
        if pos == 0:
            return _elementwise(call, slot, s, semiring)
        alpha = call.kwargs.get("alpha", 1)
        a, b = call.args[1], call.args[2]
        pos -= 1
    else:
        alpha = 1
        a, b = call.args[0], call.args[1]
    p = "b" if a.dim() == 3 else ""
    if pos == 0:  # edge A[i,j] -> C[i,k] has weight B[j,k]
        return semiring.contract(alpha * b, s, p + "jk", p + "ik", p + "ij")
    return semiring.contract(alpha * a, s, p + "ij", p + "ik", p + "jk")


def _dense_inputs(call: OpCall) -> tuple[DenseKind, tuple[Tensor, ...], int]:
    """Which per-row Jacobian, its inputs (rows first) and the trailing dims it spans."""
    name = packet_name(call.target)
    if name in ("_softmax", "_safe_softmax", "_log_softmax"):
        x, dim = call.args[0], call.args[1] % call.args[0].dim()
        if dim != x.dim() - 1:
            raise UnsupportedOpError(
                f"{call.name}: softmax over dim {dim} of a {x.dim()}-d tensor; only the last "
                "dim is supported (softmax(..., dim=-1))"
            )
        sm = call.output if name != "_log_softmax" else call.output.exp()
        kind: DenseKind = "log_softmax" if name == "_log_softmax" else "softmax"
        return kind, (sm.reshape(-1, x.shape[-1]),), 1
    x, normalized_shape, weight = call.args[0], call.args[1], call.args[2]
    d = 1
    for n in normalized_shape:
        d *= n
    xs = x.reshape(-1, d)
    mean = xs.mean(-1, keepdim=True)
    rstd = torch.rsqrt(xs.var(-1, unbiased=False, keepdim=True) + call.args[4])
    gamma = weight.reshape(d) if weight is not None else xs.new_ones(1)
    return "layer_norm", ((xs - mean) * rstd, rstd, gamma), len(normalized_shape)


def _dense(call: OpCall, slot: Slot, s: State, semiring: Semiring) -> State:
    if slot != (0, None) or (packet_name(call.target) == "native_layer_norm" and call.index != 0):
        raise UnsupportedOpError(
            f"{call.name}: only the input slot of softmax/layer_norm (output 0) is supported; "
            f"got argument slot {slot} (a learnable parameter that depends on the sources?)"
        )
    x = call.arg(slot)
    kind, tensors, _ = _dense_inputs(call)
    rows = tensors[0].shape[0]
    flat = tuple(t.reshape(rows, -1) for t in s)
    out = dense_semiring_vjp(semiring.name, kind, tensors, flat, compiled=semiring.compiled)
    return tuple(t.reshape(x.shape) for t in out)


_RULES: dict[OpKind, Callable[[OpCall, Slot, State, Semiring], State]] = {
    "elementwise": _elementwise,
    "structural": _structural,
    "reduction": _reduction,
    "contraction": _contraction,
    "dense": _dense,
}


def slot_vjp(call: OpCall, slot: Slot, s: State, semiring: Semiring) -> State:
    """Semiring VJP of one op through one argument slot.

    Args:
        call: the op application (argument values, output value).
        slot: which argument receives the contribution.
        s: the output's state (tensors of the output's shape).
        semiring: the semiring to use.

    Returns:
        The contribution to the argument's state, tensors of the argument's shape.

    Raises:
        UnsupportedOpError: if the op (or that argument slot of it) has no rule.
    """
    return _RULES[call.kind](call, slot, s, semiring)
