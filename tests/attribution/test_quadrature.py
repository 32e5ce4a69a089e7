"""Quadrature rules against captum's approximation_parameters and exact integrals."""

from __future__ import annotations

import pytest
import torch
from captum.attr._utils.approximation_methods import approximation_parameters

from iit.attribution import quadrature

CAPTUM = ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]


@pytest.mark.parametrize("method", CAPTUM)
@pytest.mark.parametrize("n", [2, 7, 50])
def test_nodes_and_weights_match_captum(method: str, n: int) -> None:
    step_sizes, alphas = approximation_parameters(method)
    ours_alpha, ours_weight = quadrature(method, n)
    torch.testing.assert_close(
        ours_alpha, torch.tensor(alphas(n), dtype=torch.float64), atol=1e-7, rtol=0
    )
    torch.testing.assert_close(
        ours_weight, torch.tensor(step_sizes(n), dtype=torch.float64), atol=1e-12, rtol=0
    )


def test_exactness() -> None:
    alpha, weight = quadrature("gausslegendre", 4)  # exact for degree <= 7
    assert float((weight * alpha**7).sum()) == pytest.approx(1 / 8, abs=1e-14)
    alpha, weight = quadrature("trapezoid", 9)  # exact for linear integrands, weights sum to 1
    assert float(weight.sum()) == pytest.approx(1.0) and float(
        (weight * alpha).sum()
    ) == pytest.approx(0.5)
    _, quirk = quadrature("riemann_trapezoid", 9)
    assert float(quirk.sum()) == pytest.approx(1 - 1 / 9)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n_steps >= 2"):
        quadrature("riemann_left", 1)
    with pytest.raises(ValueError, match="riemann_middle"):
        quadrature("riemann_midle", 5)  # type: ignore[arg-type]
