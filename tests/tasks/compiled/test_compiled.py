"""Compiled RASP programs (tracr): the PyTorch conversion equals tracr's model on every input,
and each variable's true alignment (its labelled residual dims where they are written) has IIA
1.0, while the same dims one point earlier score lower."""

from __future__ import annotations

import itertools

import pytest

pytest.importorskip("tracr")

from tasks.compiled import PROGRAMS, compile_program  # noqa: E402
from tasks.compiled.alignment import interchange_iia, residual_points, true_alignment  # noqa: E402
from tasks.compiled.convert import conversion_mismatches  # noqa: E402

pytestmark = pytest.mark.slow
_CACHE: dict = {}


def compiled(name: str):
    if name not in _CACHE:
        _CACHE[name] = compile_program(PROGRAMS[name])
    return _CACHE[name]


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_conversion_equals_tracr_on_every_input(name: str) -> None:
    c = compiled(name)
    assert conversion_mismatches(c) == 0
    # and the decoded outputs equal tracr's own apply() on a few inputs
    valid = c.spec.valid or (lambda s: True)
    seqs = [list(s) for s in itertools.product(c.spec.vocab, repeat=c.spec.max_seq_len) if valid(list(s))][:5]
    ours = c.decode(c.module(c.encode(seqs)))
    for seq, out in zip(seqs, ours):
        ref = c.tracr_model.apply(["BOS", *seq]).decoded[1:]
        assert out == ref if c.spec.categorical else out == pytest.approx(ref, abs=1e-4)


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_true_alignment_has_iia_one_and_earlier_points_score_lower(name: str) -> None:
    c = compiled(name)
    impactful_variables = 0
    for variable in c.variables():
        true = true_alignment(c, variable)
        score = interchange_iia(c, true, n_pairs=128)
        assert score.iia == 1.0, (variable, score)
        if score.n_impactful == 0:
            continue  # constant given the length (reverse's length / opp_idx): nothing to tell apart
        impactful_variables += 1
        assert score.iia_impactful == 1.0
        points = residual_points(c)
        earlier = interchange_iia(c, true, point=points[points.index(true.point) - 1], n_pairs=128)
        assert earlier.iia < 1.0 and earlier.iia_impactful == 0.0
    assert impactful_variables >= 1


def test_search_finds_sorts_target_position_where_it_is_written() -> None:
    """``sort``'s intermediate ``target_pos``: DAS of its size scores 1.0 at the true point only;
    before it is written and after it is read, lower."""
    from iit.search import DAS, FitSettings, SearchSettings, search
    from tasks.compiled.search import residual_places, search_problem

    c = compiled("sort")
    variable = next(v for v in c.variables() if v.startswith("target_pos"))
    true = true_alignment(c, variable)
    problem, splits = search_problem(c, variable, sizes=(512, 256, 512))
    result = search(problem, splits, residual_places(c), [DAS()], [len(true.dims)],
                    SearchSettings(fit=FitSettings(epochs=6, batch_size=64, lr=0.01)), progress=False)
    table = result.table.set_index("place")
    assert table["iia_test"].idxmax() == true.point
    assert table.loc[true.point, "iia_test"] == 1.0
    others = table.drop(index=true.point)["iia_test"]
    assert (others < 0.95).all(), others
