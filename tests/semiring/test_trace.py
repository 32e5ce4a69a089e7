"""The one-run recording tracer of semiring backpropagation: recorded values, op sets against a
make_fx reference, in-place writes, hook and mode hygiene, module-source cut."""

from __future__ import annotations

import operator
from collections import Counter

import pytest
import torch
from torch import nn
from torch.fx import Interpreter, Node
from torch.fx.experimental.proxy_tensor import make_fx

from iit.attribution.targets import target_scores
from iit.errors import HookFiringError, UnsupportedOpError
from iit.semiring import SemiringConfig, semiring_backward
from iit.semiring.decompositions import DECOMPOSITIONS
from iit.semiring.trace import (
    TracedComputation,
    _dependent_slots,
    _live_nodes,
    trace_computation,
)
from tests.attribution.conftest import tiny_bert, tiny_gpt2

aten = torch.ops.aten
MODELS = [(tiny_bert, "bert.embeddings.word_embeddings"), (tiny_gpt2, "transformer.wte")]


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(2, 40, (2, 6), generator=torch.Generator().manual_seed(seed))


def _hooks_left(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _op_name(node: Node) -> str:
    if node.target is operator.getitem:
        return f"{node.args[0].target}[{node.args[1]}]"  # type: ignore[union-attr]
    return str(node.target)


def _live_ops(comp: TracedComputation) -> Counter[str]:
    return Counter(_op_name(n) for n in comp.live if n.op == "call_function")


def _make_fx_live_ops(model: nn.Module, inputs: dict, target: int, source: str) -> Counter[str]:
    """The previous tracer: make_fx with the source module's output as an extra graph input,
    dead code removed, re-run by an Interpreter; the same dependency rule picks the live ops."""
    module = dict(model.named_modules())[source]
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _a, out: captured.append(out.detach()))
    with torch.no_grad():
        model(**inputs)
    handle.remove()
    keys = list(inputs)
    flat = [inputs[k] for k in keys] + captured
    replacement: list[torch.Tensor] = []

    def fn(*args: torch.Tensor) -> torch.Tensor:
        replacement[:] = [args[-1]]
        out = model(**dict(zip(keys, args[:-1])))
        return target_scores(out, target).sum()

    handle = module.register_forward_hook(lambda _m, _a, _o: replacement[0])
    try:
        with torch.no_grad():
            gm = make_fx(
                fn, decomposition_table=DECOMPOSITIONS, _error_on_data_dependent_ops=False
            )(*flat)
    finally:
        handle.remove()
    gm.graph.eliminate_dead_code()
    gm.recompile()
    interp = Interpreter(gm, garbage_collect_values=False)
    with torch.no_grad():
        interp.run(*flat)
    source_node = [n for n in gm.graph.nodes if n.op == "placeholder"][-1]
    root = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    _, slots = _dependent_slots(gm.graph, interp.env, {source_node})
    live = _live_nodes(root, slots)
    return Counter(_op_name(n) for n in live if n.op == "call_function")


@pytest.mark.parametrize(("make", "source"), MODELS, ids=["bert", "gpt2"])
def test_recorded_values_are_the_forward_values(make, source) -> None:
    model = make()
    ids = _ids()
    comp = trace_computation(model, {"input_ids": ids}, 1, (source,))
    with torch.no_grad():
        expected = model(input_ids=ids).logits[:, 1].sum()
    torch.testing.assert_close(comp.env[comp.root], expected, rtol=0, atol=1e-6)
    # replaying the recorded graph from its inputs reproduces every recorded value
    placeholders = [n for n in comp.graph_module.graph.nodes if n.op == "placeholder"]
    interp = Interpreter(comp.graph_module, garbage_collect_values=False)
    with torch.no_grad():
        interp.run(*(comp.env[p] for p in placeholders))
    for node, value in comp.env.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(interp.env[node], value, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("make", "source"), MODELS, ids=["bert", "gpt2"])
def test_live_ops_are_those_of_the_make_fx_tracer(make, source) -> None:
    model = make()
    inputs = {"input_ids": _ids(1)}
    comp = trace_computation(model, inputs, 2, (source,))
    assert _live_ops(comp) == _make_fx_live_ops(model, inputs, 2, source)
    nodes = list(comp.graph_module.graph.nodes)
    for node in nodes:  # multi-output ops: one getitem per element, as make_fx records them
        if node.target is operator.getitem:
            parent, index = node.args
            assert nodes.index(parent) < nodes.index(node)
            assert comp.env[node] is comp.env[parent][index]


def test_the_model_runs_once() -> None:
    model = tiny_bert()
    calls: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, _a: calls.append(1))
    try:
        trace_computation(model, {"input_ids": _ids()}, 0, ("bert.embeddings.word_embeddings",))
    finally:
        handle.remove()
    assert len(calls) == 1


def test_decompositions_are_applied_and_recorded(monkeypatch) -> None:
    def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
        return x * 0.5 * (1 + torch.erf(x * 0.7071067811865476))

    monkeypatch.setitem(DECOMPOSITIONS, aten.gelu.default, gelu)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    comp = trace_computation(model, x, 0, ())
    ops = {n.target for n in comp.live}
    assert aten.erf.default in ops and aten.gelu.default not in ops
    erf = next(n for n in comp.live if n.target is aten.erf.default)
    assert comp.modules[erf] == "1"
    res = semiring_backward(model, x, 0, SemiringConfig("real"))
    xr = x.clone().requires_grad_()
    (ref,) = torch.autograd.grad(model(xr)[:, 0].sum(), xr)
    torch.testing.assert_close(res.values["input"], ref)


def test_modules_are_the_innermost_and_constants_are_get_attr() -> None:
    model = tiny_bert()
    comp = trace_computation(model, {"input_ids": _ids()}, 0, ("bert.embeddings.word_embeddings",))
    addmms = [n for n in comp.live if n.target is aten.addmm.default]
    assert {comp.modules[n] for n in addmms} >= {
        "bert.encoder.layer.0.attention.self.query",
        "bert.encoder.layer.1.output.dense",
        "classifier",
    }
    params = {id(p) for p in model.parameters()}
    attrs = [n for n in comp.graph_module.graph.nodes if n.op == "get_attr"]
    assert {id(comp.env[n]) for n in attrs} >= params - {
        id(model.bert.embeddings.word_embeddings.weight)  # used only inside the cut-off source
    }
    assert all(getattr(comp.graph_module, n.target) is comp.env[n] for n in attrs)


# --------------------------------------------------------------------------- module sources


def test_module_source_cuts_the_graph() -> None:
    model = tiny_bert()
    source = "bert.embeddings.word_embeddings"
    comp = trace_computation(model, {"input_ids": _ids()}, 0, (source,))
    placeholder = comp.sources[source]
    assert placeholder.op == "placeholder" and comp.modules[placeholder] == ""
    assert comp.env[placeholder].shape == (2, 6, 16)
    embedding = next(n for n in comp.graph_module.graph.nodes if n.target is aten.embedding.default)
    assert comp.modules[embedding] == source
    # the graph starts at the source: the module's own op and the token ids are not on it
    assert embedding not in comp.live
    ids_node = next(n for n in comp.graph_module.graph.nodes if n.name == "input_ids")
    assert all(ids_node not in n.all_input_nodes for n in comp.live)
    torch.testing.assert_close(comp.env[placeholder], comp.env[embedding], rtol=0, atol=0)


class _Reuse(nn.Module):
    """Identity source whose output is the very input object, also used elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.ident, self.lin = nn.Identity(), nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.ident(x)) + 2 * x[:, :2]


def test_module_source_cut_only_affects_the_module_output() -> None:
    torch.manual_seed(0)
    model = _Reuse().double()
    x = torch.randn(4, 3, dtype=torch.float64)
    res = semiring_backward(model, x, 1, SemiringConfig("real", sources=("ident",)))
    # d/d ident(x) only: the direct use of x is not downstream of the source
    torch.testing.assert_close(res.values["ident"], model.lin.weight[1].expand(4, 3))


def test_source_module_running_twice_or_never_raises_and_removes_hooks() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin, self.unused = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(self.lin(x))

    model = Twice()
    with pytest.raises(HookFiringError, match="ran 2 times"):
        trace_computation(model, torch.randn(2, 3), 0, ("lin",))
    with pytest.raises(HookFiringError, match="ran 0 times"):
        trace_computation(model, torch.randn(2, 3), 0, ("unused",))
    assert _hooks_left(model) == 0


# --------------------------------------------------------------------------- hygiene


class _Boom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin, self.inner = nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        if getattr(self, "explode", False):
            raise RuntimeError("boom inside the model")
        return self.inner(h)


def test_hooks_and_mode_are_removed_when_the_model_raises() -> None:
    model = _Boom()
    model.explode = True
    with pytest.raises(RuntimeError, match="boom inside the model"):
        trace_computation(model, torch.randn(2, 3), 0, ("lin",))
    assert _hooks_left(model) == 0
    assert torch._C._len_torch_dispatch_stack() == 0
    model.explode = False
    x = torch.randn(2, 3)
    comp = trace_computation(model, x, 0, ("lin",))
    assert comp.modules[comp.root] == ""
    assert {comp.modules[n] for n in comp.live if n.target is aten.addmm.default} == {"inner"}
    assert _hooks_left(model) == 0 and torch._C._len_torch_dispatch_stack() == 0


# --------------------------------------------------------------------------- in-place writes


class _Masked(nn.Module):
    """A mask written in place (directly and through a view), then used: not source-dependent."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(x)
        mask.mul_(2.0)
        mask[:, 0] = 0.5  # written through a view; ``mask`` is read again afterwards
        return self.lin(x) * mask


def test_in_place_writes_to_constants_are_recorded_and_values_stay_as_recorded() -> None:
    torch.manual_seed(0)
    model = _Masked().double()
    x = torch.randn(4, 3, dtype=torch.float64)
    comp = trace_computation(model, x, 1, ())
    nodes = list(comp.graph_module.graph.nodes)
    ones = next(n for n in nodes if n.target is aten.ones_like.default)
    mul_ = next(n for n in nodes if str(n.target).startswith("aten.mul_."))
    assert ones in (mul_.args[0], *mul_.args[0].all_input_nodes)  # type: ignore[union-attr]
    # each stored value is its node's value when it was recorded (copied before the write),
    # also for the aliases (views) of the written tensor
    for node in {ones, mul_.args[0]}:
        torch.testing.assert_close(comp.env[node], torch.ones_like(x), rtol=0, atol=0)
    torch.testing.assert_close(comp.env[mul_], torch.full_like(x, 2.0), rtol=0, atol=0)
    expected = torch.full_like(x, 2.0)
    expected[:, 0] = 0.5
    written = [n for n in nodes if n.op == "get_attr" and n.name.startswith("_written")]
    assert len(written) == 1
    torch.testing.assert_close(comp.env[written[0]], expected, rtol=0, atol=0)
    res = semiring_backward(model, x, 1, SemiringConfig("real"))
    xr = x.clone().requires_grad_()
    (ref,) = torch.autograd.grad(model(xr)[:, 1].sum(), xr)
    torch.testing.assert_close(res.values["input"], ref)


class _InPlace(nn.Module):
    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        if self.mode == "direct":
            h.mul_(2.0)
            return h
        if self.mode == "unused":
            out = h * 3.0
            h.add_(1.0)  # after the last use that matters
            return out
        if self.mode == "view":
            h = h.clone()
            h[:, 0] = 0.0
            return h
        buffer = torch.zeros(x.shape[0], 4, dtype=x.dtype)
        buffer[:, :3] = h  # source-dependent data written into a constant
        return buffer


def test_in_place_write_to_a_live_tensor_is_an_unsupported_op() -> None:
    x = torch.randn(2, 3)
    with pytest.raises(UnsupportedOpError, match=r"mul_.*module 'lin'|mul_"):
        trace_computation(_InPlace("direct"), x, 0, ())


def test_in_place_write_after_the_last_live_use_keeps_the_recorded_value() -> None:
    torch.manual_seed(0)
    model = _InPlace("unused").double()
    x = torch.randn(2, 3, dtype=torch.float64)
    comp = trace_computation(model, x, 0, ())
    addmm = next(n for n in comp.live if n.target is aten.addmm.default)
    with torch.no_grad():
        torch.testing.assert_close(comp.env[addmm], model.lin(x), rtol=0, atol=0)
    res = semiring_backward(model, x, 0, SemiringConfig("real"))
    torch.testing.assert_close(res.values["input"], 3 * model.lin.weight[0].expand(2, 3))


@pytest.mark.parametrize("mode", ["view", "buffer"])
def test_source_dependent_write_through_a_view_raises(mode) -> None:
    with pytest.raises(UnsupportedOpError, match="modified in place by aten.(copy_|fill_)"):
        trace_computation(_InPlace(mode), torch.randn(2, 3), 0, ())
