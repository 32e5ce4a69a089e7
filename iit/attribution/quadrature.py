"""Quadrature rules on [0, 1] for integrated gradients (captum's names and semantics).

``riemann_trapezoid`` reproduces captum's quirk (nodes ``linspace(0, 1, n)`` spaced 1/(n-1) but
weights 1/n with halves at the ends, so the weights sum to 1 - 1/n); ``trapezoid`` is the
correct composite trapezoid rule (weights 1/(n-1), halves at the ends, sum 1).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from iit.errors import ArgumentError, unknown_name

QuadratureMethod = Literal[
    "gausslegendre",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
    "trapezoid",
]
"""The quadrature rule of integrated gradients: Gauss-Legendre or a Riemann sum (left, right, middle, trapezoid)."""

__all__ = ["QuadratureMethod", "quadrature"]


def quadrature(
    method: QuadratureMethod, n_steps: int, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    """Nodes ``alphas [n_steps]`` in [0, 1] and weights ``[n_steps]`` of a quadrature rule.

    Args:
        method: the rule (see `QuadratureMethod`; captum's names).
        n_steps: number of nodes.
        dtype: dtype of both tensors.

    Returns:
        ``(alphas, weights)``, each ``[n_steps]``.

    Raises:
        ArgumentError: unknown method (with close matches), or too few steps (``gausslegendre``
            needs ``n_steps >= 1``, the others ``n_steps >= 2``).

    Examples:
        >>> from iit.attribution.quadrature import quadrature
        >>> quadrature("trapezoid", 3)
        (tensor([0.0000, 0.5000, 1.0000], dtype=torch.float64), tensor([0.2500, 0.5000, 0.2500], dtype=torch.float64))
        >>> quadrature("riemann_trapezoid", 3)[1].sum()
        tensor(0.6667, dtype=torch.float64)
    """
    valid = get_args(QuadratureMethod)
    if method not in valid:
        raise ArgumentError(unknown_name(method, valid, "IG method"))
    minimum = 1 if method == "gausslegendre" else 2
    if n_steps < minimum:
        raise ArgumentError(f"method {method!r} needs n_steps >= {minimum}, got {n_steps}")
    n = n_steps
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        alphas = torch.as_tensor(0.5 * (nodes + 1.0))
        step = torch.as_tensor(0.5 * weights)
    elif method == "riemann_left":
        alphas = torch.linspace(0.0, 1.0 - 1.0 / n, n, dtype=torch.float64)
        step = torch.full((n,), 1.0 / n, dtype=torch.float64)
    elif method == "riemann_right":
        alphas = torch.linspace(1.0 / n, 1.0, n, dtype=torch.float64)
        step = torch.full((n,), 1.0 / n, dtype=torch.float64)
    elif method == "riemann_middle":
        alphas = torch.linspace(0.5 / n, 1.0 - 0.5 / n, n, dtype=torch.float64)
        step = torch.full((n,), 1.0 / n, dtype=torch.float64)
    elif method == "riemann_trapezoid":
        alphas = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
        step = torch.full((n,), 1.0 / n, dtype=torch.float64)
        step[0] = step[-1] = 0.5 / n
    else:
        alphas = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
        step = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
        step[0] = step[-1] = 0.5 / (n - 1)
    return alphas.to(dtype), step.to(dtype)
