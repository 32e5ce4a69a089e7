"""Fault injection: an exception or a KeyboardInterrupt raised at every stage of a call (in the
model's forward at each layer, in the source run, in the base run, in an intervention's apply,
in a hook's read, in the alignment probe, in a DAS step, in generation) propagates unchanged and
leaves nothing behind: no hook, the same modes, flags and values, and the next call is correct.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from causal_models import standard
from iit import (
    Alignment,
    Coordinate,
    DASBatch,
    Index,
    Interchange,
    Interventionable,
    RotatedInterchange,
    ZeroAblation,
    generate,
    train_das,
)
from iit.interventions import Intervention
from iit.transformers import TransformerCoordinate, TransformerInterventionable
from tests.iit.transformers._models import tiny_model
from tests.reliability.harness import ForwardCounter, Snapshot


class Injected(RuntimeError):
    """The error the tests inject (a class no library code raises)."""


FAULTS = [Injected("injected fault"), KeyboardInterrupt()]
FAULT_IDS = ["exception", "keyboard-interrupt"]


class Tripwire(nn.Module):
    """Identity that raises ``armed`` on its ``countdown``-th call (then disarms)."""

    def __init__(self) -> None:
        super().__init__()
        self.armed: BaseException | None = None
        self.countdown = 0

    def forward(self, x: Tensor) -> Tensor:
        if self.armed is not None:
            self.countdown -= 1
            if self.countdown <= 0:
                fault, self.armed = self.armed, None
                raise fault
        return x


class FaultyMLP(nn.Module):
    """4 -> 8 -> 8 -> 3 with a tripwire after each layer (in train mode, with dropout, to see
    modes restored)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin0, self.lin1, self.head = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.trip0, self.trip1, self.trip2 = Tripwire(), Tripwire(), Tripwire()
        self.drop = nn.Dropout(0.0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.trip0(torch.relu(self.lin0(x)))
        x = self.trip1(torch.relu(self.lin1(self.drop(x))))
        return self.trip2(self.head(x))


X = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
SOURCE = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
AT_LIN1 = Coordinate("lin1")


def _reference(model: FaultyMLP) -> Tensor:
    """Interchanging all of lin1's output from SOURCE makes the output model(SOURCE)."""
    with torch.no_grad():
        return model(SOURCE)


def _intervene(net: Interventionable) -> Tensor:
    return net.intervene(X, [Interchange(AT_LIN1)], [SOURCE])


def _check_clean(model: nn.Module, before: Snapshot, net: Interventionable) -> None:
    before.assert_same(Snapshot.of(model))
    torch.testing.assert_close(_intervene(net).detach(), _reference(model))


# (stage id, tripwire, countdown, call): countdown 1 = the first forward of the call
MODEL_STAGES: list[tuple[str, str, int, Callable[[Interventionable], Any]]] = [
    ("collect-layer0", "trip0", 1, lambda n: n.collect(X, [Coordinate("head")], return_output=True)),
    ("collect-layer1", "trip1", 1, lambda n: n.collect(X, [Coordinate("head")], return_output=True)),
    ("collect-output", "trip2", 1, lambda n: n.collect(X, [Coordinate("head")], return_output=True)),
    ("source-run-layer0", "trip0", 1, _intervene),
    ("base-run-layer0", "trip0", 2, _intervene),
    ("base-run-layer1-after-write", "trip1", 1, _intervene),
    ("base-run-output", "trip2", 1, _intervene),
]


@pytest.mark.parametrize("fault", FAULTS, ids=FAULT_IDS)
@pytest.mark.parametrize(("stage", "wire", "countdown", "call"), MODEL_STAGES, ids=[s[0] for s in MODEL_STAGES])
def test_fault_in_the_model_forward(stage: str, wire: str, countdown: int, call: Callable, fault: BaseException) -> None:
    model = FaultyMLP().train()
    net = Interventionable(model)
    before = Snapshot.of(model)
    trip = getattr(model, wire)
    trip.armed, trip.countdown = fault, countdown
    with pytest.raises(type(fault)) as info:
        call(net)
    assert info.value is fault
    assert trip.armed is None, "the fault did not fire where intended"
    _check_clean(model, before, net)


class _Raising(Intervention):
    needs_source = True

    def __init__(self, coordinate: Any, fault: BaseException) -> None:
        super().__init__(coordinate)
        self.source = 0
        self.source_coordinate = coordinate
        self.fault = fault

    def forward(self, base: Tensor, source: Tensor | None) -> Tensor:
        raise self.fault


@pytest.mark.parametrize("fault", FAULTS, ids=FAULT_IDS)
def test_fault_in_an_interventions_apply(fault: BaseException) -> None:
    model = FaultyMLP()
    net = Interventionable(model)
    before = Snapshot.of(model)
    counter = ForwardCounter(model)
    with pytest.raises(type(fault)):
        net.intervene(X, [ZeroAblation(Coordinate("lin0")), _Raising(AT_LIN1, fault)], [SOURCE])
    assert counter.calls == 2  # the source run and the base run started
    counter.remove()
    _check_clean(model, before, net)


@pytest.mark.parametrize("fault", FAULTS, ids=FAULT_IDS)
@pytest.mark.parametrize("where", ["collect", "source-run", "base-run-write"])
def test_fault_in_a_hook_read(monkeypatch: pytest.MonkeyPatch, fault: BaseException, where: str) -> None:
    model = FaultyMLP()
    net = Interventionable(model)
    before = Snapshot.of(model)
    calls = {"n": 0}
    real_read = Index.read
    fire_at = {"collect": 1, "source-run": 1, "base-run-write": 2}[where]

    def read(self: Index, hidden: Tensor) -> Tensor:
        calls["n"] += 1
        if calls["n"] == fire_at:
            raise fault
        return real_read(self, hidden)

    monkeypatch.setattr(Index, "read", read)
    with pytest.raises(type(fault)):
        if where == "collect":
            net.collect(X, [AT_LIN1])
        else:
            _intervene(net)
    monkeypatch.setattr(Index, "read", real_read)
    _check_clean(model, before, net)


@pytest.mark.parametrize("fault", FAULTS, ids=FAULT_IDS)
def test_fault_in_the_alignment_probe(fault: BaseException) -> None:
    model = FaultyMLP()
    net = Interventionable(model)
    before = Snapshot.of(model)
    alignment = Alignment(standard.hierarchical_equality(emb_dim=2), {"WX": Coordinate("lin1", Index.dims(0, 4))})
    model.trip2.armed, model.trip2.countdown = fault, 1
    with pytest.raises(type(fault)):
        alignment.check(net, X)
    _check_clean(model, before, net)


@pytest.mark.parametrize("fault", FAULTS, ids=FAULT_IDS)
@pytest.mark.parametrize("where", ["loss", "forward"])
def test_fault_in_a_das_step(fault: BaseException, where: str) -> None:
    model = FaultyMLP().requires_grad_(False)
    net = Interventionable(model)
    before = Snapshot.of(model)
    iv = RotatedInterchange(AT_LIN1, 8, (0, 2))
    weights = iv.rotation.matrix().detach().clone()
    batch = DASBatch(X, [SOURCE], torch.zeros(3, dtype=torch.long))

    def loss(output: Tensor, labels: Tensor) -> Tensor:
        if where == "loss":
            raise fault
        return nn.functional.cross_entropy(output, labels)

    if where == "forward":
        model.trip2.armed, model.trip2.countdown = fault, 2  # the check probe, then the base run (the source run stops at lin1)
    with pytest.raises(type(fault)):
        train_das(net, [iv], [batch], loss)
    torch.testing.assert_close(iv.rotation.matrix(), weights)  # no optimizer step happened
    _check_clean(model, before, net)


@pytest.mark.parametrize("fault", FAULTS, ids=FAULT_IDS)
def test_fault_during_generation_restores_the_coordinates(fault: BaseException) -> None:
    model = tiny_model("gpt2", head=True)
    net = TransformerInterventionable(model)
    before = Snapshot.of(model)
    ids = torch.randint(2, 60, (2, 4), generator=torch.Generator().manual_seed(4))
    prompt = {"input_ids": ids, "attention_mask": torch.ones(2, 4, dtype=torch.long)}
    coord = TransformerCoordinate(0, "block_output", position=0)
    calls = {"n": 0}

    class _FailsOnSecondToken(Intervention):
        def forward(self, base: Tensor, source: Tensor | None) -> Tensor:
            calls["n"] += 1
            if calls["n"] == 2:
                raise fault
            return base

    iv = _FailsOnSecondToken(coord)
    with pytest.raises(type(fault)):
        generate(net, prompt, [iv], max_new_tokens=3, apply_to="every_step")
    assert iv.coordinate is coord
    before.assert_same(Snapshot.of(model))
    got = generate(net, prompt, [ZeroAblation(TransformerCoordinate(0, "block_output", dims=(0, 1)))], max_new_tokens=1)
    assert got.shape == (2, 1)
