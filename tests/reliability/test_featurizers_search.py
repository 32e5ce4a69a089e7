"""Catalogue, part 5: featurizers (iit.featurizers) and alignment search (iit.search)."""

from __future__ import annotations

import tempfile

import pytest
import torch
from torch import Tensor

from causal_models import standard
from iit import Coordinate, Index, Interventionable
from iit.errors import (
    AlignmentError,
    ArgumentError,
    ArgumentTypeError,
    CoordinateError,
    DamagedFileError,
    InterventionError,
    InterventionShapeError,
    ManifestMismatchError,
    MissingFileError,
)
from iit.featurizers import (
    FeatureInterchange,
    IdentityFeaturizer,
    MaskedFeatureInterchange,
    PCAFeaturizer,
    RotationFeaturizer,
    SAEFeaturizer,
)
from iit.search import (
    DAS,
    CounterfactualSplits,
    FitSettings,
    SearchProblem,
    SearchSettings,
    module_places,
    search,
)
from iit.search.mib import read_mib
from tasks.rotated_sum import RotatedSum, encode_digits
from tests.reliability.envs import ENVS
from tests.reliability.harness import Case, Env, run_case

C = Coordinate("layers.0", Index.all())
TINY = SearchSettings(fit=FitSettings(epochs=1, batch_size=16, lr=0.05), seed=0)


def search_env() -> Env:
    """The handcrafted RotatedSum (l0: 3 -> 4, l1: 4 -> 4) in a search problem with small splits;
    good: collecting l0 equals the hand-computed ``x @ W0^T``."""
    model = RotatedSum(3)
    net = Interventionable(model)
    causal = standard.digit_sum(3)
    problem = SearchProblem(net, causal, "S", encode_digits)
    splits = CounterfactualSplits.generate(causal, "S", (16, 8, 8), seed=0)
    x = encode_digits(splits.train.base)
    coord = Coordinate("l0", Index.all())

    def good() -> tuple[Tensor, Tensor]:
        got = net.collect(x, [coord])[coord]
        with torch.no_grad():
            want = x @ model.l0.weight.T
        return got.detach(), want

    return Env(model, net, x, good, {"problem": problem, "splits": splits, "causal": causal})


def _search(e: Env, places=None, sizes=(1,), **kwargs):
    return search(e.extra["problem"], e.extra["splits"], places or module_places(["l0"]), [DAS()], list(sizes), TINY,
                  progress=False, **kwargs)


def _rerun_other_seed(e: Env, tmp: str) -> None:
    _search(e, out_dir=tmp)
    search(e.extra["problem"], e.extra["splits"], module_places(["l0"]), [DAS()], [1],
           SearchSettings(fit=TINY.fit, seed=1), progress=False, out_dir=tmp)


def _garbage_mib(tmp: str) -> None:
    from pathlib import Path

    folder = Path(tmp) / "task_model_S"
    folder.mkdir(parents=True)
    unit = "ResidualStream(Layer-0,Token-all)"
    for suffix in ("_featurizer", "_inverse_featurizer"):
        (folder / f"{unit}{suffix}").write_bytes(b"\x80\x04garbage")
    (folder / f"{unit}_indices").write_text("[0]\n")
    read_mib(folder)


ENVS_HERE = {**ENVS, "search": search_env}


_TMP = tempfile.TemporaryDirectory(prefix="iit-catalogue-")  # removed at exit


def _tmp() -> str:
    return tempfile.mkdtemp(dir=_TMP.name)


CASES = [
    # ---- featurizers
    Case("features-int-not-a-choice", "mlp", lambda e: FeatureInterchange(C, IdentityFeaturizer(8), 3), ArgumentTypeError,
         ("int 3", "(start, stop)"), fixed=True),
    Case("features-float-entries", "mlp", lambda e: FeatureInterchange(C, IdentityFeaturizer(8), [0, 1.5]), ArgumentTypeError,
         ("1.5", "float"), fixed=True),
    Case("features-three-tuple", "mlp", lambda e: FeatureInterchange(C, IdentityFeaturizer(8), (0, 1, 2)), ArgumentTypeError,
         ("(0, 1, 2)", "pass a list or range"), fixed=True),
    Case("features-start-stop-beyond", "mlp", lambda e: FeatureInterchange(C, IdentityFeaturizer(8), (4, 9)), InterventionError,
         ("(4, 9)", "<= 8")),
    Case("features-index-out-of-range", "mlp", lambda e: FeatureInterchange(C, IdentityFeaturizer(8), [8]), InterventionError,
         ("[8]", "[0, 8)")),
    Case("featurizer-not-a-featurizer", "mlp", lambda e: FeatureInterchange(C, torch.nn.Linear(8, 8), [0]), InterventionError,
         ("Featurizer", "Linear")),
    Case("featurizer-width-differs-at-run", "mlp",
         lambda e: e.net.intervene(e.x, [FeatureInterchange(Coordinate("layers.0", Index.dims(0, 4)), RotationFeaturizer(8), [0])],
                                   [e.x]),
         InterventionShapeError, ("d=8", "(3, 4)"), before_forward=False),
    Case("mask-temperature-nan", "mlp", lambda e: MaskedFeatureInterchange(C, IdentityFeaturizer(8), temperature=float("nan")),
         ArgumentError, ("temperature", "nan"), fixed=True),
    Case("mask-temperature-not-a-number", "mlp", lambda e: MaskedFeatureInterchange(C, IdentityFeaturizer(8), temperature="hot"),
         ArgumentTypeError, ("temperature", "'hot'"), fixed=True),
    Case("mask-kind-unknown", "mlp", lambda e: MaskedFeatureInterchange(C, IdentityFeaturizer(8), "gumbel"), InterventionError,
         ("'gumbel'", "hard_concrete")),
    Case("pca-one-sample", "mlp", lambda e: PCAFeaturizer.fit(torch.zeros(1, 8)), InterventionError, ("n=1", ">= 2 samples")),
    Case("sae-shapes-do-not-fit", "mlp",
         lambda e: SAEFeaturizer(torch.zeros(8, 5), torch.zeros(4), torch.zeros(5, 8), torch.zeros(8)), InterventionError,
         ("b_enc", "[5]", "[4]")),
    Case("rotation-featurizer-rotation-shape", "mlp",
         lambda e: RotationFeaturizer(8, 2, rotation=RotationFeaturizer(8, 3).rotation), InterventionError, ("8 x 3", "k=2")),
    # ---- search
    Case("search-problem-model-not-wrapped", "search",
         lambda e: SearchProblem(e.model, e.extra["causal"], "S", encode_digits), ArgumentTypeError,
         ("Interventionable", "RotatedSum"), fixed=True),
    Case("search-problem-unknown-variable", "search",
         lambda e: SearchProblem(e.net, e.extra["causal"], "s", encode_digits), AlignmentError, ("'s'", "valid", "'S'")),
    Case("search-sizes-zero", "search", lambda e: _search(e, sizes=(0,)), ArgumentError, ("sizes", "[0]"), fixed=True),
    Case("search-repeated-place", "search", lambda e: _search(e, places=module_places(["l0"]) * 2), ArgumentError,
         ("unique", "'l0'"), fixed=True),
    Case("search-unknown-place-module", "search", lambda e: _search(e, places=module_places(["l0", "l9"])), CoordinateError,
         ("'l9'", "did you mean"), fixed=True),
    Case("search-place-index-too-wide", "search",
         lambda e: _search(e, places=module_places(["l1"], Index.dims(0, 9))), CoordinateError, ("[0, 9)",),
         before_forward=False, fixed=True),
    Case("search-resume-other-settings", "search", lambda e: _rerun_other_seed(e, _tmp()), ManifestMismatchError,
         ("settings", "new out_dir", "delete"), before_forward=False, fixed=True),
    Case("mib-missing-folder", "mlp", lambda e: read_mib(_tmp() + "/none"), MissingFileError, ("does not exist",), fixed=True),
    Case("mib-garbage-file", "mlp", lambda e: _garbage_mib(_tmp()), DamagedFileError, ("damaged or unsafe",), fixed=True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_catalogue(case: Case) -> None:
    run_case(case, ENVS_HERE)
