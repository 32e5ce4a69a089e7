"""Price tagging (Boundless DAS, Wu et al. 2023): is ``lower <= amount <= upper``?"""

from __future__ import annotations

import torch
from torch import Tensor

from causal_models.domains import FiniteDomain, RealDomain
from causal_models.model import CausalModel

__all__ = ["price_tagging", "PriceSampler"]


def _ge(a: Tensor, b: Tensor) -> Tensor:
    return a >= b


def _le(a: Tensor, b: Tensor) -> Tensor:
    return a <= b


def _and(a: Tensor, b: Tensor) -> Tensor:
    return a & b


def price_tagging(max_price: float = 10.0) -> CausalModel:
    """``amount, lower, upper -> L = amount >= lower`` (left boundary), ``R = amount <= upper``
    ``-> O = L and R``.

    Inputs are real scalars in ``[0, max_price]``; ``L``, ``R``, ``O`` are booleans.

    Examples
    --------
    >>> import torch
    >>> m = price_tagging()
    >>> t = lambda *v: torch.tensor(v)
    >>> m.run({"amount": t(1.5, 9.0), "lower": t(1.0, 1.0), "upper": t(2.0, 8.0)})["O"].tolist()
    [True, False]
    """
    d = RealDomain((), 0.0, max_price)
    b = FiniteDomain.boolean()
    return CausalModel.from_mapping(
        {
            "amount": ((), None, d),
            "lower": ((), None, d),
            "upper": ((), None, d),
            "L": (("amount", "lower"), _ge, b),
            "R": (("amount", "upper"), _le, b),
            "O": (("L", "R"), _and, b),
        },
        outputs=["O"],
        name="price tagging",
    )


class PriceSampler:
    """The Boundless-DAS prompt distribution, in dollars with 2 decimals:
    width ``~ U(2.50, 7.50)``, ``lower ~ U(0.05, 9.95 - width)``, ``upper = lower + width``,
    ``amount ~ U(0.01, 9.99)``. Use with :func:`price_tagging` (``max_price=10``).
    """

    def __call__(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Draw ``n`` prompts -> ``{"amount", "lower", "upper": [n]}`` (float32)."""
        u = torch.rand(n, 3, generator=generator, dtype=torch.float64)
        width = 2.5 + 5.0 * u[:, 0]
        lower = 0.05 + (9.9 - width) * u[:, 1]
        amount = 0.01 + 9.98 * u[:, 2]

        def cents(v: Tensor) -> Tensor:
            return (v * 100).round() / 100

        lower = cents(lower)
        return {
            "amount": cents(amount).float(),
            "lower": lower.float(),
            "upper": cents(lower + width).float(),
        }
