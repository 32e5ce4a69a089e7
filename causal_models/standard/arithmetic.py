"""Digit-sum arithmetic models (the arithmetic task of the KarelDO/IIT-Pytorch repository)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from causal_models.domains import IntegerRange
from causal_models.errors import CausalModelError
from causal_models.model import CausalModel

__all__ = ["digit_sum", "digit_sum4"]


def _add(a: Tensor, b: Tensor) -> Tensor:
    """``a + b`` (the mechanism of every sum)."""
    return a + b


def _check_max(max_digit: int) -> None:
    """Raise `CausalModelError` unless ``max_digit`` is an int >= 0."""
    if isinstance(max_digit, bool) or not isinstance(max_digit, int) or max_digit < 0:
        raise CausalModelError(f"max_digit must be an int >= 0, got {max_digit!r}")


def digit_sum(max_digit: int = 9) -> CausalModel:
    """``x, y, z -> S = x + y -> O = S + z`` with digits ``0..max_digit``.

    Variables: inputs ``x``, ``y``, ``z`` in ``IntegerRange(0, max_digit + 1)``; ``S`` in
    ``IntegerRange(0, 2 * max_digit + 1)``; output ``O`` in ``IntegerRange(0, 3 * max_digit + 1)``.

    Args:
        max_digit: Digits are ``0..max_digit``.

    Returns:
        The causal model ``"digit sum"``.

    Raises:
        CausalModelError: ``max_digit`` is not an int >= 0.

    Examples:
        >>> import torch
        >>> m = digit_sum()
        >>> t = torch.tensor
        >>> m.run({"x": t([1]), "y": t([2]), "z": t([3])})["O"].item()
        6
    """
    _check_max(max_digit)
    d = IntegerRange(0, max_digit + 1)
    return CausalModel.from_mapping(
        {
            "x": ((), None, d),
            "y": ((), None, d),
            "z": ((), None, d),
            "S": (("x", "y"), _add, IntegerRange(0, 2 * max_digit + 1)),
            "O": (("S", "z"), _add, IntegerRange(0, 3 * max_digit + 1)),
        },
        outputs=["O"],
        name="digit sum",
    )


def digit_sum4(max_digit: int = 9, outputs: Sequence[str] = ("O",)) -> CausalModel:
    """The four-input variant: ``S1 = w + x``, ``S2 = S1 + y``, ``O = S2 + z``.

    Args:
        max_digit: Digits are ``0..max_digit``.
        outputs: Output variables; ``("O", "S2")`` gives a two-task setting (the full sum and the
            partial sum of the first three digits).

    Returns:
        The causal model ``"digit sum (4 inputs)"``.

    Raises:
        CausalModelError: ``max_digit`` is not an int >= 0.
        UnknownVariableError: an output is not a variable.
        GraphError: ``outputs`` is empty or repeats a name.

    Examples:
        >>> import torch
        >>> m = digit_sum4(outputs=("O", "S2"))
        >>> t = torch.tensor
        >>> values = m.run({"w": t([1]), "x": t([2]), "y": t([3]), "z": t([4])})
        >>> values["S2"].item(), values["O"].item()
        (6, 10)
    """
    _check_max(max_digit)
    d = IntegerRange(0, max_digit + 1)
    return CausalModel.from_mapping(
        {
            "w": ((), None, d),
            "x": ((), None, d),
            "y": ((), None, d),
            "z": ((), None, d),
            "S1": (("w", "x"), _add, IntegerRange(0, 2 * max_digit + 1)),
            "S2": (("S1", "y"), _add, IntegerRange(0, 3 * max_digit + 1)),
            "O": (("S2", "z"), _add, IntegerRange(0, 4 * max_digit + 1)),
        },
        outputs=list(outputs),
        name="digit sum (4 inputs)",
    )
