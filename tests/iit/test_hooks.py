"""Self-checks, bad input, gradients and property tests of the intervention machinery."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from iit import (
    ConstantAblation,
    Coordinate,
    CoordinateError,
    HookFiringError,
    Index,
    Interchange,
    Interventionable,
    InterventionError,
    InterventionShapeError,
    ZeroAblation,
)
from tests.conftest import ToyMLP


def all_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


# ----------------------------------------------------------------------------- firing checks
class SharedBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Linear(4, 4)
        self.never = nn.Linear(4, 4)

    def forward(self, x):
        return self.block(torch.relu(self.block(x)))


def test_a_module_that_runs_twice_is_reported():
    wrapped = Interventionable(SharedBlock())
    x = torch.randn(2, 4)
    with pytest.raises(HookFiringError, match="'block' ran more than once"):
        wrapped.intervene(x, [ZeroAblation(Coordinate("block"))])
    assert all_hooks(wrapped) == 0


def test_a_module_that_never_runs_is_reported():
    wrapped = Interventionable(SharedBlock())
    with pytest.raises(HookFiringError, match="never ran"):
        wrapped.intervene(torch.randn(2, 4), [ZeroAblation(Coordinate("never"))])
    assert all_hooks(wrapped) == 0


class Exploding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        h = self.a(x)
        if h.shape[0] == 3:
            raise RuntimeError("boom")
        return self.b(h)


def test_hooks_are_removed_after_an_exception_in_the_forward():
    wrapped = Interventionable(Exploding())
    with pytest.raises(RuntimeError, match="boom"):
        wrapped.intervene(torch.randn(3, 4), [ZeroAblation(Coordinate("a"))])
    with pytest.raises(RuntimeError, match="boom"):
        wrapped.intervene(torch.randn(3, 4), [Interchange(Coordinate("a"))], [torch.randn(3, 4)])
    assert all_hooks(wrapped) == 0


# ----------------------------------------------------------------------------- bad input
def test_unknown_module_lists_nearest_names_before_any_forward(mlp):
    calls = []
    handle = mlp.register_forward_pre_hook(lambda m, a: calls.append(1))
    wrapped = Interventionable(mlp)
    with pytest.raises(CoordinateError, match=r"no module 'layers\.2'.*layers\.1"):
        wrapped.intervene(torch.randn(2, 4), [Interchange(Coordinate("layers.2"))], [torch.randn(2, 4)])
    with pytest.raises(CoordinateError, match="did you mean"):
        wrapped.collect(torch.randn(2, 4), [Coordinate("haed")])
    handle.remove()
    assert calls == []


def test_index_out_of_range_names_the_valid_range(mlp, gpt2):
    wrapped = Interventionable(mlp)
    with pytest.raises(CoordinateError, match=r"out of bounds for size 8.*valid is within \[0, 8\)"):
        wrapped.intervene(torch.randn(2, 4), [ZeroAblation(Coordinate("layers.0", Index.dims(4, 12)))])
    with pytest.raises(CoordinateError, match=r"position 9 is beyond axis 1 of size 5.*0\.\.4"):
        Interventionable(gpt2).collect(torch.randint(0, 64, (2, 5)), [Coordinate("transformer.h.0", Index.positions([9]))])
    assert all_hooks(wrapped) == 0


def test_batch_size_mismatch_is_reported_before_any_forward(mlp):
    with pytest.raises(InterventionShapeError, match="source 0 has batch size 3 but the base has 2"):
        Interventionable(mlp).intervene(torch.randn(2, 4), [Interchange(Coordinate("layers.0"))], [torch.randn(3, 4)])


def test_source_values_that_do_not_fit_the_slot(mlp):
    wrapped = Interventionable(mlp)
    a, b = Coordinate("layers.0", Index.dims(0, 4)), Coordinate("layers.0", Index.dims(0, 3))
    with pytest.raises(InterventionShapeError, match=r"shape \(2, 3\) but the slot has shape \(2, 4\)"):
        wrapped.intervene(torch.randn(2, 4), [Interchange(a, source_coordinate=b)], [torch.randn(2, 4)])


def test_dtype_and_device_mismatch(mlp):
    wrapped = Interventionable(mlp)
    coord = Coordinate("layers.0", Index.dims(0, 4))
    with pytest.raises(InterventionShapeError, match="float64"):
        wrapped.intervene(torch.randn(2, 4), [ConstantAblation(coord, torch.zeros(4, dtype=torch.float64))])
    with pytest.raises(InterventionShapeError, match="meta"):
        wrapped.intervene(torch.randn(2, 4), [ConstantAblation(coord, torch.zeros(4, device="meta"))])


def test_empty_lists_missing_sources_and_bad_rows(mlp):
    wrapped = Interventionable(mlp)
    x = torch.randn(2, 4)
    with pytest.raises(InterventionError, match="at least one intervention"):
        wrapped.intervene(x, [], [x])
    with pytest.raises(InterventionError, match="reads source 0 but 0 source"):
        wrapped.intervene(x, [Interchange(Coordinate("layers.0"))])
    with pytest.raises(InterventionError, match="bool tensor"):
        Interchange(Coordinate("layers.0")).where(torch.tensor([1, 0]))
    with pytest.raises(InterventionError, match="row mask has 3 entries but the batch has 2"):
        wrapped.intervene(x, [Interchange(Coordinate("layers.0")).where(torch.tensor([True, False, True]))], [x])
    with pytest.raises(InterventionError, match="at least one coordinate"):
        wrapped.collect(x, [])


def test_bad_indices_and_selectors():
    with pytest.raises(CoordinateError, match="repeat"):
        Index.positions([1, 1])
    with pytest.raises(CoordinateError, match="start < stop"):
        Index.dims(3, 3)
    with pytest.raises(CoordinateError, match="lower <= upper"):
        Index.box((3,), (1,))
    with pytest.raises(CoordinateError, match="integer tensor"):
        Index.positions(torch.tensor([[0.5]]))
    with pytest.raises(CoordinateError, match="iit.Index"):
        Coordinate("a", index=slice(0, 3))  # type: ignore[arg-type]


def test_selector_on_a_tuple_output_is_required(gpt2):
    with pytest.raises(CoordinateError, match=r"returns \(Tensor\[2, 5, 32\], NoneType\).*output=<int>"):
        Interventionable(gpt2).collect(torch.randint(0, 64, (2, 5)), [Coordinate("transformer.h.0.attn")])


# ----------------------------------------------------------------------------- gradients
def test_gradcheck_through_interchange_float64():
    torch.manual_seed(0)
    model = ToyMLP(3, 5, 2).double()
    model.layers[0][1] = nn.Tanh()  # smooth, so finite differences are exact enough
    model.layers[1][1] = nn.Tanh()
    wrapped = Interventionable(model)
    coord = Coordinate("layers.0", Index.dims(1, 4))
    x = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    w = model.layers[1][0].weight

    def f(x, y, _w):
        return wrapped.intervene(x, [Interchange(coord)], [y])

    assert torch.autograd.gradcheck(f, (x, y, w))


def test_gradients_reach_the_model_through_base_and_source_runs(mlp):
    wrapped = Interventionable(mlp)
    coord = Coordinate("layers.1", Index.dims(0, 4))
    x, y = torch.randn(4, 4), torch.randn(4, 4)
    first = mlp.layers[0][0].weight

    def grad_via(detach: bool) -> tuple[torch.Tensor, torch.Tensor]:
        out = wrapped.intervene(x, [Interchange(coord)], [y], detach_sources=detach)
        return torch.autograd.grad(out.sum(), first)[0], out

    g_full, out = grad_via(False)
    g_detached, out_d = grad_via(True)
    assert torch.equal(out, out_d)
    # reference: the source contribution alone, computed by hand
    h_src = mlp.layers[1](mlp.layers[0](y))
    h_base = mlp.layers[1](mlp.layers[0](x))
    ref_src = torch.autograd.grad(mlp.head(torch.cat([h_src[:, :4], h_base.detach()[:, 4:]], 1)).sum(), first)[0]
    ref_base = torch.autograd.grad(mlp.head(torch.cat([h_src.detach()[:, :4], h_base[:, 4:]], 1)).sum(), first)[0]
    assert torch.allclose(g_full, ref_src + ref_base, atol=1e-6)
    assert torch.allclose(g_detached, ref_base, atol=1e-6)
    assert ref_src.abs().sum() > 0


def test_trainable_intervention_parameters_get_gradients(mlp):
    from iit import Addition

    wrapped = Interventionable(mlp)
    vec = nn.Parameter(torch.zeros(8))
    wrapped.add_intervention("steer", Addition(Coordinate("layers.0"), vec))
    out = wrapped.intervene(torch.randn(3, 4), [wrapped.interventions["steer"]])
    out.sum().backward()
    assert vec.grad is not None and vec.grad.abs().sum() > 0


def test_backward_works_after_writes_into_saved_tensors():
    # tanh saves its output for backward; writing into the tanh output must not be in place
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2))
    wrapped = Interventionable(model)
    x = torch.randn(4, 3, requires_grad=True)
    out = wrapped.intervene(x, [ZeroAblation(Coordinate("1", Index.dims(0, 2)))])
    out.sum().backward()
    assert x.grad is not None


# ----------------------------------------------------------------------------- properties
coordinates = st.sampled_from(
    [
        Coordinate("layers.0"),
        Coordinate("layers.0", Index.dims(0, 3)),
        Coordinate("layers.1", Index.dims(5, 8)),
        Coordinate("layers.1", Index.slices([0, 7])),
        Coordinate("head", io="input"),
        Coordinate("layers.1", io="input", index=Index.dims(2, 6)),
    ]
)


@settings(max_examples=30, deadline=None)
@given(coord=coordinates, seed=st.integers(0, 1000), batch=st.integers(1, 5))
def test_source_equal_to_base_reproduces_the_plain_output(coord, seed, batch):
    torch.manual_seed(seed)
    model = ToyMLP()
    x = torch.randn(batch, 4)
    wrapped = Interventionable(model)
    assert torch.equal(wrapped.intervene(x, [Interchange(coord)], [x.clone()]), model(x))
    assert all_hooks(model) == 0


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), batch=st.integers(1, 5), split=st.integers(1, 7))
def test_interchanging_every_unit_of_the_last_layer_reproduces_the_source(seed, batch, split):
    torch.manual_seed(seed)
    model = ToyMLP()
    x, y = torch.randn(batch, 4), torch.randn(batch, 4)
    parts = [
        Interchange(Coordinate("layers.1", Index.dims(0, split))),
        Interchange(Coordinate("layers.1", Index.dims(split, 8))),
    ]
    assert torch.equal(Interventionable(model).intervene(x, parts, [y]), model(y))
    assert all_hooks(model) == 0
