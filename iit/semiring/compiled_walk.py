"""The reverse walk compiled into one fused program (``SemiringConfig(compile=True)``).

The eager walk (`backward._walk`) issues a few small tensor ops per graph node, and on a
small model most of its time goes to launching them. For one traced graph the walk is a fixed
sequence of tensor ops on the stored forward values, so this module records that sequence once
(``make_fx``) as a program. Its inputs are

* the stored value of every node (the forward's activations, the model's parameters),
* the cached transforms of the parameters (``|W|``, ``-|W| log |W|``; `weights`), so that
  the program follows in-place parameter updates without recomputing them per call.

The recorded walk multiplies only the rows of each matrix product that some path reaches. They
are found once per structure from the max-product's unreached marker; after a target that reads
one token, the rows of the other tokens in the last layer are left out (unless an op on the
gradient graph picks elements by an index tensor, see `_reached_rows`). ``torch.compile``
(inductor) then fuses the elementwise chains into a few C++/OpenMP or Triton loops; the matrix
products and the max-product kernel (``torch.ops.iit.signed_max_product_matmul``) stay library
calls.

The program is reused for every later call whose traced graph has the same *structure*: the
same ops with the same constant arguments, the same value shapes, strides and dtypes, the same
live set, sources and configuration. Another model of the same architecture reuses it too,
since parameters are inputs. The first call of a structure compiles (tens of seconds on a CPU
for a 4-layer BERT). The programs live in a `CompiledWalks` owned by the caller (a
`SemiringBackprop` keeps one; ``semiring_backward`` without one records a
program for its call only): up to ``max_programs`` (default `MAX_PROGRAMS`), least
recently used out first, all released with their owner or by ``clear()``.

While recorded, the walk takes no branch on the data (the semiring's ``compiled`` form). A walk
that reads a tensor's value into Python, which the program would freeze, raises
``UnsupportedOpError``.

Results equal the eager walk's up to floating-point rounding inside fused loops (sums in another
order, local derivatives such as GELU's from inductor's formulas; about 1e-7 relative in the
tests).
Memory: the values the program does not read are released before it runs; the ones it reads are
held until it returns, where the eager walk drops each after its last reader; inductor frees its
own temporaries after their last use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx import Node
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils._pytree import tree_flatten, tree_unflatten

from iit.errors import ArgumentError, UnsupportedOpError
from iit.semiring.ops import is_contraction, packet_name
from iit.semiring.semirings import State
from iit.semiring.trace import TracedComputation
from iit.semiring.weights import cached_transform, intercept_transforms

__all__ = ["MAX_PROGRAMS", "CompiledWalks", "compiled_walk"]

_log = logging.getLogger(__name__)

#: default number of compiled programs a `CompiledWalks` keeps (torch.compile's own
#: caches keep the generated code)
MAX_PROGRAMS = 8

#: ``walk(comp, config, rows=...)``: the eager walk (`backward._walk`)
_WalkFn = Callable[..., dict[Node, State]]


@dataclasses.dataclass
class _TransformRequest:
    """One parameter transform the walk asks for: ``fn`` of a view of parameter ``param``
    (an index into the program's parameter list) with the given size, stride and offset."""

    name: str
    fn: Callable[[Tensor], Tensor]
    param: int
    view: tuple[tuple[int, ...], tuple[int, ...], int]


@dataclasses.dataclass
class _Program:
    run: Callable[..., Any]
    transforms: list[_TransformRequest]
    #: which of (stored tensors..., transforms...) the program reads, in its argument order
    inputs: list[int]
    #: (position among the graph's nodes, number of state tensors) of each returned state
    outputs: list[tuple[int, int]]


class CompiledWalks:
    """The compiled walk programs of one owner (a `SemiringBackprop`),
    one per graph structure, least recently used dropped past ``max_programs``; released with
    the owner.

    Args:
        max_programs: most programs kept at once.

    Raises:
        ArgumentError: ``max_programs < 1``.
    """

    def __init__(self, max_programs: int = MAX_PROGRAMS) -> None:
        if max_programs < 1:
            raise ArgumentError(f"max_programs must be >= 1, got {max_programs}")
        self.max_programs = max_programs
        self._programs: OrderedDict[tuple, _Program] = OrderedDict()

    def __len__(self) -> int:
        return len(self._programs)

    def clear(self) -> None:
        """Drop every program (the next call of each structure compiles again)."""
        self._programs.clear()

    def last(self) -> _Program:
        """The program used most recently (for the benchmark's memory estimate)."""
        return next(reversed(self._programs.values()))

    def program(self, key: tuple, record: Callable[[], _Program]) -> _Program:
        """The program of structure ``key``, recorded by ``record()`` when missing."""
        program = self._programs.get(key)
        if program is None:
            program = record()
            self._programs[key] = program
            while len(self._programs) > self.max_programs:
                self._programs.popitem(last=False)
        else:
            self._programs.move_to_end(key)
        return program


def compiled_walk(
    comp: TracedComputation, config: Any, walk: _WalkFn, programs: CompiledWalks
) -> dict[Node, State]:
    """Run ``walk(comp, config)`` as a compiled program: compiled on the first call of this
    graph structure (see the module docs), reused afterwards.

    Args:
        comp: a traced computation (`trace_computation`).
        config: the `SemiringConfig` (``compile=True``).
        walk: the eager walk, recorded once per structure.
        programs: where the programs are kept (recorded once per structure there).

    Returns:
        The states ``walk`` keeps (the sources', or every node's with ``record_path``), keyed by
        ``comp``'s nodes. ``comp``'s values are released as the eager walk releases them
        (before the program runs, so also when it raises: trace again to retry).

    Raises:
        UnsupportedOpError: an op without a rule (from the walk), or a walk that reads a
            tensor's value into Python, which a compiled program cannot repeat.
    """
    v = _flatten(comp)
    key = _structure_key(comp, config, v.nodes, v.position, v.leaves)
    program = programs.program(key, functools.partial(_record, comp, config, walk, v))
    args = program_args(program, v)
    nodes = v.nodes
    del v
    _release(comp, config)  # values the program does not read go now, the rest after it
    with torch.no_grad():
        flat = program.run(*args)
    del args
    states: dict[Node, State] = {}
    offset = 0
    for pos, arity in program.outputs:
        states[nodes[pos]] = tuple(flat[offset : offset + arity])
        offset += arity
    return states


@dataclasses.dataclass
class _Values:
    """A traced computation's stored values, flattened in graph order for a program."""

    nodes: list[Node]  # graph nodes that hold a value
    position: dict[Node, int]
    leaves: list[Any]  # pytree leaves of their values, tensors detached
    spec: Any
    tensor_at: list[int]  # which leaves are tensors
    params: list[Tensor]  # values of the get_attr nodes (the Parameters themselves)

    @property
    def tensors(self) -> list[Tensor]:
        return [self.leaves[i] for i in self.tensor_at]


def _flatten(comp: TracedComputation) -> _Values:
    nodes = [n for n in comp.graph_module.graph.nodes if n in comp.env]
    leaves, spec = tree_flatten([comp.env[n] for n in nodes])
    tensor_at = [i for i, leaf in enumerate(leaves) if isinstance(leaf, Tensor)]
    # plain detached tensors: the program runs without autograd, and whether the model's
    # parameters require grad must not matter to it (a compiled program checks the type)
    leaves = [
        t.detach() if isinstance(t, Tensor) and (t.requires_grad or isinstance(t, nn.Parameter))
        else t
        for t in leaves
    ]  # fmt: skip
    params = [comp.env[n] for n in nodes if n.op == "get_attr" and isinstance(comp.env[n], Tensor)]
    position = {n: i for i, n in enumerate(nodes)}
    return _Values(nodes, position, leaves, spec, tensor_at, params)


def program_args(program: _Program, values: _Values) -> list[Tensor]:
    """The arguments of ``program`` for one call: the stored tensors and parameter transforms
    it reads, in its order."""
    given = [*values.tensors, *_transform_inputs(program.transforms, values.params)]
    return [given[i] for i in program.inputs]


def _transform_inputs(requests: list[_TransformRequest], params: list[Tensor]) -> list[Tensor]:
    """This call's value of each requested parameter transform (from the weight cache)."""
    return [cached_transform(r.name, params[r.param].as_strided(*r.view), r.fn) for r in requests]


def _release(comp: TracedComputation, config: Any) -> None:
    """Leave ``comp``'s values as a values-only eager walk leaves them: shape-only stand-ins
    for everything but the sources and parameters (kept as they are with ``record_path``)."""
    from iit.semiring.backward import _stand_in

    if config.semiring == "max_product" and config.record_path:
        return
    keep = set(comp.sources.values())
    for node, value in comp.env.items():
        if node not in keep and node.op != "get_attr":
            comp.env[node] = _stand_in(value)


def _structure_key(
    comp: TracedComputation,
    config: Any,
    nodes: list[Node],
    position: dict[Node, int],
    leaves: list[Any],
) -> tuple:
    """Everything the recorded program depends on besides the tensor data. Node arguments
    enter through their ``repr`` (nodes print as their names, which FX derives from the
    graph's structure; floats print exactly)."""
    graph = tuple(
        (n.op, n.target, repr(n.args), repr(n.kwargs) if n.kwargs else "")
        for n in comp.graph_module.graph.nodes
    )
    values = tuple(
        (v.shape, v.stride(), v.dtype, v.device) if isinstance(v, Tensor) else ("c", v)
        for v in leaves
    )
    # which parameters share a storage, and where in it they start (transform inputs are
    # views of a parameter's storage)
    first_of: dict[int, int] = {}
    storages = tuple(
        (first_of.setdefault(v.untyped_storage().data_ptr(), i), v.storage_offset())
        for i, v in enumerate(comp.env[n] for n in nodes if n.op == "get_attr")
        if isinstance(v, Tensor)
    )
    live = tuple(sorted(position[n] for n in comp.live if n in position))
    sources = tuple((name, position[n]) for name, n in comp.sources.items())
    semiring = (config.semiring, config.granularity, config.record_path)
    return graph, values, storages, live, sources, position[comp.root], semiring


def _record(comp: TracedComputation, config: Any, walk: _WalkFn, v: _Values) -> _Program:
    """Record the walk as an FX graph (twice: the first run finds which parameter transforms
    it asks for, the second takes them as inputs), check it, and compile it."""
    nodes, position, leaves, spec, tensor_at, params = (
        v.nodes, v.position, v.leaves, v.spec, v.tensor_at, v.params
    )  # fmt: skip
    # parameters by storage: the program's inputs are detached (no link to the Parameter)
    param_index: dict[int, int] = {}
    for i, p in enumerate(params):
        if isinstance(p, nn.Parameter) and p.untyped_storage().nbytes():
            param_index.setdefault(p.untyped_storage().data_ptr(), i)
    n_tensors = len(tensor_at)
    outputs: list[tuple[int, int]] = []
    rows = _reached_rows(comp, config, walk)

    def program(*inputs: Tensor) -> list[Tensor]:
        values = list(leaves)
        for i, t in zip(tensor_at, inputs[:n_tensors]):
            values[i] = t
        env = dict(zip(nodes, tree_unflatten(values, spec)))
        states = walk(dataclasses.replace(comp, env=env), config, rows=rows)
        outputs.clear()
        flat: list[Tensor] = []
        for node, state in states.items():
            outputs.append((position[node], len(state)))
            flat.extend(state)
        return flat

    requests: list[_TransformRequest] = []

    def discover(name: str, w: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        index = param_index.get(w.untyped_storage().data_ptr())
        if index is not None:
            view = (tuple(w.shape), tuple(w.stride()), w.storage_offset())
            requests.append(_TransformRequest(name, fn, index, view))
        return fn(w)  # (an activation's transform stays in the program)

    tensors = v.tensors
    with _frozen_reads_refused(config), intercept_transforms(discover):
        make_fx(program)(*tensors)
    transforms = _transform_inputs(requests, params)
    served = iter(range(len(requests)))

    def program_with_transforms(*inputs: Tensor) -> list[Tensor]:
        given = inputs[n_tensors:]

        def serve(name: str, w: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
            if w.untyped_storage().data_ptr() not in param_index:
                return fn(w)
            k = next(served)
            if requests[k].name != name:  # pragma: no cover - the walk is deterministic
                raise RuntimeError(f"transform request {k} changed: {requests[k].name} -> {name}")
            return given[k]

        with intercept_transforms(serve):
            return program(*inputs[:n_tensors])

    with _frozen_reads_refused(config):
        gm = make_fx(program_with_transforms)(*tensors, *transforms)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    inputs = [i for i, n in enumerate(placeholders) if n.users]
    for n in placeholders:  # values read for their shape only, or not at all
        if not n.users:
            gm.graph.erase_node(n)
    gm.recompile()
    _log.info(
        "compiling the %s walk (%d graph nodes, %d program ops); this takes a while once",
        config.semiring, len(nodes), len(gm.graph.nodes),
    )  # fmt: skip
    run = torch.compile(gm, dynamic=False)
    return _Program(run, requests, inputs, list(outputs))


#: ops that pick elements by an index tensor (whose values a structure key does not hold)
_DATA_INDEXED = frozenset({"index", "index_select", "gather", "embedding"})


def _reached_rows(comp: TracedComputation, config: Any, walk: _WalkFn) -> dict[Node, Tensor]:
    """Contraction node -> the rows (dim -2) of its output that some path reaches, where that
    is fewer than all (e.g. after a target that reads one token): from one eager scalar
    max-product walk, where unreached elements are ``(-inf, +inf)``. The recorded program
    then multiplies those rows only (`slot_vjp`).

    Reachability follows from the graph's structure, unless a live op picks elements by an
    index tensor (``index``, ``gather``, ...: e.g. GPT-2's last non-padding token, or a
    target of per-row classes): then every row is kept. (An infinite weight on an unreached,
    zero row is NaN in the eager real and entropy walks, and zero here.)"""
    data_indexed = [
        n for n in comp.live if n.op == "call_function" and packet_name(n.target) in _DATA_INDEXED
    ]
    if data_indexed:  # which rows are reached may depend on the data: all rows, every call
        return {}
    probe = dataclasses.replace(
        config, semiring="max_product", granularity="scalar", record_path=True, compile=False
    )
    with torch.no_grad():
        states = walk(comp, probe)
    found: dict[Node, Tensor] = {}
    for node, state in states.items():
        if node.op != "call_function" or not is_contraction(node.target) or len(state) != 2:
            continue
        mx, mn = state
        reached = ~((mx == -torch.inf) & (mn == torch.inf))
        per_row = reached.movedim(-2, 0).reshape(mx.shape[-2], -1).any(1)
        if not bool(per_row.all()):
            found[node] = per_row.nonzero().squeeze(1)
    return found


@contextlib.contextmanager
def _frozen_reads_refused(config: Any) -> Iterator[None]:
    """No autograd while recording; ``make_fx``'s error for a read of a tensor's value into
    Python (which the program would freeze) becomes an `UnsupportedOpError`."""
    try:
        with torch.no_grad():
            yield
    except RuntimeError as err:
        if "_local_scalar_dense" not in str(err) and "data-dependent" not in str(err):
            raise
        raise UnsupportedOpError(
            f"the {config.semiring} walk reads a tensor value into Python (a branch on the "
            f"data), which a compiled program would freeze; use SemiringConfig(compile=False)"
        ) from err
