"""Price tagging (Boundless DAS, Wu et al. 2023): is ``lower <= amount <= upper``?"""

from __future__ import annotations

import torch
from torch import Tensor

from causal_models.domains import FiniteDomain, RealDomain
from causal_models.model import CausalModel

__all__ = ["price_tagging", "PriceSampler"]


def _ge(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise ``a >= b``."""
    return a >= b


def _le(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise ``a <= b``."""
    return a <= b


def _and(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise ``a & b``."""
    return a & b


def price_tagging(max_price: float = 10.0) -> CausalModel:
    """``amount, lower, upper -> L = amount >= lower``, ``R = amount <= upper`` ``-> O = L and R``.

    Inputs are real scalars in ``[0, max_price]`` (values ``[batch]``); ``L`` (left boundary), ``R``
    (right boundary) and ``O`` are booleans ``[batch]``.

    Args:
        max_price: Upper bound of the prices.

    Returns:
        The causal model ``"price tagging"``.

    Raises:
        DomainError: ``max_price`` is negative or not finite.

    Examples:
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
    """The Boundless-DAS prompt distribution, in dollars with 2 decimals.

    Width ``~ U(2.50, 7.50)``, ``lower ~ U(0.05, 9.95 - width)``, ``upper = lower + width``,
    ``amount ~ U(0.01, 9.99)``. Use with `price_tagging` (``max_price=10``).

    Raises:
        TypeError: any argument (it takes none).

    Examples:
        >>> import torch
        >>> prompts = PriceSampler()(3, torch.Generator().manual_seed(0))
        >>> prompts["amount"]
        tensor([4.5900, 7.9100, 5.8100])
        >>> prompts["lower"], prompts["upper"]
        (tensor([1.8500, 1.8500, 2.3300]), tensor([9.2000, 8.9500, 5.7200]))
        >>> price_tagging().run(prompts)["O"].tolist()
        [True, True, False]
    """

    def __call__(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Draw ``n`` prompts.

        Args:
            n: Number of examples.
            generator: The random generator to draw from.

        Returns:
            ``{"amount": [n], "lower": [n], "upper": [n]}`` (float32, whole cents).
        """
        u = torch.rand(n, 3, generator=generator, dtype=torch.float64)
        width = 2.5 + 5.0 * u[:, 0]
        lower = 0.05 + (9.9 - width) * u[:, 1]
        amount = 0.01 + 9.98 * u[:, 2]

        def cents(v: Tensor) -> Tensor:
            """Round to whole cents."""
            return (v * 100).round() / 100

        lower = cents(lower)
        return {
            "amount": cents(amount).float(),
            "lower": lower.float(),
            "upper": cents(lower + width).float(),
        }
