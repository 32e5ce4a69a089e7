"""Tests of causal_models.data: samplers, counterfactual generator and dataset.

Labels are checked example by example against CausalModel.interchange (itself checked against a
naive evaluator in test_cm_engine.py); balancing and coverage are checked by counting.
"""

import pytest
import torch
from torch.utils.data import DataLoader

from causal_models import (
    BatchShapeError,
    CausalModel,
    CausalModelError,
    CounterfactualBatch,
    CounterfactualConfig,
    CounterfactualDataset,
    CounterfactualGenerator,
    DomainError,
    IndependentSampler,
    RealDomain,
    SamplingError,
    UnknownVariableError,
    standard,
)


def _equal_batches(a: CounterfactualBatch, b: CounterfactualBatch) -> bool:
    same = [torch.equal(a.base[k], b.base[k]) for k in a.base]
    same += [torch.equal(x[k], y[k]) for x, y in zip(a.sources, b.sources, strict=True) for k in x]
    same += [
        torch.equal(getattr(a, f), getattr(b, f))
        for f in ("intervened", "source_index", "base_output", "counterfactual_output")
    ]
    return all(same) and a.variables == b.variables and a.output == b.output


def _row(d: dict, i: int) -> dict:
    return {k: v[i : i + 1] for k, v in d.items()}


def test_labels_match_per_example_interchange_and_base_run() -> None:
    m = standard.digit_sum4(max_digit=5)
    cfg = CounterfactualConfig(("S1", "S2", "y"), n_sources=2, selection="subset")
    batch = CounterfactualGenerator(m, cfg, seed=3).generate(150)
    assert torch.equal(batch.base_output, m.run(batch.base)["O"])
    for i in range(len(batch)):
        assignment = batch.intervened_variables(i)
        ref = m.interchange(_row(batch.base, i), [_row(s, i) for s in batch.sources], assignment)
        assert batch.counterfactual_output[i] == ref["O"][0]
    assert torch.equal(batch.impactful, batch.counterfactual_output != batch.base_output)


def test_same_seed_reproduces_and_other_seed_differs() -> None:
    m = standard.hierarchical_equality(emb_dim=3)
    pool, _ = standard.make_entity_pools(50, 10, 3, seed=0)
    cfg = CounterfactualConfig(("WX", "YZ"), balance="labels")

    def gen(seed):
        return CounterfactualGenerator(m, cfg, standard.EqualityPatternSampler(pool), seed)

    g1, g2 = gen(7), gen(7)
    first = g1.generate(300)
    assert _equal_batches(first, g2.generate(300))
    assert _equal_batches(g1.generate(300), g2.generate(300))
    assert not _equal_batches(first, g1.generate(300))
    assert not _equal_batches(first, gen(8).generate(300))


def test_label_balancing_equalises_boolean_labels() -> None:
    m = standard.hierarchical_equality(emb_dim=2)
    pool, _ = standard.make_entity_pools(100, 10, 2, seed=1)
    sampler = standard.EqualityPatternSampler(pool, balanced=False)  # equalities are rare
    plain = CounterfactualGenerator(m, CounterfactualConfig(("WX", "YZ")), sampler, seed=0)
    frac_plain = plain.generate(4000).counterfactual_output.float().mean().item()
    assert frac_plain > 0.9  # nearly always "both different" -> O True
    cfg = CounterfactualConfig(("WX", "YZ"), balance="labels")
    bal = CounterfactualGenerator(m, cfg, standard.EqualityPatternSampler(pool), seed=0)
    out = bal.generate(4001).counterfactual_output
    assert abs(int(out.sum()) - 2000) <= 1


def test_label_balancing_over_many_classes_and_a_chosen_subset() -> None:
    m = standard.digit_sum(max_digit=2)  # O in 0..6
    cfg = CounterfactualConfig(("S", "z"), balance="labels")
    out = CounterfactualGenerator(m, cfg, seed=0).generate(7 * 300 + 3).counterfactual_output
    counts = torch.bincount(out, minlength=7)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 2103
    cfg = CounterfactualConfig(("S",), balance="labels", balance_classes=(0, 6))
    out = CounterfactualGenerator(m, cfg, seed=0).generate(200).counterfactual_output
    assert torch.bincount(out, minlength=7).tolist() == [100, 0, 0, 0, 0, 0, 100]


def test_unreachable_class_raises_with_counts() -> None:
    m = standard.digit_sum(max_digit=9)
    low = IndependentSampler(
        m, {v: (lambda n, g: torch.randint(0, 2, (n,), generator=g)) for v in "xyz"}
    )
    cfg = CounterfactualConfig(("S",), balance="labels", max_oversample=4)
    with pytest.raises(SamplingError, match=r"could not balance labels of 'O'.*short.*27: 0"):
        CounterfactualGenerator(m, cfg, low, seed=0).generate(280)


def test_selection_one_covers_each_variable_evenly() -> None:
    m = standard.digit_sum4(max_digit=9)
    cands = ("S1", "S2", "w", "z")
    b = CounterfactualGenerator(m, CounterfactualConfig(cands), seed=0).generate(8000)
    assert (b.intervened.sum(1) == 1).all()
    freq = b.intervened.float().mean(0)
    assert torch.allclose(freq, torch.full((4,), 0.25), atol=0.02)
    assert (b.source_index[b.intervened] == 0).all() and (b.source_index[~b.intervened] == -1).all()


def test_selection_subset_and_all_and_source_assignment() -> None:
    m = standard.digit_sum4(max_digit=9)
    cands = ("S1", "S2", "z")
    cfg = CounterfactualConfig(cands, n_sources=2, selection="subset")
    b = CounterfactualGenerator(m, cfg, seed=0).generate(8000)
    assert (b.intervened.sum(1) >= 1).all()
    expected = 0.5 / (1 - 0.5**3)  # P(chosen | at least one chosen)
    assert torch.allclose(b.intervened.float().mean(0), torch.full((3,), expected), atol=0.02)
    slots = b.source_index[b.intervened]
    assert abs((slots == 1).float().mean().item() - 0.5) < 0.02
    cfg = CounterfactualConfig(cands, n_sources=2, selection="all", source_assignment="by_position")
    b = CounterfactualGenerator(m, cfg, seed=0).generate(50)
    assert b.intervened.all() and (b.source_index == torch.tensor([0, 1, 0])).all()


def test_dataset_getitem_collate_and_batches() -> None:
    m = standard.pointer_value()
    cfg = CounterfactualConfig(("TL", "TR", "BL", "BR"))
    ds = CounterfactualDataset(m, 100, cfg, seed=5)
    ref = CounterfactualGenerator(m, cfg, seed=5).generate(100)
    assert len(ds) == 100 and _equal_batches(ds.data, ref)
    ex = ds[7]
    assert ex.intervened.shape == (4,) and ex.base["TL"].shape == () and ex.output == "O"
    loader = DataLoader(ds, batch_size=32, collate_fn=CounterfactualDataset.collate)
    first = next(iter(loader))
    assert _equal_batches(first, ds.data.select(torch.arange(32)))
    parts = list(ds.batches(30))
    assert [len(p) for p in parts] == [30, 30, 30, 10]
    assert _equal_batches(CounterfactualBatch.cat(parts), ds.data)
    shuffled = CounterfactualBatch.cat(list(ds.batches(30, shuffle=True, seed=1)))
    assert sorted(shuffled.base["TL"].tolist()) == sorted(ds.data.base["TL"].tolist())
    assert not torch.equal(shuffled.base["TL"], ds.data.base["TL"])
    assert _equal_batches(ds.data.to("cpu"), ds.data)
    with pytest.raises(IndexError):
        ds[100]


def test_vector_valued_inputs_are_stacked_by_collate() -> None:
    m = standard.hierarchical_equality(emb_dim=3)
    pool, _ = standard.make_entity_pools(20, 5, 3)
    ds = CounterfactualDataset(
        m, 10, CounterfactualConfig(("WX",)), standard.EqualityPatternSampler(pool), seed=0
    )
    batch = CounterfactualDataset.collate([ds[i] for i in range(10)])
    assert batch.base["W"].shape == (10, 3) and _equal_batches(batch, ds.data)


def test_independent_sampler_uses_given_functions() -> None:
    m = standard.digit_sum()
    s = IndependentSampler(m, {"x": lambda n, g: torch.full((n,), 7)})
    out = s(1000, torch.Generator().manual_seed(0))
    assert (out["x"] == 7).all() and set(out["y"].unique().tolist()) == set(range(10))
    with pytest.raises(UnknownVariableError, match="did you mean 'x'"):
        IndependentSampler(m, {"xx": lambda n, g: torch.zeros(n)})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"variables": ()}, "non-empty tuple"),
        ({"variables": "S"}, "non-empty tuple"),
        ({"variables": ("S", "S")}, "repeat"),
        ({"variables": ("S",), "selection": "some"}, "selection='some' is not one of"),
        ({"variables": ("S",), "balance": "yes"}, "balance='yes'"),
        ({"variables": ("S",), "source_assignment": "x"}, "source_assignment"),
        ({"variables": ("S",), "n_sources": 0}, "n_sources must be an int >= 1"),
        ({"variables": ("S",), "max_oversample": 0}, "max_oversample"),
    ],
)
def test_invalid_configs(kwargs, match) -> None:
    with pytest.raises(CausalModelError, match=match):
        CounterfactualConfig(**kwargs)


def test_bad_samplers_are_reported() -> None:
    m = standard.digit_sum()
    cfg = CounterfactualConfig(("S",))
    short = IndependentSampler(m, {"x": lambda n, g: torch.zeros(n + 1, dtype=torch.long)})
    with pytest.raises(BatchShapeError, match="sampled base: 'y' has batch size 10 but 'x' has 11"):
        CounterfactualGenerator(m, cfg, short).generate(10)
    wrong = IndependentSampler(
        m, {v: (lambda n, g: torch.zeros(n + 1, dtype=torch.long)) for v in "xyz"}
    )
    with pytest.raises(SamplingError, match="returned batch size 11, asked for 10"):
        CounterfactualGenerator(m, cfg, wrong).generate(10)
    out = IndependentSampler(m, {"z": lambda n, g: torch.full((n,), 10)})
    with pytest.raises(DomainError, match=r"sampled base 'z': value 10 \(row 0\) is outside"):
        CounterfactualGenerator(m, cfg, out).generate(10)


def test_generator_errors() -> None:
    with pytest.raises(UnknownVariableError, match="did you mean 'S'"):
        CounterfactualGenerator(standard.digit_sum(), CounterfactualConfig(("SS",)))
    two = standard.digit_sum4(outputs=("O", "S2"))
    with pytest.raises(CausalModelError, match="choose one with config.output"):
        CounterfactualGenerator(two, CounterfactualConfig(("S1",)))
    with pytest.raises(UnknownVariableError, match="unknown output 'S1'"):
        CounterfactualGenerator(two, CounterfactualConfig(("S1",), output="S1"))
    b = CounterfactualGenerator(two, CounterfactualConfig(("S1",), output="S2"), seed=0).generate(5)
    assert b.output == "S2"
    real = RealDomain((), 0.0, 1.0)
    identity = CausalModel.from_mapping({"a": ((), None, real), "O": (("a",), abs, real)}, ["O"])
    with pytest.raises(SamplingError, match="needs a finite output domain"):
        CounterfactualGenerator(identity, CounterfactualConfig(("a",), balance="labels"))
    with pytest.raises(SamplingError, match="balance class 99 is not in the domain"):
        CounterfactualGenerator(
            standard.digit_sum(),
            CounterfactualConfig(("S",), balance="labels", balance_classes=(99,)),
        )
    with pytest.raises(CausalModelError, match="n must be a positive int"):
        CounterfactualGenerator(standard.digit_sum(), CounterfactualConfig(("S",))).generate(0)
