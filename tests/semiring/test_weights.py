"""The cache of weight transforms: hits, invalidation by version and by the parameter's death,
the byte limit, and semiring results that do not depend on it."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

from iit.semiring import SemiringBackprop, SemiringCache, SemiringConfig, semiring_backward
from iit.semiring.weights import WeightCache, cached_transform, use_weight_cache


def test_no_cache_is_active_by_default_and_a_call_keeps_nothing() -> None:
    p = nn.Parameter(torch.randn(3, 4))
    assert cached_transform("abs", p, torch.abs) is not cached_transform("abs", p, torch.abs)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    x = torch.randn(2, 4)
    cache = SemiringCache()
    semiring_backward(net, x, 1, SemiringConfig("entropy"), cache=cache)
    assert len(cache.weights) > 0 and cache.weights.nbytes > 0
    with pytest.raises(ValueError, match="limit_bytes"):
        WeightCache(-1)


def test_backprop_owns_its_cache_and_releases_it() -> None:
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    x = torch.randn(2, 4)
    method = SemiringBackprop(net, SemiringConfig("entropy"))
    first = method.attribute(x, 1)
    held = method.cache.weights
    assert len(held) == 4  # |W| and -|W| log |W| of two weight matrices
    torch.testing.assert_close(method.attribute(x, 1), first, rtol=0, atol=0)
    method.clear_cache()
    assert len(held) == 0
    method.attribute(x, 1)
    ref = weakref.ref(held)
    del method, held
    gc.collect()
    assert ref() is None  # released with its owner


def test_hits_views_and_version_invalidation() -> None:
    cache = WeightCache()
    with use_weight_cache(cache):
        _hits_views_and_version_invalidation()


def _hits_views_and_version_invalidation() -> None:
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


def test_entries_die_with_their_parameter_and_respect_the_limit() -> None:
    cache = WeightCache()
    p = nn.Parameter(torch.randn(8, 8))
    cache.get("abs", p, torch.abs)
    assert cache.nbytes == 8 * 8 * 4
    del p
    gc.collect()
    assert cache.nbytes == 0
    small = WeightCache(limit_bytes=100)
    q = nn.Parameter(torch.randn(8, 8))
    assert small.get("abs", q, torch.abs) is not small.get("abs", q, torch.abs)
    assert small.nbytes == 0


@pytest.mark.parametrize(("semiring", "granularity"), [("entropy", "scalar"), ("max_product", "op")])
def test_results_follow_an_in_place_weight_update(semiring: str, granularity: str) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    config = SemiringConfig(semiring, granularity, record_path=False)
    cache = SemiringCache()
    semiring_backward(net, x, 1, config, cache=cache)  # fills the cache
    with torch.no_grad():
        net[0].weight.mul_(-0.5)
    cached = semiring_backward(net, x, 1, config, cache=cache).values["input"]
    fresh = semiring_backward(net, x, 1, config).values["input"]
    torch.testing.assert_close(cached, fresh, rtol=0, atol=0)


def test_compiled_walks_are_bounded_least_recently_used_out() -> None:
    """The program store of one owner keeps at most ``max_programs`` (records counted here
    with stand-in programs: no compilation)."""
    from iit.semiring.compiled_walk import CompiledWalks

    recorded: list[str] = []

    def record(name: str):
        def make():
            recorded.append(name)
            return name

        return make

    walks = CompiledWalks(max_programs=2)
    for key in ("a", "b", "a", "c", "b"):
        walks.program((key,), record(key))
    # a, b recorded; a reused (most recent); c evicts b; b recorded again, evicting a
    assert recorded == ["a", "b", "c", "b"] and len(walks) == 2 and walks.last() == "b"
    with pytest.raises(ValueError, match="max_programs"):
        CompiledWalks(0)
