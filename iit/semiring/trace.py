"""Record a model and a target as an ATen-level FX graph in one forward run, storing what the
reverse walk needs: node values, which nodes depend on the sources, and which module made each.

The model runs once under a `TorchDispatchMode` that
appends every ATen op it executes to a `torch.fx.Graph` (tensor arguments become the
nodes that produced them) and keeps the op's actual output as the node's value: no separate
tracing run and no re-execution. Ops in `DECOMPOSITIONS` are replaced
by their decomposition, whose own ops are recorded in turn.

Sources are either floating-point model inputs (keys of ``inputs``) or outputs of named
submodules (names from ``model.named_modules()``): a forward hook swaps the module's output for
an alias that becomes a graph input, so the gradient graph starts there (for a Hugging Face
model, ``"embeddings.word_embeddings"`` makes the input embeddings the sources). Tensors that no
recorded op produced (parameters, buffers, constants) become ``get_attr`` nodes.

In-place ops are recorded as nodes. Before an op writes to a tensor, every stored value that
shares its storage is replaced by a copy, so a stored value always is the value its node had
when it was recorded. Reading a tensor again through another view after such a write (the
written data reach it outside the graph) is allowed only where nothing depending on the
sources flows that way into the target; otherwise `UnsupportedOpError`.
All hooks and the mode are removed in ``finally``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx import Graph, GraphModule, Node
from torch.utils._python_dispatch import TorchDispatchMode

from iit.attribution.targets import Target, target_scores
from iit.errors import (
    ArgumentError,
    ArgumentTypeError,
    CoordinateError,
    HookFiringError,
    TargetError,
    UnsupportedOpError,
    did_you_mean,
)
from iit.semiring.decompositions import DECOMPOSITIONS
from iit.semiring.ops import NO_GRAD_OPS, OpCall, Slot, op_kind, packet_name

try:  # generates the graph module's code only if someone asks for it
    from torch.fx._lazy_graph_module import _LazyGraphModule as _GraphModuleClass
except ImportError:  # pragma: no cover - older or newer torch without it
    _GraphModuleClass = GraphModule

__all__ = ["TracedComputation", "trace_computation"]

_getitem = operator.getitem
aten = torch.ops.aten


@dataclass
class TracedComputation:
    """A traced, executed computation ``y = Σ_rows target(model(inputs))``.

    Attributes:
        graph_module: the ATen-level graph (``graph_module.graph``; nodes the root does not
            depend on may be present).
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
        env = self.env
        args = tuple(
            env[a]
            if isinstance(a, Node)
            else type(a)(env[b] if isinstance(b, Node) else b for b in a)
            if isinstance(a, (list, tuple))
            else a
            for a in target_node.args
        )
        kwargs = (
            {k: env[v] if isinstance(v, Node) else v for k, v in target_node.kwargs.items()}
            if target_node.kwargs
            else {}
        )
        return OpCall(target_node.target, args, kwargs, index, env[node])


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


def _resolve_module(modules: Mapping[str, nn.Module], name: str) -> nn.Module:
    """``modules[name]``; raises `CoordinateError` naming the nearest module names."""
    if name not in modules:
        raise CoordinateError(
            f"source {name!r} is neither an input key nor a module of "
            f"{type(modules['']).__name__}{did_you_mean(name, modules, n=4)}"
        )
    return modules[name]


# --------------------------------------------------------------------------- recording


_WrittenArg = tuple[int, str]  # (position, name) of an argument an op writes to
_NEVER_DECOMPOSED = frozenset({aten.size.default, aten.stride.default, aten.storage_offset.default})


@dataclass(frozen=True)
class _OpInfo:
    """What the recorder needs to know about an op overload (computed once per overload).

    Attributes:
        name: node name base (the overload packet, as make_fx names nodes).
        written: the arguments the op writes to (in-place and ``out=`` ops).
        composite: the op has a ``CompositeImplicitAutograd`` kernel: below autograd (where
            the mode runs) it must be decomposed explicitly, as autograd would have done.
    """

    name: str
    written: tuple[_WrittenArg, ...]
    composite: bool


# keyed by id: op overloads live as long as the process, and hashing one runs Python code
_OP_INFO: dict[int, tuple[Any, _OpInfo]] = {}
_BACKEND_KERNEL: dict[tuple[Any, str], bool] = {}


def _op_info(func: Any) -> _OpInfo:
    entry = _OP_INFO.get(id(func))
    if entry is not None and entry[0] is func:
        return entry[1]
    written = tuple(
        (i, a.name)
        for i, a in enumerate(func._schema.arguments)
        if a.alias_info is not None and a.alias_info.is_write
    )
    composite = func not in _NEVER_DECOMPOSED and torch._C._dispatch_has_kernel_for_dispatch_key(
        func.name(), "CompositeImplicitAutograd"
    )
    info = _OpInfo(func.overloadpacket.__name__, written, composite)
    _OP_INFO[id(func)] = (func, info)
    return info


def _autograd_would_decompose(func: Any, args: tuple[Any, ...]) -> bool:
    """Autograd runs an op's composite kernel unless the device of its first tensor argument
    has a kernel of its own."""
    device = next(
        (
            t.device.type
            for a in args
            for t in (a if isinstance(a, (list, tuple)) else (a,))
            if isinstance(t, Tensor)
        ),
        "cpu",
    )
    has_kernel = _BACKEND_KERNEL.get((func, device))
    if has_kernel is None:
        key = torch._C._dispatch_key_for_device(device)
        has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), key)
        _BACKEND_KERNEL[(func, device)] = has_kernel
    return not has_kernel


def _storage_key(t: Tensor) -> int:
    """Identifies the memory a tensor lives in (shared by all its views)."""
    try:
        key = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # no plain storage (sparse, ...)
        return id(t)
    return key if key else id(t)  # empty tensors: nothing to share


@dataclass
class _Read:
    """A tensor read again after an in-place write reached it outside its recorded node."""

    constant: Node  # the get_attr node that stands for the tensor from then on
    stale: Node  # the node it had been recorded as
    storage: int
    reader: str  # op and module of the read


class _Recorder(TorchDispatchMode):
    """Appends every ATen op run under it to ``graph``, keeping the outputs in ``env``.

    ``owner`` is the stack of running modules (pushed and popped by hooks); ``paused`` lets a
    hook run an op without recording it. Writes are tracked per storage only once the first
    in-place op ran, so that models without one pay nothing for it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.graph = Graph()
        self.env: dict[Node, Any] = {}
        self.modules: dict[Node, str] = {}
        self.owner: list[str] = [""]
        self.paused = False
        self.stale_reads: list[_Read] = []
        self.writes: list[tuple[Node, int]] = []  # (in-place op node, storage it wrote)
        # id(tensor) -> (tensor, node); holding the tensor keeps its id from being reused
        self._known: dict[int, tuple[Tensor, Node]] = {}
        self._constants = 0
        # the table as it is now, keyed by id (hashing an op overload runs Python code)
        self._decompositions = {id(op): fn for op, fn in DECOMPOSITIONS.items()}
        # from the first in-place op on: writes so far per storage, the write count of each
        # node's storage when it was recorded, and the nodes whose stored value is in a storage
        self._write_count: dict[int, int] | None = None
        self._generation: dict[Node, int] = {}
        self._aliases: dict[int, list[Node]] = {}

    # ---- graph inputs and outputs
    def placeholder(self, name: str) -> Node:
        """A graph input (its value is bound later by `bind`)."""
        node = self.graph.create_node("placeholder", name, name=re.sub(r"\W", "_", name))
        self.modules[node] = ""
        return node

    def bind(self, node: Node, value: Tensor) -> None:
        """Make ``value`` the value of ``node`` (a placeholder) and the node of ``value``."""
        self._record(node, value)
        self.modules[node] = ""

    def node_of(self, t: Tensor) -> Node:
        """The node of a tensor (a new ``get_attr`` node if no recorded op produced it)."""
        return self._arg(t, "the target")

    # ---- recording
    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        if kwargs is None:
            kwargs = {}
        if self.paused:
            return func(*args, **kwargs)
        decomposition = self._decompositions.get(id(func))
        if decomposition is not None:
            with self:  # record the ops the decomposition runs
                out = decomposition(*args, **kwargs)
            if out is not NotImplemented:
                return out
        info = _op_info(func)
        if info.composite and _autograd_would_decompose(func, args):
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        node_args = tuple([self._arg(a, func) for a in args])
        node_kwargs = {k: self._arg(v, func) for k, v in kwargs.items()} if kwargs else None
        if info.written:
            written = self._before_write(args, kwargs, info.written)
            out = func(*args, **kwargs)
            node = self._call_node(func, node_args, node_kwargs, info.name)
            self.writes.extend((node, key) for key in written)
        else:
            out = func(*args, **kwargs)
            node = self._call_node(func, node_args, node_kwargs, info.name)
        self._bind_output(node, out)
        return out

    def _call_node(
        self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None, name: str
    ) -> Node:
        # arguments are set after creation: same node, without create_node's scan of the
        # arguments for symbolic sizes (which real tensors never have)
        node = self.graph.create_node("call_function", target, name=name)
        if args:
            node.args = args
        if kwargs:
            node.kwargs = kwargs
        return node

    def _arg(self, a: Any, reader: Any) -> Any:
        """An op argument with tensors replaced by their nodes (lists: one level, as ATen)."""
        if isinstance(a, Tensor):
            entry = self._known.get(id(a))
            if entry is None:
                return self._constant(a)
            node = entry[1]
            if self._write_count is not None and self._generation.get(
                node, 0
            ) != self._write_count.get(_storage_key(a), 0):
                return self._stale_read(a, node, reader)
            return node
        if type(a) is list or type(a) is tuple:
            for b in a:
                if isinstance(b, Tensor):
                    return type(a)([self._arg(c, reader) for c in a])
        return a

    def _record(self, node: Node, t: Tensor) -> None:
        self.env[node] = t
        self.modules[node] = self.owner[-1]
        self._known[id(t)] = (t, node)
        if self._write_count is not None:
            key = _storage_key(t)
            self._aliases.setdefault(key, []).append(node)
            self._generation[node] = self._write_count.get(key, 0)

    def _bind_output(self, node: Node, out: Any) -> None:
        if isinstance(out, Tensor):
            self._record(node, out)
            return
        self.env[node] = out
        self.modules[node] = self.owner[-1]
        if isinstance(out, (tuple, list)):
            for i, t in enumerate(out):
                if isinstance(t, Tensor):
                    self._record(self._call_node(_getitem, (node, i), None, "getitem"), t)

    def _constant(self, t: Tensor, base: str = "") -> Node:
        """A ``get_attr`` node for a tensor no recorded op produced."""
        base = base or ("_param_constant" if isinstance(t, nn.Parameter) else "_tensor_constant")
        target = f"{base}{self._constants}"
        self._constants += 1
        node = self.graph.create_node("get_attr", target, name=target)
        self._record(node, t)
        return node

    # ---- in-place writes
    def _before_write(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], written: tuple[_WrittenArg, ...]
    ) -> list[int]:
        """Copy every stored value sharing memory with a tensor the op will write; returns
        the storages written."""
        if self._write_count is None:
            self._write_count = {}
            for node, value in self.env.items():
                if isinstance(value, Tensor):
                    self._aliases.setdefault(_storage_key(value), []).append(node)
        keys = []
        for pos, name in written:
            value = args[pos] if pos < len(args) else kwargs.get(name)
            for t in value if isinstance(value, (list, tuple)) else (value,):
                if isinstance(t, Tensor):
                    key = _storage_key(t)
                    keys.append(key)
                    self._write_count[key] = self._write_count.get(key, 0) + 1
                    for node in self._aliases.pop(key, ()):
                        self._snapshot(node)
        return keys

    def _snapshot(self, node: Node) -> None:
        value = self.env.get(node)
        if not isinstance(value, Tensor):
            return
        copy = value.clone()  # inside __torch_dispatch__: not recorded
        self.env[node] = copy
        if node.target is _getitem:  # keep the multi-output parent's tuple consistent
            parent, index = node.args
            items = list(self.env[parent])  # type: ignore[index]
            items[index] = copy  # type: ignore[index]
            self.env[parent] = type(self.env[parent])(items)  # type: ignore[index]

    def _stale_read(self, t: Tensor, node: Node, reader: Any) -> Node:
        """``t`` was written in place since it was recorded as ``node``, and not through an op
        whose output stands for it: from now on it stands for itself, as a constant;
        `_check_stale_reads` decides whether that is exact."""
        constant = self._constant(t, base="_written")
        where = f" in module {self.owner[-1]!r}" if self.owner[-1] else ""
        self.stale_reads.append(_Read(constant, node, _storage_key(t), f"{reader}{where}"))
        return constant


class _RecordedModule(_GraphModuleClass):  # type: ignore[misc, valid-type]
    """The recorded graph as a graph module; ``get_attr`` targets resolve to the recorded
    constants (set as a dict, not as registered attributes, which costs far more)."""

    def __init__(self, graph: Graph, constants: dict[str, Tensor]) -> None:
        super().__init__(nn.Module(), Graph())
        self._recorded_constants = constants
        self.graph = graph

    def __getattr__(self, name: str) -> Any:
        constants = self.__dict__.get("_recorded_constants")
        if constants is not None and name in constants:
            return constants[name]
        return super().__getattr__(name)


# --------------------------------------------------------------------------- hooks


def _install_hooks(
    named: Mapping[str, nn.Module],
    recorder: _Recorder,
    mods: Mapping[str, nn.Module],
    placeholders: Mapping[str, Node],
    calls: dict[str, int],
    handles: list[Any],
    elements: Mapping[str, int | None],
) -> None:
    """Hooks that track the running module and cut off the source modules' outputs; their
    handles are appended to ``handles`` as they are made (the caller removes them)."""
    owner = recorder.owner

    def pop(_m: nn.Module, _a: Any, _o: Any) -> None:
        owner.pop()

    for name, m in named.items():
        handles.append(m.register_forward_pre_hook(lambda _m, _a, name=name: owner.append(name)))
        handles.append(m.register_forward_hook(pop, always_call=True))
    for name, m in mods.items():
        hook = _source_hook(recorder, name, placeholders, calls, elements.get(name))
        handles.append(m.register_forward_hook(hook))


def _source_hook(
    recorder: _Recorder,
    name: str,
    placeholders: Mapping[str, Node],
    calls: dict[str, int],
    element: int | None = None,
) -> Callable[[nn.Module, Any, Any], Any]:
    """Forward hook: the module's output (element ``element`` of a tuple output) is replaced
    by an alias bound to the source's placeholder, so the graph continues from there and not
    from the module's ops."""

    def hook(_m: nn.Module, _a: Any, out: Any) -> Any:
        calls[name] += 1
        if element is None:
            value = out
        elif isinstance(out, tuple) and 0 <= element < len(out):
            value = out[element]
        else:
            value = None
        if calls[name] > 1 or not _is_float_tensor(value):
            return None
        recorder.paused = True
        try:
            alias = value.detach()
        finally:
            recorder.paused = False
        recorder.bind(placeholders[name], alias)
        return alias if element is None else (*out[:element], alias, *out[element + 1 :])

    return hook


# --------------------------------------------------------------------------- analysis


def _dependent_slots(
    graph: Graph, env: Mapping[Node, Any], sources: set[Node]
) -> tuple[set[Node], dict[Node, list[tuple[Slot, Node]]]]:
    """Nodes whose value depends on a source, and their slots holding such nodes.

    A call node depends on a source if one of its op's positional arguments does, its value is
    a float tensor (or a tuple: multi-output op) and its op passes gradients."""
    dependent: set[Node] = set(sources)
    slots: dict[Node, list[tuple[Slot, Node]]] = {}
    stops: dict[int, bool] = {}  # id(target) -> in NO_GRAD_OPS
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        op_node = node.args[0] if node.target is _getitem else node
        if dependent.isdisjoint(op_node.all_input_nodes):  # type: ignore[union-attr]
            continue
        s = [(slot, a) for slot, a in _node_slots(node) if a in dependent]
        value = env[node]
        if not s or not (
            (isinstance(value, Tensor) and value.is_floating_point())
            or isinstance(value, (tuple, list))
        ):
            continue
        stop = stops.get(id(node.target))
        if stop is None:
            stop = stops[id(node.target)] = packet_name(node.target) in NO_GRAD_OPS
        if not stop:
            dependent.add(node)
            slots[node] = s
    return dependent, slots


def _live_nodes(root: Node, slots: Mapping[Node, list[tuple[Slot, Node]]]) -> set[Node]:
    live: set[Node] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node in live:
            continue
        live.add(node)
        stack.extend(a for _, a in slots.get(node, []) if a not in live)
    return live


def _upstream(graph: Graph, root: Node) -> set[Node]:
    """Every node ``root`` reads, directly or not."""
    needed = {root}
    for node in reversed(graph.nodes):
        if node in needed:
            needed.update(node.all_input_nodes)
    return needed


def _where(node: Node, modules: Mapping[Node, str]) -> str:
    return f" in module {modules[node]!r}" if modules.get(node) else ""


def _check_stale_reads(
    recorder: _Recorder, root: Node, dependent: set[Node], modules: Mapping[Node, str]
) -> None:
    """Raise if source-dependent data reach the target through an in-place write into a view.

    Raises:
        UnsupportedOpError: names the stale node, the writing op and the reading op.
    """
    if not recorder.stale_reads:
        return
    upstream = _upstream(recorder.graph, root)
    for read in recorder.stale_reads:
        if read.constant not in upstream:
            continue
        writers = [n for n, key in recorder.writes if key == read.storage]
        culprits = [n for n in writers if n in dependent]
        if read.stale not in dependent and not culprits:
            continue  # nothing that depends on the sources: a constant is exact
        writer = (culprits or writers or [None])[0]
        wrote = "an in-place op" if writer is None else f"{writer.target}{_where(writer, modules)}"
        raise UnsupportedOpError(
            f"{read.stale.name} ({read.stale.target}{_where(read.stale, modules)}) was modified "
            f"in place by {wrote} and read again through another view by {read.reader}; "
            "semiring backpropagation cannot follow in-place writes into views of tensors that "
            "depend on the sources: write that part out of place (e.g. torch.where or torch.cat "
            "instead of "
            "x[...] = v)"
        )


def _check_rules(live: set[Node], env: Mapping[Node, Any], modules: Mapping[Node, str]) -> None:
    """Raise `UnsupportedOpError` for a live op without a semiring rule."""
    for node in live:
        if node.op != "call_function":
            continue
        target_node = node.args[0] if node.target is _getitem else node
        if node.target is not _getitem and isinstance(env[node], (tuple, list)):
            continue  # multi-output op: handled at its getitem users
        op_kind(target_node.target, _where(node, modules))  # type: ignore[union-attr]  # raises


# --------------------------------------------------------------------------- entry point


def _check_sources(
    named: Mapping[str, nn.Module], inputs: Mapping[str, Tensor], sources: Sequence[str]
) -> tuple[list[str], dict[str, nn.Module]]:
    """Source names (default: the float inputs) and the modules of module sources.

    Raises:
        ArgumentTypeError: an input is not a tensor.
        ArgumentError: no source, or an input source is not floating point.
        CoordinateError: a source is neither an input key nor a module name.
    """
    for k, v in inputs.items():
        if not isinstance(v, Tensor):
            raise ArgumentTypeError(f"input {k!r} must be a Tensor, got {type(v).__name__}")
    names = list(sources) or [k for k, v in inputs.items() if v.is_floating_point()]
    if not names:
        raise ArgumentError("no source: pass sources=(input key or module name, ...) or a float input")
    for n in names:
        if n in inputs and not inputs[n].is_floating_point():
            raise ArgumentError(
                f"input {n!r} has dtype {inputs[n].dtype}; sources must be floating point "
                "(for token ids use the embedding module's name as the source)"
            )
    mods = {n: _resolve_module(named, n) for n in names if n not in inputs}
    return names, mods


def trace_computation(
    model: nn.Module,
    inputs: Tensor | Mapping[str, Tensor],
    target: Target,
    sources: Sequence[str],
    elements: Mapping[str, int | None] | None = None,
) -> TracedComputation:
    """Record ``Σ_rows target(model(**inputs))`` as ATen ops in one run, storing every value.

    Args:
        model: any ``nn.Module`` (use ``eval()`` so dropout is off; HF models need
            ``attn_implementation="eager"`` or an SDPA kernel listed in the decompositions).
        inputs: one tensor (called ``model(x)``, source name ``"input"``) or keyword inputs
            of ``model`` (``model(**inputs)``).
        target: see `iit.attribution.targets`. Rows must not interact (eval mode).
        sources: names of floating-point inputs or of modules; empty = all float inputs.
        elements: module source name -> which element of the module's tuple output is the
            source (default: the output itself, which must then be a tensor).

    Returns:
        The traced computation; its values are those of this very run.

    Raises:
        ArgumentTypeError: an input is not a tensor.
        ArgumentError: no source, or an input source is not floating point.
        CoordinateError: a source is neither an input key nor a module name.
        HookFiringError: a source module ran more or less than once, or returned no float
            tensor.
        UnsupportedOpError: the gradient graph contains an op without a rule, or data that
            depend on the sources reach the target through an in-place write into a view.
        TargetError: the target does not fit the output or does not depend on any source.
        Exception: whatever the model raises (the model is left without the hooks).
    """
    positional = isinstance(inputs, Tensor)
    if positional:
        inputs = {"input": inputs}
    keys = list(inputs)
    named = dict(model.named_modules())
    names, mods = _check_sources(named, inputs, sources)

    recorder = _Recorder()
    placeholders = {k: recorder.placeholder(k) for k in keys}
    placeholders.update({n: recorder.placeholder(n) for n in mods})
    for k in keys:
        recorder.bind(placeholders[k], inputs[k])
    calls = {n: 0 for n in mods}
    handles: list[Any] = []
    try:
        _install_hooks(named, recorder, mods, placeholders, calls, handles, elements or {})
        with torch.inference_mode(False), torch.no_grad(), recorder:
            out = model(inputs["input"]) if positional else model(**inputs)
            y = target_scores(out, target).sum()
            root = recorder.node_of(y)
    finally:
        for h in handles:
            h.remove()
    for n, count in calls.items():
        if count != 1 or placeholders[n] not in recorder.env:
            raise HookFiringError(
                f"source module {n!r} must run exactly once and return a float tensor"
                + (f" at output element {(elements or {}).get(n)}" if (elements or {}).get(n) is not None else "")
                + f"; it ran {count} times"
            )
    recorder.graph.output(root)
    env, modules = recorder.env, recorder.modules
    source_nodes = {k: placeholders[k] for k in keys if k in names}  # inputs, then modules
    source_nodes.update({n: placeholders[n] for n in mods})
    dependent, slots = _dependent_slots(recorder.graph, env, set(source_nodes.values()))
    _check_stale_reads(recorder, root, dependent, modules)
    if root not in dependent:
        raise TargetError(
            f"the target does not depend on the sources {names}; pick sources upstream of it"
        )
    live = _live_nodes(root, slots)
    _check_rules(live, env, modules)
    constants = {n.target: env[n] for n in env if n.op == "get_attr"}
    graph_module = _RecordedModule(recorder.graph, constants)  # type: ignore[arg-type]
    return TracedComputation(graph_module, env, source_nodes, root, live, modules, slots)
