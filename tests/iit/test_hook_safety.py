"""Nothing silently wrong in the hook core: collected values never alias the model, cached
sources are never changed by a call that reads them, errors inside hooks cannot be swallowed by
the model (nor can the early stop turn into the model's fallback), and every path, including
KeyboardInterrupt at any stage, leaves the model with exactly its own hooks, modes and flags."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from iit import (
    ConstantAblation,
    Coordinate,
    CoordinateError,
    Index,
    Interchange,
    Interventionable,
    InterventionError,
    ZeroAblation,
)
from iit._dispatch import active_dispatchers
from iit.interventions import Intervention
from tests.iit.test_concurrency import hook_count


class InPlace(nn.Module):
    """``h = layer(x); h += 1`` after the hooked module (an in-place edit of its output)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 5)
        self.head = nn.Linear(5, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.layer(x)
        h += 1
        return self.head(h)


def hand_patched(model: InPlace, x: Tensor, value: Tensor) -> Tensor:
    """Reference: the layer's output replaced by ``value`` (a fresh copy), then the model goes on."""
    h = value.clone()
    h += 1
    return model.head(h)


def state(model: nn.Module) -> list[Any]:
    return [(m.training, [p.requires_grad for p in m.parameters(recurse=False)]) for m in model.modules()]


def clean(model: nn.Module, before: list[Any]) -> None:
    assert hook_count(model) == 0 and active_dispatchers() == 0
    assert state(model) == before


# ----------------------------------------------------------------------------- aliasing
def test_collected_values_are_not_changed_by_the_model_afterwards():
    torch.manual_seed(0)
    model = InPlace()
    net = Interventionable(model)
    x = torch.randn(3, 4, requires_grad=True)
    expected = model.layer(x)
    where = Coordinate("layer")
    out, acts = net.collect(x, [where], return_output=True)  # the model runs on after the read
    assert torch.equal(acts[where], expected)
    assert torch.equal(out, model(x))
    assert torch.equal(net.collect(x, [where])[where], expected)  # stopped right after the read
    assert torch.equal(net.collect(x, [Coordinate("layer", Index.dims(1, 4))], return_output=True)[1][
        Coordinate("layer", Index.dims(1, 4))], expected[:, 1:4])  # a view of the hidden state
    # gradients still flow through the collected values (as in-batch sources do in training)
    (grad,) = torch.autograd.grad(expected.pow(2).sum(), x)
    (got,) = torch.autograd.grad(acts[where].pow(2).sum(), x)
    assert torch.allclose(got, grad, atol=0, rtol=0)


def test_intervening_twice_from_one_cached_activations_gives_one_result_and_keeps_the_cache():
    torch.manual_seed(0)
    model = InPlace()
    net = Interventionable(model)
    base, source = torch.randn(3, 4), torch.randn(3, 4)
    where = Coordinate("layer")
    acts = net.collect(source, [where])
    cached = acts[where].clone()
    first = net.intervene(base, [Interchange(where)], [acts])
    second = net.intervene(base, [Interchange(where)], [acts])
    assert torch.equal(acts[where], cached)
    assert torch.equal(first, second)
    assert torch.equal(first, hand_patched(model, base, model.layer(source)))
    # an internal source run feeds the base run the same way
    assert torch.equal(net.intervene(base, [Interchange(where)], [source]), first)


def test_a_constant_written_over_a_whole_hidden_state_is_not_changed_by_the_model():
    torch.manual_seed(0)
    model = InPlace()
    net = Interventionable(model)
    value = torch.arange(5.0)
    ablation = ConstantAblation(Coordinate("layer"), value.clone())
    x = torch.randn(1, 4)  # batch 1: the broadcast constant is a writable view
    first = net.intervene(x, [ablation])
    second = net.intervene(x, [ablation])
    assert torch.equal(first, second)
    assert torch.equal(first, hand_patched(model, x, value[None]))
    zero = net.intervene(x, [ZeroAblation(Coordinate("layer"))])
    assert torch.equal(zero, hand_patched(model, x, torch.zeros(1, 5)))


# ----------------------------------------------------------------------------- swallowed errors
class Forgiving(nn.Module):
    """Wraps its middle module in ``try/except Exception`` and returns a fallback instead."""

    def __init__(self, reraise: bool = False) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(6, 6)
        self.head = nn.Linear(6, 2)
        self.reraise = reraise

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.a(x))
        try:
            h = self.b(h)
        except Exception as error:
            if self.reraise:
                raise RuntimeError("the model's own wrapper error") from error
            return torch.zeros(x.shape[0], 2)  # fallback
        return self.head(h)


@pytest.mark.parametrize("reraise", [False, True], ids=["fallback", "own error"])
def test_an_error_inside_a_hook_is_raised_even_if_the_model_catches_it(reraise):
    torch.manual_seed(0)
    model = Forgiving(reraise)
    net = Interventionable(model)
    before = state(model)
    x = torch.randn(2, 4)
    with pytest.raises(CoordinateError, match=r"out of bounds for size 6"):
        net.intervene(x, [ZeroAblation(Coordinate("b", Index.dims(4, 9)))])
    clean(model, before)

    class Broken(Intervention):
        needs_source = False

        def forward(self, base: Tensor, source: Tensor | None) -> Tensor:
            raise ValueError("a bug in a custom intervention")

    with pytest.raises(ValueError, match="a bug in a custom intervention") as info:
        net.intervene(x, [Broken(Coordinate("b"))])
    assert any("the model caught it" in note for note in getattr(info.value, "__notes__", [])) != reraise
    clean(model, before)
    # and the next correct call gives the correct result
    assert torch.equal(net.intervene(x, [ZeroAblation(Coordinate("b"))]), model.head(torch.zeros(2, 6)))


def test_a_swallowed_early_stop_never_returns_the_models_fallback():
    torch.manual_seed(0)
    model = Forgiving()
    net = Interventionable(model)
    before = state(model)
    base, source = torch.randn(3, 4), torch.randn(3, 4)
    where = Coordinate("b")
    expected = model.b(torch.relu(model.a(source)))
    assert torch.equal(net.collect(source, [where])[where], expected)  # the model swallowed the stop
    out = net.intervene(base, [Interchange(where)], [source])  # its source run is stopped there too
    assert torch.equal(out, model.head(expected))
    assert not torch.equal(out, torch.zeros(3, 2))
    clean(model, before)


def test_an_early_stop_the_model_turns_into_its_own_error_still_gives_the_values():
    torch.manual_seed(0)
    model = Forgiving(reraise=True)
    net = Interventionable(model)
    source = torch.randn(3, 4)
    expected = model.b(torch.relu(model.a(source)))
    assert torch.equal(net.collect(source, [Coordinate("b")])[Coordinate("b")], expected)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):  # a real error stays one
        net.collect(torch.randn(3, 5), [Coordinate("b")])
    clean(model, state(model))


def test_a_collected_value_changed_after_a_swallowed_early_stop_is_an_error():
    class EditsAfterCatching(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 6)
            self.b = nn.Linear(6, 2)

        def forward(self, x: Tensor) -> Tensor:
            h = self.a(x)
            try:
                return self.b(h)
            except Exception:
                h += 1  # the value read at b's input
                return h[:, :2]

    model = EditsAfterCatching()
    net = Interventionable(model)
    with pytest.raises(InterventionError, match=r"caught iit's early stop.*changed collected value"):
        net.collect(torch.randn(2, 4), [Coordinate("b", io="input")])
    clean(model, state(model))


# ----------------------------------------------------------------------------- KeyboardInterrupt
class Interruptible(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)
        self.stage: str | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.stage == "before":
            raise KeyboardInterrupt
        h = self.b(torch.relu(self.a(x)))
        if self.stage == "after":
            raise KeyboardInterrupt
        return self.head(h)


class Interrupting(Intervention):
    needs_source = False

    def forward(self, base: Tensor, source: Tensor | None) -> Tensor:
        raise KeyboardInterrupt


@pytest.mark.parametrize("stage", ["register", "before", "hook", "after", "source run", "swallowed"])
def test_keyboard_interrupt_at_any_stage_leaves_nothing_behind(stage, monkeypatch):
    torch.manual_seed(0)
    model = Interruptible().train()
    model.a.requires_grad_(False)
    net = Interventionable(model)
    before = state(model)
    x, s = torch.randn(2, 4), torch.randn(2, 4)
    ivs: list[Any] = [Interchange(Coordinate("b")), ZeroAblation(Coordinate("a"))]
    if stage == "register":
        original = nn.Module.register_forward_hook
        calls = []

        def flaky(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return original(self, *args, **kwargs)

        monkeypatch.setattr(nn.Module, "register_forward_hook", flaky)
    elif stage in ("before", "after"):
        model.stage = stage
    elif stage == "hook":
        ivs = [Interrupting(Coordinate("b"))]
    elif stage == "source run":
        ivs = [Interchange(Coordinate("b"), source_coordinate=Coordinate("b", Index.dims(0, 4)))]
        model.stage = "before"
    else:  # the model catches BaseException around the hooked module: raised again afterwards
        ivs = [Interrupting(Coordinate("b"))]
        forward = model.forward

        def swallowing(x: Tensor) -> Tensor:
            try:
                return forward(x)
            except BaseException:
                return torch.zeros(x.shape[0], 2)

        monkeypatch.setattr(model, "forward", swallowing)
    with pytest.raises(KeyboardInterrupt):
        net.intervene(x, ivs, [s])
    monkeypatch.undo()
    model.stage = None
    clean(model, before)
    expected = model.head(torch.zeros(2, 4))
    assert torch.equal(net.intervene(x, [ZeroAblation(Coordinate("b"))]), expected)
    clean(model, before)
