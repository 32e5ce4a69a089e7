"""Pointer-value retrieval (the synthetic MNIST-PVR task of the IIT paper, Geiger et al. 2022)."""

from __future__ import annotations

import torch
from torch import Tensor

from causal_models.domains import IntegerRange
from causal_models.model import CausalModel

__all__ = ["pointer_value", "POINTER_MAP"]

POINTER_MAP: dict[int, str] = {
    **dict.fromkeys(range(4), "TR"),
    **dict.fromkeys(range(4, 7), "BL"),
    **dict.fromkeys(range(7, 10), "BR"),
}
"""Which quadrant the top-left digit points to: 0..3 -> TR, 4..6 -> BL, 7..9 -> BR."""


def _retrieve(tl: Tensor, tr: Tensor, bl: Tensor, br: Tensor) -> Tensor:
    """The digit in the quadrant ``tl`` points to (``POINTER_MAP``); all ``[batch]``."""
    return torch.where(tl <= 3, tr, torch.where(tl <= 6, bl, br))


def pointer_value() -> CausalModel:
    """``TL, TR, BL, BR`` in ``0..9`` -> ``O`` = the digit in quadrant ``POINTER_MAP[TL]``.

    Returns:
        The causal model ``"pointer-value retrieval"``; every variable is ``IntegerRange(0, 10)``,
        values ``[batch]``.

    Raises:
        TypeError: any argument (it takes none).

    Examples:
        >>> import torch
        >>> m = pointer_value()
        >>> t = lambda *v: torch.tensor(v)
        >>> inputs = {"TL": t(2, 5, 8), "TR": t(1, 1, 1), "BL": t(2, 2, 2), "BR": t(3, 3, 3)}
        >>> m.run(inputs)["O"].tolist()  # TL points to TR, BL, BR
        [1, 2, 3]
    """
    d = IntegerRange(0, 10)
    return CausalModel.from_mapping(
        {
            "TL": ((), None, d),
            "TR": ((), None, d),
            "BL": ((), None, d),
            "BR": ((), None, d),
            "O": (("TL", "TR", "BL", "BR"), _retrieve, d),
        },
        outputs=["O"],
        name="pointer-value retrieval",
    )
