"""The Wilson interval against statsmodels and scipy."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest
from statsmodels.stats.proportion import proportion_confint

from tasks.stats import wilson_interval


@pytest.mark.parametrize("successes, trials", [(0, 1), (1, 1), (0, 50), (50, 50), (37, 50), (3_871, 4_000), (1, 7)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_matches_statsmodels_and_scipy(successes: int, trials: int, confidence: float) -> None:
    low, high = wilson_interval(successes, trials, confidence)
    ref_low, ref_high = proportion_confint(successes, trials, alpha=1 - confidence, method="wilson")
    assert low == pytest.approx(ref_low, abs=1e-12)
    assert high == pytest.approx(ref_high, abs=1e-12)
    ci = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    assert (low, high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert 0.0 <= low <= successes / trials <= high <= 1.0


def test_narrows_with_more_trials() -> None:
    small, large = wilson_interval(90, 100), wilson_interval(900, 1000)
    assert large[1] - large[0] < small[1] - small[0]


@pytest.mark.parametrize(
    "successes, trials, confidence, match",
    [(5, 0, 0.95, "trials >= 1"), (6, 5, 0.95, "successes <= trials"), (-1, 5, 0.95, "0 <= successes"),
     (1, 5, 1.0, "confidence"), (1, 5, 0.0, "confidence"), (1.5, 5, 0.95, "successes must be an int"),
     (True, 5, 0.95, "successes must be an int")],
)
def test_bad_input(successes: object, trials: int, confidence: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        wilson_interval(successes, trials, confidence)  # type: ignore[arg-type]
