"""Catalogue, part 3: causal models and their data, serialization (untrusted safetensors),
attribution, semiring backpropagation, TX-Ray and the task runner."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from causal_models import (
    BatchShapeError,
    CausalModel,
    CounterfactualConfig,
    DatasetIndexError,
    DomainError,
    GraphError,
    IntegerRange,
    MissingInputError,
    UnknownVariableError,
)
from iit import (
    ArgumentError,
    ArgumentTypeError,
    ConstantAblation,
    Coordinate,
    CoordinateError,
    DamagedFileError,
    Index,
    InterventionError,
    MissingFileError,
    NamingError,
    OutOfRangeError,
    ResampleAblation,
    ZeroAblation,
    load_interventions,
    save_interventions,
)
from iit.attribution import IntegratedGradients, Saliency, reduce_tokens
from iit.attribution.attention import attention_tracing
from iit.attribution.lrp import EpsilonRule
from iit.attribution.quadrature import quadrature
from iit.attribution.semiring import SemiringConfig, semiring_backward
from iit.attribution.txray import TXRayConfig, record_distributions
from iit.learned import BoundlessRotatedInterchange, RotatedInterchange
from tests.reliability.envs import ENVS, TXRAY_BATCHES
from tests.reliability.harness import Case, Env, run_case

D4 = Coordinate("layers.0", Index.dims(0, 4))
INPUTS = {"x": torch.tensor([1, 2]), "y": torch.tensor([3, 0]), "z": torch.tensor([4, 4])}


def _tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="iit-reliability-"))


def _saved(kind: str) -> Path:
    """A file standing for ``kind`` of damage, next to a valid one."""
    folder = _tmp()
    path = folder / "ivs.safetensors"
    save_interventions(path, {"a": ConstantAblation(D4, torch.zeros(4))})
    raw = path.read_bytes()
    entry = {"class": "ConstantAblation", "coordinate": {"kind": "generic", "module": "layers.0", "io": "output",
                                                        "output": None, "index": ["dims", 0, 4], "label": None}}
    meta = {"format": "iit.interventions/1"}
    if kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "random":
        path.write_bytes(os.urandom(300))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "unknown-class":
        save_file({"a.value": torch.zeros(4)}, str(path),
                  metadata={**meta, "interventions": json.dumps({"a": {**entry, "class": "os.system"}})})
    elif kind == "bad-json":
        save_file({"a.value": torch.zeros(4)}, str(path), metadata={**meta, "interventions": "{not json"})
    elif kind == "no-entries":
        save_file({"a.value": torch.zeros(4)}, str(path), metadata=meta)
    elif kind == "missing-tensor":
        save_file({"b.value": torch.zeros(4)}, str(path), metadata={**meta, "interventions": json.dumps({"a": entry})})
    elif kind in ("wrong-shape-tensor", "boundary-out-of-range"):
        iv = BoundlessRotatedInterchange(D4, 4)
        save_interventions(path, {"b": iv})
        header = json.loads(path.read_bytes()[8 : 8 + int.from_bytes(path.read_bytes()[:8], "little")])
        tensors = {k: v.clone() for k, v in iv.state_dict().items()}
        tensors["boundary"] = torch.zeros(2) if kind == "wrong-shape-tensor" else torch.tensor(5.0)
        save_file({f"b.{k}": v for k, v in tensors.items()}, str(path), metadata=header["__metadata__"])
    elif kind == "bad-index":
        bad = {**entry, "coordinate": {**entry["coordinate"], "index": ["evil", 1]}}
        save_file({"a.value": torch.zeros(4)}, str(path), metadata={**meta, "interventions": json.dumps({"a": bad})})
    elif kind == "huge-rotation":
        save_interventions(path, {"r": RotatedInterchange(D4, 4, (0, 2))})
        header = json.loads(path.read_bytes()[8 : 8 + int.from_bytes(path.read_bytes()[:8], "little")])
        entries = json.loads(header["__metadata__"]["interventions"])
        entries["r"]["rotation"]["d"] = entries["r"]["rotation"]["k"] = 10**6
        tensors = {"r.rotation.parametrizations.weight.original": torch.zeros(4, 4),
                   "r.rotation.parametrizations.weight.0.base": torch.zeros(4, 4)}
        save_file(tensors, str(path), metadata={**meta, "interventions": json.dumps(entries)})
    elif kind == "bad-dtype":
        save_interventions(path, {"r": RotatedInterchange(D4, 4, (0, 2))})
        header = json.loads(path.read_bytes()[8 : 8 + int.from_bytes(path.read_bytes()[:8], "little")])
        entries = json.loads(header["__metadata__"]["interventions"])
        entries["r"]["rotation"]["dtype"] = "torch.load"
        tensors = {"r.rotation.parametrizations.weight.original": torch.zeros(4, 4),
                   "r.rotation.parametrizations.weight.0.base": torch.zeros(4, 4)}
        save_file(tensors, str(path), metadata={**meta, "interventions": json.dumps(entries)})
    elif kind == "other-format":
        save_file({"w": torch.zeros(1)}, str(path))
    return path


def _load(env: Env, kind: str) -> object:
    return load_interventions(_saved(kind), env.net)


def _one_line(cls: type[BaseException], *parts: str) -> tuple[type[BaseException], tuple[str, ...]]:
    return cls, parts


def _cm_with(spec_change: dict) -> CausalModel:
    spec = {
        "x": ((), None, IntegerRange(0, 5)),
        "S": (("x",), lambda x: x + 1, IntegerRange(0, 6)),
        **spec_change,
    }
    return CausalModel.from_mapping(spec, outputs=["S"])


CASES = [
    # ---- causal models and data
    Case("cm-run-unknown-input", "none", lambda e: e.net.run({**INPUTS, "zz": torch.tensor([1, 1])}),
         UnknownVariableError, ("'zz'", "did you mean 'z'")),
    Case("cm-run-missing-input", "none", lambda e: e.net.run({"x": INPUTS["x"], "y": INPUTS["y"]}), MissingInputError,
         ("'z'",)),
    Case("cm-run-value-outside-domain", "none", lambda e: e.net.run({**INPUTS, "x": torch.tensor([9, 1])}),
         DomainError, ("9", "'x'")),
    Case("cm-run-batch-sizes-differ", "none", lambda e: e.net.run({**INPUTS, "x": torch.tensor([1, 2, 3])}),
         BatchShapeError, ("3",)),
    Case("cm-do-unknown-variable", "none", lambda e: e.net.do(INPUTS, {"SS": torch.tensor([1, 1])}),
         UnknownVariableError, ("'SS'", "did you mean 'S'")),
    Case("cm-interchange-source-slot-out-of-range", "none", lambda e: e.net.interchange(INPUTS, [INPUTS], {"S": 3}),
         Exception, ("3",)),
    Case("cm-graph-unknown-parent", "none", lambda e: _cm_with({"S": (("xx",), lambda x: x, IntegerRange(0, 6))}),
         GraphError, ("'xx'", "did you mean 'x'")),
    Case("cm-graph-cycle", "none",
         lambda e: _cm_with({"S": (("x", "T"), lambda x, t: x, IntegerRange(0, 6)),
                             "T": (("S",), lambda s: s, IntegerRange(0, 6))}), GraphError, ("cycle",)),
    Case("cm-counterfactual-config-unknown-variable", "none",
         lambda e: _generator(CounterfactualConfig(variables=("SS",))), UnknownVariableError, ("'SS'",)),
    Case("cm-dataset-index-out-of-range", "none", lambda e: _dataset()[10], DatasetIndexError,
         ("index 10", "4 examples"), fixed=True),
    # ---- serialization: saving
    Case("save-into-missing-folder", "mlp",
         lambda e: save_interventions(_tmp() / "missing" / "x.safetensors", {"a": ZeroAblation(D4)}), MissingFileError,
         ("missing", "does not exist", "mkdir"), fixed=True),
    Case("save-dotted-name", "mlp", lambda e: save_interventions(_tmp() / "x.safetensors", {"a.b": ZeroAblation(D4)}),
         NamingError, ("'a.b'",), fixed=True),
    Case("save-a-list-not-a-mapping", "mlp", lambda e: save_interventions(_tmp() / "x.safetensors", [ZeroAblation(D4)]),
         ArgumentTypeError, ("mapping", "list"), fixed=True),
    Case("save-not-an-intervention", "mlp", lambda e: save_interventions(_tmp() / "x.safetensors", {"a": D4}),
         ArgumentTypeError, ("'a'", "Coordinate"), fixed=True),
    Case("save-unsupported-intervention", "mlp",
         lambda e: save_interventions(_tmp() / "x.safetensors", {"a": ResampleAblation(D4, torch.zeros(2, 4))}),
         InterventionError, ("ResampleAblation", "supported")),
    Case("save-per-row-positions", "mlp",
         lambda e: save_interventions(_tmp() / "x.safetensors",
                                      {"a": ZeroAblation(Coordinate("layers.0", Index.positions(torch.zeros(3, 1).long())))}),
         InterventionError, ("only Index.all",)),
    # ---- serialization: loading untrusted files (one line, nothing loaded)
    *[
        Case(f"load-{kind}", "mlp", lambda e, kind=kind: _load(e, kind), DamagedFileError, parts, fixed=True)
        for kind, parts in [
            ("truncated", ("not a readable safetensors file", "was not loaded")),
            ("random", ("not a readable safetensors file",)),
            ("empty", ("not a readable safetensors file",)),
            ("unknown-class", ("'os.system'", "nothing was loaded")),
            ("bad-json", ("damaged or tampered metadata",)),
            ("no-entries", ("damaged or tampered metadata", "'interventions'")),
            ("missing-tensor", ("'a.value'", "nothing was loaded")),
            ("wrong-shape-tensor", ("'b'", "nothing was loaded", "boundary")),
            ("boundary-out-of-range", ("'b'", "boundary 5", "[0.001, 1.0]")),
            ("bad-index", ("'evil'",)),
            ("huge-rotation", ("1000000", "(4, 4)")),
            ("bad-dtype", ("'torch.load'", "floating-point")),
            ("other-format", ("not an iit interventions file",)),
        ]
    ],
    Case("load-missing-file", "mlp", lambda e: load_interventions(_tmp() / "nope.safetensors", e.net), MissingFileError,
         ("nope.safetensors",), fixed=True),
    Case("load-coordinate-does-not-fit", "seq", lambda e: load_interventions(_saved("valid"), e.net), CoordinateError,
         ("'a'", "layers.0")),
    # ---- attribution
    Case("attr-unknown-reduction", "bert", lambda e: reduce_tokens(torch.zeros(1, 2, 3), "l3"), ArgumentError,
         ("'l3'", "did you mean"), fixed=True),
    Case("attr-reduce-wrong-rank", "bert", lambda e: reduce_tokens(torch.zeros(2, 3), "l2"), ArgumentError,
         ("[batch, seq, d]",), fixed=True),
    Case("attr-unknown-ig-method", "bert", lambda e: IntegratedGradients(e.model, method="gauss"), ArgumentError,
         ("'gauss'", "gausslegendre"), fixed=True),
    Case("attr-ig-too-few-steps", "bert", lambda e: quadrature("riemann_trapezoid", 1), ArgumentError,
         ("n_steps >= 2",), fixed=True),
    Case("attr-unknown-layer", "bert", lambda e: Saliency(e.model, layer="bert.encoder.layers.0"), CoordinateError,
         ("did you mean",), fixed=True),
    Case("attr-target-out-of-range", "bert", lambda e: Saliency(e.model).attribute(e.x, 7), Exception,
         ("out of range",), before_forward=False),
    Case("attr-tracing-position-out-of-range", "bert", lambda e: attention_tracing(torch.rand(2, 1, 4, 3, 3), 5),
         OutOfRangeError, ("position 5", "3 tokens"), fixed=True),
    Case("attr-lrp-negative-epsilon", "bert", lambda e: EpsilonRule(-1.0), ArgumentError, ("epsilon", "-1.0"),
         fixed=True),
    # ---- semiring backpropagation
    Case("semiring-unknown-name", "mlp64", lambda e: SemiringConfig(semiring="max_prodct"), ArgumentError,
         ("did you mean 'max_product'",), fixed=True),
    Case("semiring-granularity-for-entropy", "mlp64", lambda e: SemiringConfig(semiring="entropy", granularity="op"),
         ArgumentError, ("granularity",), fixed=True),
    Case("semiring-sources-a-list", "mlp64", lambda e: SemiringConfig(sources=["x"]), ArgumentTypeError,
         ("tuple", "list"), fixed=True),
    Case("semiring-model-not-a-module", "mlp64", lambda e: semiring_backward(3, e.x, 0, SemiringConfig()),
         ArgumentTypeError, ("nn.Module", "int"), fixed=True),
    Case("semiring-config-a-string", "mlp64", lambda e: semiring_backward(e.model, e.x, 0, "real"), ArgumentTypeError,
         ("SemiringConfig", "'real'"), fixed=True),
    Case("semiring-unknown-source", "mlp64",
         lambda e: semiring_backward(e.model, e.x, 0, SemiringConfig(sources=("01",))), CoordinateError,
         ("'01'", "did you mean"), fixed=True),
    # ---- TX-Ray
    Case("txray-unknown-mode", "txray", lambda e: TXRayConfig(module="emb", num_features=4, mode="max"), ArgumentError,
         ("'max'", "did you mean 'max1'"), fixed=True),
    Case("txray-zero-features", "txray", lambda e: TXRayConfig(module="emb", num_features=0), ArgumentError,
         ("num_features",), fixed=True),
    Case("txray-input-keys-a-list", "txray", lambda e: TXRayConfig(module="emb", num_features=4, input_keys=["a"]),
         ArgumentTypeError, ("tuple",), fixed=True),
    Case("txray-unknown-module", "txray",
         lambda e: record_distributions(e.model, TXRAY_BATCHES, TXRayConfig(module="embb", num_features=4)),
         CoordinateError, ("'embb'", "did you mean 'emb'"), fixed=True),
    Case("txray-feature-ids-out-of-range", "txray",
         lambda e: record_distributions(e.model, TXRAY_BATCHES, TXRayConfig(module="emb", num_features=3)),
         ArgumentError, ("feature ids", "[0, 3)"), before_forward=False, fixed=True),
    Case("txray-no-batches", "txray", lambda e: record_distributions(e.model, [], TXRayConfig(module="emb", num_features=4)),
         ArgumentError, ("empty",), fixed=True),
    # ---- the task runner
    Case("tasks-unknown-task", "none", lambda e: _run_task("equalty"), NamingError, ("'equalty'", "did you mean"),
         fixed=True),
]


def _generator(config: CounterfactualConfig) -> object:
    from causal_models import CounterfactualGenerator, standard
    from causal_models.data import IndependentSampler

    model = standard.digit_sum(4)
    return CounterfactualGenerator(model, config, IndependentSampler(model), seed=0)


def _dataset() -> object:
    from causal_models import CounterfactualDataset, standard
    from causal_models.data import IndependentSampler

    model = standard.digit_sum(4)
    return CounterfactualDataset(model, 4, CounterfactualConfig(variables=("S",)), IndependentSampler(model))


def _run_task(name: str) -> object:
    from tasks.results import run_task

    return run_task(name, _tmp())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_catalogue(case: Case) -> None:
    run_case(case, ENVS)


def test_valid_file_round_trips_after_the_damaged_ones() -> None:
    """The correct call after the damaged files: a valid file loads with its values."""
    env = ENVS["mlp"]()
    value = torch.arange(4.0)
    folder = _tmp()
    save_interventions(folder / "ok.safetensors", {"a": ConstantAblation(D4, value)})
    loaded = load_interventions(folder / "ok.safetensors", env.net)
    torch.testing.assert_close(loaded["a"].value, value)
