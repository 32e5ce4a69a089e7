"""Catalogue, part 1: interventions, generic coordinates and indices, collected activations."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from iit import (
    Activations,
    Addition,
    ArgumentTypeError,
    ConstantAblation,
    Coordinate,
    CoordinateError,
    HookFiringError,
    Index,
    Interchange,
    Interventionable,
    InterventionError,
    InterventionShapeError,
    MeanAblation,
    NamingError,
    OutOfRangeError,
    ResampleAblation,
    ZeroAblation,
)
from iit.interventions import Intervention
from tests.reliability.envs import ENVS
from tests.reliability.harness import Case, Env, run_case

L0 = Coordinate("layers.0")
D4 = Coordinate("layers.0", Index.dims(0, 4))


class _WrongShape(Intervention):
    """Returns one column too few: the written value does not fit its slot."""

    def forward(self, base: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
        return base[..., :-1]


def _collect(env: Env, coordinates: object) -> object:
    return env.net.collect(env.x, coordinates)


def _twice_env() -> Env:
    """A model that calls one block twice and owns a block it never calls."""

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Linear(4, 4)
            self.unused = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.block(self.block(x))

    torch.manual_seed(0)
    model = Twice()
    net = Interventionable(model)
    x = torch.randn(2, 4)

    def good() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return net(x), model.block(model.block(x))

    return Env(model, net, x, good)


ENVS_HERE = {**ENVS, "twice": _twice_env}

CASES = [
    # ---- collect
    Case("collect-one-coordinate-not-a-list", "mlp", lambda e: _collect(e, L0), ArgumentTypeError,
         ("coordinates", "one Coordinate", "[coordinate]"), fixed=True),
    Case("collect-one-tensor-as-coordinates", "mlp", lambda e: _collect(e, torch.zeros(2)), ArgumentTypeError,
         ("one tensor",), fixed=True),
    Case("collect-empty-list", "mlp", lambda e: _collect(e, []), InterventionError, ("at least one coordinate",)),
    Case("collect-unknown-module-typo", "mlp", lambda e: _collect(e, [Coordinate("layer.0")]), CoordinateError,
         ("'layer.0'", "did you mean", "'layers.0'"), fixed=True),
    Case("collect-a-string-not-a-coordinate", "mlp", lambda e: _collect(e, ["layers.0"]), CoordinateError,
         ("iit.Coordinate", "str")),
    Case("collect-dims-beyond-width", "mlp", lambda e: _collect(e, [Coordinate("layers.0", Index.dims(4, 99))]),
         CoordinateError, ("[4, 99)", "size 8"), before_forward=False),
    Case("collect-position-axis-missing", "mlp", lambda e: _collect(e, [Coordinate("layers.0", Index.positions([9]))]),
         CoordinateError, ("position 9", "size 8"), before_forward=False),
    Case("collect-output-selector-on-a-tensor", "mlp", lambda e: _collect(e, [Coordinate("layers.0", output="hidden")]),
         CoordinateError, ("'hidden'", "Tensor[3, 8]"), before_forward=False),
    Case("collect-int-output-selector-on-a-tensor", "mlp", lambda e: _collect(e, [Coordinate("layers.0", output=0)]),
         CoordinateError, ("output selector 0", "Tensor[3, 8]"), before_forward=False, fixed=True),
    Case("intervene-int-output-selector-on-a-tensor", "mlp",
         lambda e: e.net.intervene(e.x, [ZeroAblation(Coordinate("layers.0", output=0))]),
         CoordinateError, ("output selector 0", "Tensor[3, 8]"), before_forward=False, fixed=True),
    Case("collect-input-selector-missing-kwarg", "mlp",
         lambda e: _collect(e, [Coordinate("layers.0", output="bias", io="input")]), CoordinateError,
         ("'bias'",), before_forward=False),
    Case("intervene-module-runs-twice", "twice", lambda e: e.net.intervene(e.x, [ZeroAblation(Coordinate("block"))]),
         HookFiringError,
         ("'block'", "more than once"), before_forward=False),
    Case("collect-module-never-runs", "twice", lambda e: _collect(e, [Coordinate("unused")]), HookFiringError,
         ("unused", "never ran"), before_forward=False),
    # ---- intervene
    Case("intervene-sources-one-tensor", "mlp", lambda e: e.net.intervene(e.x, [Interchange(L0)], e.x),
         ArgumentTypeError, ("sources", "one tensor of shape (3, 4)", "sources=[source]"), fixed=True),
    Case("intervene-sources-one-dict", "mlp", lambda e: e.net.intervene(e.x, [Interchange(L0)], {"x": e.x}),
         ArgumentTypeError, ("sources", "one dict"), fixed=True),
    Case("intervene-missing-source", "mlp", lambda e: e.net.intervene(e.x, [Interchange(L0)]), InterventionError,
         ("reads source 0", "0 source(s)")),
    Case("intervene-source-slot-beyond-list", "mlp", lambda e: e.net.intervene(e.x, [Interchange(L0, source=2)], [e.x]),
         InterventionError, ("source 2", "at least 3")),
    Case("intervene-empty-list", "mlp", lambda e: e.net.intervene(e.x, []), InterventionError,
         ("at least one intervention",)),
    Case("intervene-not-an-intervention", "mlp", lambda e: e.net.intervene(e.x, [L0]), InterventionError,
         ("iit.Intervention", "Coordinate")),
    Case("intervene-source-batch-mismatch", "mlp", lambda e: e.net.intervene(e.x, [Interchange(L0)], [e.x[:2]]),
         InterventionShapeError, ("source 0 has batch size 2", "base has 3")),
    Case("intervene-cached-activations-batch-mismatch", "mlp",
         lambda e: e.net.intervene(e.x, [Interchange(L0)], [Activations({L0: torch.zeros(2, 8)})]),
         InterventionShapeError, ("batch size 2",)),
    Case("intervene-cached-activations-other-coordinate", "mlp",
         lambda e: e.net.intervene(e.x, [Interchange(L0)], [Activations({D4: torch.zeros(3, 4)})]),
         CoordinateError, ("no values were collected at layers.0.output", "layers.0.output[dims 0:4]")),
    Case("intervene-unknown-module", "mlp", lambda e: e.net.intervene(e.x, [ZeroAblation(Coordinate("head.0"))]),
         CoordinateError, ("'head.0'",)),
    Case("intervene-row-mask-wrong-length", "mlp",
         lambda e: e.net.intervene(e.x, [ZeroAblation(L0).where(torch.tensor([True, False]))]), InterventionError,
         ("row mask has 2 entries", "batch has 3")),
    Case("intervene-row-mask-not-bool", "mlp", lambda e: ZeroAblation(L0).where(torch.ones(3)), InterventionError,
         ("bool tensor [batch]", "torch.float32")),
    Case("intervene-from-source-on-ablation", "mlp", lambda e: ZeroAblation(L0).from_source(0), InterventionError,
         ("ZeroAblation reads no source",)),
    Case("intervene-negative-source", "mlp", lambda e: Interchange(L0, source=-1), InterventionError, ("-1",)),
    Case("intervene-bool-source", "mlp", lambda e: Interchange(L0, source=True), InterventionError, ("True",)),
    Case("intervene-written-value-wrong-shape", "mlp", lambda e: e.net.intervene(e.x, [_WrongShape(L0)]),
         InterventionShapeError, ("shape (3, 7)", "(3, 8)"), before_forward=False),
    Case("addition-vector-wrong-shape", "mlp", lambda e: e.net.intervene(e.x, [Addition(D4, torch.ones(3))]),
         InterventionShapeError, ("steering vector has shape (3,)", "(4,)"), before_forward=False),
    Case("addition-not-a-tensor", "mlp", lambda e: Addition(D4, 1.0), ArgumentTypeError, ("Addition", "float"),
         fixed=True),
    Case("constant-ablation-wrong-dtype", "mlp",
         lambda e: e.net.intervene(e.x, [ConstantAblation(D4, torch.zeros(4, dtype=torch.float64))]),
         InterventionShapeError, ("torch.float64", "torch.float32"), before_forward=False),
    Case("constant-ablation-not-a-tensor", "mlp", lambda e: ConstantAblation(D4, 0.0), ArgumentTypeError,
         ("tensor value", "float"), fixed=True),
    Case("resample-ablation-empty-pool", "mlp", lambda e: ResampleAblation(D4, torch.zeros(0, 4)), InterventionError,
         ("non-empty pool",)),
    Case("resample-ablation-pool-rows-wrong", "mlp",
         lambda e: e.net.intervene(e.x, [ResampleAblation(D4, torch.zeros(5, 3))]), InterventionShapeError,
         ("(3,)", "(4,)"), before_forward=False),
    Case("mean-ablation-fit-empty", "mlp", lambda e: MeanAblation.fit(e.net, [], D4), InterventionError,
         ("at least one non-empty batch",)),
    Case("mean-ablation-fit-not-inputs", "mlp", lambda e: MeanAblation.fit(e.net, 3, D4), ArgumentTypeError,
         ("iterable of batches", "int"), fixed=True),
    # ---- the wrapper
    Case("wrap-not-a-module", "mlp", lambda e: Interventionable(3), ArgumentTypeError, ("nn.Module", "int"),
         fixed=True),
    Case("add-intervention-dotted-name", "mlp", lambda e: e.net.add_intervention("a.b", ZeroAblation(L0)),
         NamingError, ("'a.b'", "without '.'", "'a_b'"), fixed=True),
    Case("add-intervention-empty-name", "mlp", lambda e: e.net.add_intervention("", ZeroAblation(L0)), NamingError,
         ("''",), fixed=True),
    Case("add-intervention-not-an-intervention", "mlp", lambda e: e.net.add_intervention("a", nn.Linear(1, 1)),
         InterventionError, ("Linear",)),
    # ---- collected activations
    Case("activations-rows-out-of-range", "mlp", lambda e: _collect(e, [L0]).rows(torch.tensor([0, 5])),
         OutOfRangeError, ("row 5", "3 rows", "0..2"), before_forward=False, fixed=True),
    Case("activations-rows-negative-out-of-range", "mlp", lambda e: _collect(e, [L0]).rows(torch.tensor([-4])),
         OutOfRangeError, ("row -4",), before_forward=False, fixed=True),
    Case("activations-rows-float-index", "mlp", lambda e: _collect(e, [L0]).rows(torch.tensor([0.0])),
         ArgumentTypeError, ("LongTensor", "float32"), before_forward=False, fixed=True),
    Case("activations-rows-bool-mask-wrong-length", "mlp",
         lambda e: _collect(e, [L0]).rows(torch.tensor([True, False])), OutOfRangeError, ("3 entries", "got 2"),
         before_forward=False, fixed=True),
    Case("activations-unknown-coordinate", "mlp", lambda e: _collect(e, [L0])[D4], CoordinateError,
         ("no values were collected at layers.0.output[dims 0:4]",), before_forward=False),
    # ---- indices and coordinates
    Case("index-slices-negative-list", "mlp", lambda e: Index.slices([-1, 2]), CoordinateError,
         ("[-1, 2]", ">= 0", "slice(-2, None)"), fixed=True),
    Case("index-slices-negative-list-in-collect", "mlp",
         lambda e: _collect(e, [Coordinate("layers.0", Index.slices([0, -1]))]), CoordinateError, ("[0, -1]",),
         fixed=True),
    Case("index-slices-step", "mlp", lambda e: Index.slices(slice(0, 4, 2)), CoordinateError, ("step",)),
    Case("index-slices-float", "mlp", lambda e: Index.slices(1.5), CoordinateError, ("1.5",), fixed=True),
    Case("index-slices-string", "mlp", lambda e: Index.slices("ab"), CoordinateError, ("'ab'",), fixed=True),
    Case("index-slices-empty-list", "mlp", lambda e: Index.slices([]), CoordinateError, ("not be empty",), fixed=True),
    Case("index-slices-tensor", "mlp", lambda e: Index.slices(torch.tensor([1])), CoordinateError,
         ("Index.positions",)),
    Case("index-slices-repeat", "mlp", lambda e: Index.slices([1, 1]), CoordinateError, ("repeat",)),
    Case("index-dims-reversed", "mlp", lambda e: Index.dims(4, 2), CoordinateError, ("start=4", "stop=2")),
    Case("index-dims-not-ints", "mlp", lambda e: Index.dims("a", 3), CoordinateError, ("start", "'a'"), fixed=True),
    Case("index-positions-one-int", "mlp", lambda e: Index.positions(3), ArgumentTypeError, ("[3]",), fixed=True),
    Case("index-positions-negative", "mlp", lambda e: Index.positions([-1]), CoordinateError, ("[-1]", ">= 0")),
    Case("index-positions-float", "mlp", lambda e: Index.positions([1.5]), CoordinateError, ("1.5",), fixed=True),
    Case("index-positions-axis-zero", "mlp", lambda e: Index.positions([1], axis=0), CoordinateError,
         ("axis 0 is the batch",)),
    Case("index-positions-float-tensor", "mlp", lambda e: Index.positions(torch.zeros(3, 1)), CoordinateError,
         ("torch.float32",)),
    Case("index-positions-meta-tensor", "mlp",
         lambda e: Index.positions(torch.zeros(3, 1, dtype=torch.long, device="meta")), CoordinateError,
         ("meta tensor",), fixed=True),
    Case("index-mask-not-bool", "mlp", lambda e: Index.mask(torch.ones(8)), CoordinateError, ("bool",)),
    Case("index-mask-wrong-shape", "mlp", lambda e: _collect(e, [Coordinate("layers.0", Index.mask(torch.ones(5, dtype=torch.bool)))]),
         CoordinateError, ("(5,)", "(3, 8)"), before_forward=False),
    Case("index-box-mismatched-corners", "mlp", lambda e: Index.box((1,), (2, 3)), CoordinateError,
         ("same non-zero length",)),
    Case("coordinate-module-not-a-string", "mlp", lambda e: Coordinate(3), CoordinateError, ("3",)),
    Case("coordinate-io-unknown", "mlp", lambda e: Coordinate("layers.0", io="middle"), CoordinateError,
         ("'middle'", "'output' or 'input'")),
    Case("coordinate-index-not-an-index", "mlp", lambda e: Coordinate("layers.0", slice(0, 4)), CoordinateError,
         ("iit.Index", "slice")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_catalogue(case: Case) -> None:
    run_case(case, ENVS_HERE)


def test_mean_ablation_fits_a_dataloader_as_its_docstring_promises() -> None:
    """MeanAblation.fit over a DataLoader (TensorDataset batches are lists; plain tensors too)
    equals the mean computed by hand over all rows."""
    env = ENVS["mlp"]()
    data = torch.randn(10, 4, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want = env.model.layers[0](data)[:, :4].mean(0)
    for loader in (DataLoader(TensorDataset(data), batch_size=4), DataLoader(data, batch_size=3)):
        fitted = MeanAblation.fit(env.net, loader, D4)
        torch.testing.assert_close(fitted.value, want)
    fitted = MeanAblation.fit(env.net, (chunk for chunk in data.split(5)), D4)  # a generator
    torch.testing.assert_close(fitted.value, want)
    torch.testing.assert_close(MeanAblation.fit(env.net, data, D4).value, want)  # one batch


def test_collect_takes_any_iterable_of_coordinates() -> None:
    """dict.values(), a generator or a map of coordinates work as before (a list of them is made);
    the values equal a plain list's and the hand-computed hidden state."""
    env = ENVS["mlp"]()
    coords = {"a": L0, "b": D4}
    want = env.net.collect(env.x, [L0, D4])
    with torch.no_grad():
        hand = env.model.layers[0](env.x)
    torch.testing.assert_close(want[L0], hand)
    for given in (coords.values(), (c for c in (L0, D4)), map(lambda c: c, [L0, D4])):
        got = env.net.collect(env.x, given)
        for c in (L0, D4):
            torch.testing.assert_close(got[c], want[c], rtol=0, atol=0)
    for single in (L0, "layers.0", torch.zeros(2), {"a": L0}):
        with pytest.raises(ArgumentTypeError):
            env.net.collect(env.x, single)
