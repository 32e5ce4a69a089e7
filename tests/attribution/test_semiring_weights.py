"""The cache of weight transforms: hits, invalidation by version and by the parameter's death,
the byte limit, and semiring results that do not depend on it."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

from iit.attribution.semiring import SemiringConfig, semiring_backward, weights
from iit.attribution.semiring.weights import cached_bytes, cached_transform, clear_weight_cache


@pytest.fixture(autouse=True)
def _empty_cache():
    clear_weight_cache()
    yield
    clear_weight_cache()


def test_hits_views_and_version_invalidation() -> None:
    p = nn.Parameter(torch.randn(3, 4))
    calls = []

    def fn(t: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return t.abs()

    first = cached_transform("abs", p.t(), fn)
    assert cached_transform("abs", p.t(), fn) is first and len(calls) == 1
    torch.testing.assert_close(first, p.t().abs(), rtol=0, atol=0)
    other_view = cached_transform("abs", p, fn)  # another view of the same parameter
    assert other_view.shape == (3, 4) and len(calls) == 2
    with torch.no_grad():
        p.mul_(-2.0)  # an in-place update bumps the version
    again = cached_transform("abs", p.t(), fn)
    assert len(calls) == 3
    torch.testing.assert_close(again, p.t().abs(), rtol=0, atol=0)
    plain = torch.randn(3, 4)  # not a parameter: never cached
    cached_transform("abs", plain, fn)
    cached_transform("abs", plain, fn)
    assert len(calls) == 5


def test_entries_die_with_their_parameter_and_respect_the_limit(monkeypatch) -> None:
    p = nn.Parameter(torch.randn(8, 8))
    cached_transform("abs", p, torch.abs)
    assert cached_bytes() == 8 * 8 * 4
    del p
    gc.collect()
    assert cached_bytes() == 0
    monkeypatch.setattr(weights, "CACHE_LIMIT_BYTES", 100)
    q = nn.Parameter(torch.randn(8, 8))
    assert cached_transform("abs", q, torch.abs) is not cached_transform("abs", q, torch.abs)
    assert cached_bytes() == 0


@pytest.mark.parametrize(("semiring", "granularity"), [("entropy", "scalar"), ("max_product", "op")])
def test_results_follow_an_in_place_weight_update(semiring: str, granularity: str) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    config = SemiringConfig(semiring, granularity, record_path=False)
    semiring_backward(net, x, 1, config)  # fills the cache
    with torch.no_grad():
        net[0].weight.mul_(-0.5)
    cached = semiring_backward(net, x, 1, config).values["input"]
    clear_weight_cache()
    fresh = semiring_backward(net, x, 1, config).values["input"]
    torch.testing.assert_close(cached, fresh, rtol=0, atol=0)
