"""Confidence intervals for accuracies (IIA) measured on ``n`` held-out pairs."""

from __future__ import annotations

import math
from statistics import NormalDist

from iit.errors import ArgumentError

__all__ = ["wilson_interval"]


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion ``successes / trials``.

    With ``z`` the two-sided normal quantile of ``confidence`` and ``p = successes / trials``:

    ```text
    centre = (p + z^2 / (2n)) / (1 + z^2 / n)
    half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))
    ```

    Unlike the normal (Wald) interval it stays inside ``[0, 1]`` and is not degenerate at
    ``p = 0`` or ``p = 1`` (the IIA of a well-trained network).

    Args:
        successes: number of correct pairs, ``0 <= successes <= trials``.
        trials: number of pairs, ``>= 1``.
        confidence: coverage in ``(0, 1)``.

    Returns:
        ``(low, high)`` with ``0 <= low <= successes / trials <= high <= 1``.

    Raises:
        ArgumentError: counts that are not integers with ``0 <= successes <= trials`` and
            ``trials >= 1``, or a confidence outside ``(0, 1)``.

    Examples:
        >>> low, high = wilson_interval(95, 100)
        >>> round(low, 4), round(high, 4)
        (0.8882, 0.9785)
    """
    for name, value in (("successes", successes), ("trials", trials)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgumentError(f"{name} must be an int, got {value!r}")
    if trials < 1 or not 0 <= successes <= trials:
        raise ArgumentError(f"need trials >= 1 and 0 <= successes <= trials, got successes={successes}, trials={trials}")
    if not 0.0 < confidence < 1.0:
        raise ArgumentError(f"confidence must be in (0, 1), got {confidence}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    n, p = trials, successes / trials
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exactly 0 / 1 at the ends
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high
