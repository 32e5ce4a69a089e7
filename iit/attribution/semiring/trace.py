"""Trace a model and a target to an ATen-level FX graph, run it, and record what the reverse
walk needs: node values, which nodes depend on the sources, and which module made each node.

Sources are either floating-point model inputs (keys of ``inputs``) or outputs of named
submodules (names from ``model.named_modules()``): a forward hook swaps the module's output for
an extra graph input while tracing, so the gradient graph starts there (for a Hugging Face
model, ``"embeddings.word_embeddings"`` makes the input embeddings the sources). All hooks are
removed in ``finally``.
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx import GraphModule, Interpreter, Node
from torch.fx.experimental.proxy_tensor import get_proxy_mode, make_fx

from iit.attribution.semiring.decompositions import DECOMPOSITIONS
from iit.attribution.semiring.ops import NO_GRAD_OPS, OpCall, Slot, op_kind, packet_name
from iit.attribution.targets import Target, target_scores
from iit.errors import CoordinateError, HookFiringError, TargetError, UnsupportedOpError

__all__ = ["TracedComputation", "trace_computation"]

_getitem = operator.getitem
aten = torch.ops.aten


@dataclass
class TracedComputation:
    """A traced, executed computation ``y = Σ_rows target(model(inputs))``.

    Attributes:
        graph_module: the ATen-level graph.
        env: value of every node (tensors, or tuples for multi-output ops).
        sources: source name -> placeholder node.
        root: the scalar node ``y``.
        live: nodes that depend on a source and feed ``y`` (the gradient graph).
        modules: node -> qualified name of the innermost module that created it ("" = top).
        slots: for each live call node, its argument slots holding live nodes.
    """

    graph_module: GraphModule
    env: dict[Node, Any]
    sources: dict[str, Node]
    root: Node
    live: set[Node]
    modules: dict[Node, str]
    slots: dict[Node, list[tuple[Slot, Node]]] = field(default_factory=dict)

    def call(self, node: Node) -> OpCall:
        """The op application of a call node (a getitem resolves to its multi-output parent)."""
        index = None
        target_node = node
        if node.target is _getitem:
            target_node, index = node.args[0], node.args[1]  # type: ignore[assignment]
        resolve = lambda a: self.env[a] if isinstance(a, Node) else a  # noqa: E731
        args = tuple(
            type(a)(resolve(b) for b in a) if isinstance(a, (list, tuple)) else resolve(a)
            for a in target_node.args
        )
        kwargs = {k: resolve(v) for k, v in target_node.kwargs.items()}
        name = str(target_node.target) + (f"[{index}]" if index is not None else "")
        return OpCall(name, target_node.target, args, kwargs, index, self.env[node])


def _node_slots(node: Node) -> list[tuple[Slot, Node]]:
    """Argument slots of a node's (effective) op that hold graph nodes."""
    target_node = node.args[0] if node.target is _getitem else node
    out: list[tuple[Slot, Node]] = []
    for i, a in enumerate(target_node.args):  # type: ignore[union-attr]
        if isinstance(a, Node):
            out.append(((i, None), a))
        elif isinstance(a, (list, tuple)):
            out.extend(((i, j), b) for j, b in enumerate(a) if isinstance(b, Node))
    return out


def _is_float_tensor(v: Any) -> bool:
    return isinstance(v, Tensor) and v.is_floating_point()


def _resolve_module(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        close = difflib.get_close_matches(name, list(modules), n=4)
        raise CoordinateError(
            f"source {name!r} is neither an input key nor a module of {type(model).__name__}"
            + (f"; nearest module names: {close}" if close else "")
        )
    return modules[name]


def trace_computation(
    model: nn.Module,
    inputs: Tensor | Mapping[str, Tensor],
    target: Target,
    sources: Sequence[str],
) -> TracedComputation:
    """Trace ``Σ_rows target(model(**inputs))`` to ATen ops and run it storing every value.

    Args:
        model: any ``nn.Module`` (use ``eval()`` so dropout is off; HF models need
            ``attn_implementation="eager"``).
        inputs: one tensor (called ``model(x)``, source name ``"input"``) or keyword inputs
            of ``model`` (``model(**inputs)``).
        target: see :mod:`iit.attribution.targets`. Rows must not interact (eval mode).
        sources: names of floating-point inputs or of modules; empty = all float inputs.

    Returns:
        The traced computation.

    Raises:
        CoordinateError: a source is neither an input key nor a module name.
        HookFiringError: a source module ran more or less than once.
        UnsupportedOpError: the gradient graph contains an op without a rule.
        TargetError: the target does not depend on any source.
    """
    positional = isinstance(inputs, Tensor)
    if positional:
        inputs = {"input": inputs}
    keys = list(inputs)

    def call_model(values: Sequence[Tensor]) -> Any:
        return model(*values) if positional else model(**dict(zip(keys, values)))

    for k, v in inputs.items():
        if not isinstance(v, Tensor):
            raise TypeError(f"input {k!r} must be a Tensor, got {type(v).__name__}")
    names = list(sources) or [k for k in keys if inputs[k].is_floating_point()]
    if not names:
        raise ValueError("no source: pass sources=(input key or module name, ...) or a float input")
    module_sources = [n for n in names if n not in inputs]
    for n in names:
        if n in inputs and not inputs[n].is_floating_point():
            raise ValueError(
                f"input {n!r} has dtype {inputs[n].dtype}; sources must be floating point "
                "(for token ids use the embedding module's name as the source)"
            )
    mods = {n: _resolve_module(model, n) for n in module_sources}

    captured: dict[str, list[Tensor]] = {n: [] for n in module_sources}
    handles = []
    try:
        for n, m in mods.items():
            handles.append(
                m.register_forward_hook(lambda _m, _a, out, n=n: captured[n].append(out))
            )
        with torch.no_grad():
            call_model([inputs[k] for k in keys])
    finally:
        for h in handles:
            h.remove()
    for n, outs in captured.items():
        if len(outs) != 1 or not _is_float_tensor(outs[0]):
            raise HookFiringError(
                f"source module {n!r} must run exactly once and return a float tensor; it ran "
                f"{len(outs)} times"
            )
    flat = [inputs[k] for k in keys] + [captured[n][0].detach() for n in module_sources]
    replacement: dict[str, Tensor] = {}

    def fn(*args: Tensor) -> Tensor:
        replacement.update(zip(module_sources, args[len(keys) :]))
        out = call_model(args[: len(keys)])
        return target_scores(out, target).sum()

    starts: list[int] = []
    owner: dict[Node, str] = {}

    def pre(_m: nn.Module, _a: Any) -> None:
        starts.append(len(get_proxy_mode().tracer.graph.nodes))

    def post_factory(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def post(_m: nn.Module, _a: Any, _out: Any) -> None:
            nodes = list(get_proxy_mode().tracer.graph.nodes)[starts.pop() :]
            for node in nodes:
                owner.setdefault(node, name)

        return post

    handles = []
    try:
        for name, m in model.named_modules():
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post_factory(name)))
        for n, m in mods.items():
            handles.append(m.register_forward_hook(lambda _m, _a, _o, n=n: replacement[n]))
        with torch.no_grad():
            tracer = make_fx(
                fn, decomposition_table=DECOMPOSITIONS, _error_on_data_dependent_ops=False
            )
            gm = tracer(*flat)
    finally:
        for h in handles:
            h.remove()
    gm.graph.eliminate_dead_code()
    gm.recompile()

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    source_nodes = {k: placeholders[i] for i, k in enumerate(keys) if k in names}
    source_nodes.update({n: placeholders[len(keys) + i] for i, n in enumerate(module_sources)})
    interp = Interpreter(gm, garbage_collect_values=False)
    with torch.no_grad():
        interp.run(*flat)
    env = dict(interp.env)
    root = next(n for n in gm.graph.nodes if n.op == "output").args[0]

    dependent: set[Node] = set(source_nodes.values())
    slots: dict[Node, list[tuple[Slot, Node]]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        s = [(slot, a) for slot, a in _node_slots(node) if a in dependent]
        value = env[node]
        is_float = _is_float_tensor(value) or isinstance(value, (tuple, list))
        if s and is_float and packet_name(node.target) not in NO_GRAD_OPS:
            dependent.add(node)
            slots[node] = s
    if root not in dependent:
        raise TargetError(
            f"the target does not depend on the sources {names}; pick sources upstream of it"
        )
    live: set[Node] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node in live:
            continue
        live.add(node)
        stack.extend(a for _, a in slots.get(node, []) if a not in live)
    modules = {n: owner.get(n, "") for n in gm.graph.nodes}
    for node in live:
        if node.op != "call_function":
            continue
        target_node = node.args[0] if node.target is _getitem else node
        if node.target is not _getitem and isinstance(env[node], (tuple, list)):
            continue  # multi-output op: handled at its getitem users
        where = f" in module {modules[node]!r}" if modules[node] else ""
        op_kind(target_node.target, where)  # raises UnsupportedOpError
        if node.target is _getitem and packet_name(target_node.target) == "native_layer_norm":
            if node.args[1] != 0:
                raise UnsupportedOpError(f"native_layer_norm output {node.args[1]} has no rule")
    return TracedComputation(gm, env, source_nodes, root, live, modules, slots)
