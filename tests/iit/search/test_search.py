"""The search on a handcrafted network with a known alignment: it finds the rotated direction
at ``l0`` (DAS) and neuron 0 at ``l1``; controls, intervals, resumption and determinism."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from causal_models import CausalModel, standard
from causal_models.domains import IntegerRange
from iit import Coordinate, Index, Interchange, Interventionable
from iit.errors import AlignmentError
from iit.search import (
    DAS,
    PCA,
    CounterfactualSplits,
    FitSettings,
    Hypothesis,
    SearchProblem,
    SearchResult,
    SearchSettings,
    compare_hypotheses,
    module_places,
    neurons,
    plot_heatmap,
    search,
    wilson_interval,
)
from iit.search import cells as cells_module
from tests.iit.search.conftest import MAX_DIGIT, HandcraftedSum, encode

SETTINGS = SearchSettings(fit=FitSettings(epochs=6, batch_size=64, lr=0.05), seed=3)


def _cell(table: pd.DataFrame, place: str, featurizer: str, size: int) -> pd.Series:
    rows = table[(table["place"] == place) & (table["featurizer"] == featurizer) & (table["size"] == size)]
    assert len(rows) == 1
    return rows.iloc[0]


@pytest.fixture(scope="module")
def result() -> SearchResult:
    problem = SearchProblem(Interventionable(HandcraftedSum()), standard.digit_sum(MAX_DIGIT), "S", encode)
    splits = CounterfactualSplits.generate(standard.digit_sum(MAX_DIGIT), "S", (512, 256, 512), seed=0)
    return search(problem, splits, module_places(["l0", "l1"]), [DAS(), PCA(), neurons()], [1, 2, 8], SETTINGS, progress=False)


def test_search_finds_the_known_alignment(result: SearchResult) -> None:
    table = result.table
    assert len(table) == 2 * 3 * 2  # size 8 > d = 4: skipped
    assert len(result.skipped) == 6 and all("size 8 > 4" in s for s in result.skipped)
    das = _cell(table, "l0", "das", 1)
    assert das["iia_test"] >= 0.97  # the rotated direction of x + y
    assert _cell(table, "l1", "neurons", 1)["iia_test"] == 1.0  # neuron 0 is S
    assert _cell(table, "l0", "neurons", 1)["iia_test"] < 0.8  # no neuron of l0 is S
    assert das["control_random"] < 0.8 and das["control_untrained"] < 0.8
    best = result.best("das")
    assert best["iia_val"] == table[table["featurizer"] == "das"]["iia_val"].max()
    assert result.smallest_size(0.05, "das")["size"] == 1


def test_intervals_and_impactful_columns(result: SearchResult) -> None:
    for _, row in result.table.iterrows():
        ok = round(row["iia_test"] * row["n_test"])
        assert (row["iia_test_low"], row["iia_test_high"]) == pytest.approx(wilson_interval(ok, int(row["n_test"])))
        assert row["iia_test_low"] <= row["iia_test"] <= row["iia_test_high"]
        assert 0 < row["n_test_impactful"] <= row["n_test"]
        assert math.isnan(row["control_untrained"]) == (row["featurizer"] == "pca")


def test_impactful_iia_by_brute_force(problem, splits) -> None:
    """Neuron 0 of l1 alone, scored pair by pair with plain interchanges, matches the table."""
    res = search(problem, splits, [p for p in _places() if p.name == "l1"], [neurons()], [1], SETTINGS, progress=False)
    row = res.table.iloc[0]
    iv = res.interventions["S__l1__neurons__k1"]
    assert iv.features == (0,)
    test = splits.test
    out = problem.model.intervene(encode_batch(test.base), [Interchange(Coordinate("l1", Index.dims(0, 1)))], [encode_batch(test.sources[0])])
    correct = out.argmax(-1) == problem.labels(test.counterfactual_output)
    imp = test.impactful
    assert row["iia_test"] == float(correct.float().mean())
    assert row["iia_test_impactful"] == float(correct[imp].float().mean())


def encode_batch(values):
    return encode(values)


def _places():
    return module_places(["l0", "l1"])


def test_deterministic_with_one_seed(problem, splits, places) -> None:
    a = search(problem, splits, places[:1], [DAS()], [1], SETTINGS, progress=False).table
    b = search(problem, splits, places[:1], [DAS()], [1], SETTINGS, progress=False).table
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    other = search(problem, splits, places[:1], [DAS()], [1], SearchSettings(fit=SETTINGS.fit, seed=4), progress=False).table
    assert other["seed"].iloc[0] != a["seed"].iloc[0]


def test_resumable(problem, splits, places, tmp_path, monkeypatch) -> None:
    first = search(problem, splits, places, [DAS()], [1], SETTINGS, out_dir=tmp_path, progress=False)
    assert len(list((tmp_path / "cells").glob("*.json"))) == 2
    assert len(list((tmp_path / "cells").glob("*.safetensors"))) == 2

    def boom(*args, **kwargs):
        raise AssertionError("a finished cell was run again")

    monkeypatch.setattr(cells_module, "run_cell", boom)
    import iit.search.run as run_module

    monkeypatch.setattr(run_module, "run_cell", boom)
    again = search(problem, splits, places, [DAS()], [1], SETTINGS, out_dir=tmp_path, progress=False)
    pd.testing.assert_frame_equal(first.table, again.table)
    key = "S__l0__das__k1"
    b, s = torch.randn(5, 4), torch.randn(5, 4)
    torch.testing.assert_close(again.interventions[key](b, s), first.interventions[key](b, s), rtol=0, atol=0)
    # one more size: only the new cells run (the others are skipped)
    monkeypatch.undo()
    calls = []
    real = run_module.run_cell

    def counting(*args, **kwargs):
        calls.append(args[2].size)
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "run_cell", counting)
    more = search(problem, splits, places, [DAS()], [1, 2], SETTINGS, out_dir=tmp_path, progress=False)
    assert calls == [2, 2] and len(more.table) == 4


def test_model_left_as_found(problem, splits, places) -> None:
    problem.model.model.train()
    flags = [p.requires_grad for p in problem.model.parameters()]
    threads = torch.get_num_threads()
    search(problem, splits, places[:1], [DAS()], [1], SETTINGS, progress=False)
    assert problem.model.model.training and [p.requires_grad for p in problem.model.parameters()] == flags
    assert torch.get_num_threads() == threads


def test_save_table_and_heatmap(result: SearchResult, tmp_path) -> None:
    csv = pd.read_csv(result.save(tmp_path / "t.csv"))
    parquet = pd.read_parquet(result.save(tmp_path / "t.parquet"))
    assert list(csv.columns) == list(result.table.columns) and len(parquet) == len(result.table)
    grid = result.pivot("layer", "size", featurizer="das")
    assert grid.loc[0, 1] == _cell(result.table, "l0", "das", 1)["iia_test"]
    fig = plot_heatmap(result, "layer", "size", featurizer="das", path=tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 1000 and len(fig.axes) == 2
    with pytest.raises(ValueError, match="empty"):
        result.pivot("layer", "position")
    with pytest.raises(KeyError, match="sae"):
        result.best("sae")


def _swapped_sum() -> CausalModel:
    d = IntegerRange(0, MAX_DIGIT + 1)
    return CausalModel.from_mapping(
        {
            "x": ((), None, d), "y": ((), None, d), "z": ((), None, d),
            "S": (("x", "z"), lambda a, b: a + b, IntegerRange(0, 2 * MAX_DIGIT + 1)),
            "O": (("S", "y"), lambda a, b: a + b, IntegerRange(0, 3 * MAX_DIGIT + 1)),
        },
        outputs=["O"],
        name="S = x + z",
    )


def test_compare_hypotheses_on_distinguishing_pairs(problem, splits) -> None:
    iv = Interchange(Coordinate("l1", Index.dims(0, 1)))
    right = Hypothesis("S = x + y", standard.digit_sum(MAX_DIGIT), "S")
    wrong = Hypothesis("S = x + z", _swapped_sum(), "S")
    cmp = compare_hypotheses(problem, iv, splits.test, right, wrong)
    la, lb = right.labels(splits.test), wrong.labels(splits.test)
    assert cmp.n_distinguishing == int((la != lb).sum()) > 0
    assert cmp.agreement == (1.0, 0.0) and cmp.iia[0] == 1.0 and cmp.preferred == "S = x + y"
    with pytest.raises(AlignmentError, match="distinguishes"):
        compare_hypotheses(problem, iv, splits.test, right, right)


def test_bad_requests_raise_before_running(problem, splits, places) -> None:
    with pytest.raises(AlignmentError, match="unique"):
        search(problem, splits, [places[0], places[0]], [DAS()], [1], progress=False)
    with pytest.raises(AlignmentError, match="sizes"):
        search(problem, splits, places, [DAS()], [0], progress=False)
    other = type(splits).generate(standard.digit_sum(MAX_DIGIT), "z", (8, 8, 8))
    with pytest.raises(AlignmentError, match="'z'"):
        search(problem, other, places, [DAS()], [1], progress=False)
    with pytest.raises(AlignmentError, match="did you mean"):
        type(problem)(problem.model, problem.causal_model, "SS", problem.encode_inputs)
