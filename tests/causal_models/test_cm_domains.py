"""Tests of causal_models.domains against brute-force membership in Python."""

import pytest
import torch

from causal_models import DomainError, FiniteDomain, IntegerRange, RealDomain, SamplingError


def test_integer_range_contains_matches_python_range() -> None:
    d = IntegerRange(-3, 4)
    values = torch.arange(-6, 8)
    expected = [v in range(-3, 4) for v in values.tolist()]
    assert d.contains(values).tolist() == expected
    assert d.size == 7 and d.values == tuple(range(-3, 4))
    assert d.tensor().tolist() == list(range(-3, 4))


def test_integer_range_rejects_non_integral_floats() -> None:
    assert IntegerRange(0, 5).contains(torch.tensor([1.0, 1.5, 4.0])).tolist() == [
        True,
        False,
        True,
    ]


def test_finite_domain_membership_and_index_of_match_python_lists() -> None:
    vals = (3, -1, 7)
    d = FiniteDomain(vals)
    x = torch.tensor([7, 3, 0, -1, 8])
    assert d.contains(x).tolist() == [v in vals for v in x.tolist()]
    y = torch.tensor([7, 3, -1])
    assert d.index_of(y).tolist() == [vals.index(v) for v in y.tolist()]
    assert d.dtype == torch.int64 and d.size == 3


def test_boolean_domain() -> None:
    d = FiniteDomain.boolean()
    assert d.dtype == torch.bool and d.values == (False, True)
    assert d.index_of(torch.tensor([True, False, True])).tolist() == [1, 0, 1]
    assert d.contains(torch.tensor([True, False])).all()
    assert repr(d) == "FiniteDomain.boolean()"


def test_float_finite_domain_compares_values_across_dtypes() -> None:
    d = FiniteDomain((0.5, 1.0))
    assert d.dtype == torch.float32
    assert d.contains(torch.tensor([0, 1])).tolist() == [False, True]
    assert d.contains(torch.tensor([0.5, 0.75])).tolist() == [True, False]


def test_real_domain_contains_bounds_and_finiteness_per_row() -> None:
    d = RealDomain((2,), -1.0, 1.0)
    x = torch.tensor([[0.0, 1.0], [0.0, 1.5], [float("nan"), 0.0], [-1.0, -1.0]])
    assert d.contains(x).tolist() == [True, False, False, True]
    unbounded = RealDomain((2,))
    assert unbounded.contains(torch.tensor([[1e30, -1e30], [float("inf"), 0]])).tolist() == [
        True,
        False,
    ]


@pytest.mark.parametrize(
    "domain", [IntegerRange(2, 9), FiniteDomain((1, 4, 9)), RealDomain((3,), -2.0, 5.0)]
)
def test_samples_lie_in_the_domain_and_are_seeded(domain) -> None:
    a = domain.sample(500, torch.Generator().manual_seed(3))
    b = domain.sample(500, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert a.shape == (500, *domain.shape) and a.dtype == domain.dtype
    assert domain.contains(a).all()


def test_uniform_sampling_covers_every_finite_value_evenly() -> None:
    d = FiniteDomain((1, 4, 9))
    x = d.sample(30000, torch.Generator().manual_seed(0))
    freq = torch.stack([(x == v).float().mean() for v in (1, 4, 9)])
    assert torch.allclose(freq, torch.full((3,), 1 / 3), atol=0.02)


def test_unbounded_real_domain_cannot_be_sampled() -> None:
    with pytest.raises(SamplingError, match="unbounded"):
        RealDomain((2,)).sample(3)


def test_validate_reports_row_value_shape_and_dtype() -> None:
    d = IntegerRange(0, 10)
    with pytest.raises(DomainError, match=r"value 12 \(row 2\) is outside IntegerRange\(0, 10\)"):
        d.validate(torch.tensor([1, 2, 12]), "input 'x'")
    with pytest.raises(DomainError, match=r"input 'x': expected shape \[batch\]"):
        d.validate(torch.tensor([[1, 2]]), "input 'x'")
    with pytest.raises(DomainError, match="dtype torch.float32 does not fit"):
        d.validate(torch.tensor([1.0]), "input 'x'")
    with pytest.raises(DomainError, match="expected a torch.Tensor"):
        d.validate([1, 2], "input 'x'")
    with pytest.raises(DomainError, match="dtype torch.int64 does not fit"):
        FiniteDomain.boolean().validate(torch.tensor([0, 1]), "v")
    with pytest.raises(DomainError, match=r"expected shape \[batch, 3\]"):
        RealDomain((3,)).contains(torch.zeros(4, 2))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: FiniteDomain(()), "at least one value"),
        (lambda: FiniteDomain((1, 1)), "distinct"),
        (lambda: FiniteDomain((True, 1)), "mixes bools"),
        (lambda: FiniteDomain(("a",)), "bool, int or float"),
        (lambda: IntegerRange(3, 3), "low < high"),
        (lambda: IntegerRange(0, 2.5), "must be ints"),
        (lambda: RealDomain((2,), 1.0, 0.0), "low <= high"),
        (lambda: RealDomain((0,)), "positive ints"),
        (lambda: RealDomain((), 0.0, float("inf")), "finite"),
        (lambda: RealDomain((), float_dtype=torch.int64), "floating"),
    ],
)
def test_invalid_domains_are_rejected(make, match: str) -> None:
    with pytest.raises(DomainError, match=match):
        make()
