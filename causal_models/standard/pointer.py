"""Pointer-value retrieval (synthetic MNIST-PVR, IIT paper / cybershiptrooper ``mnist_pvr``)."""

from __future__ import annotations

import torch
from torch import Tensor

from causal_models.domains import IntegerRange
from causal_models.model import CausalModel

__all__ = ["pointer_value", "POINTER_MAP"]

#: Which quadrant the top-left digit points to: 0..3 -> TR, 4..6 -> BL, 7..9 -> BR.
POINTER_MAP: dict[int, str] = {
    **dict.fromkeys(range(4), "TR"),
    **dict.fromkeys(range(4, 7), "BL"),
    **dict.fromkeys(range(7, 10), "BR"),
}


def _retrieve(tl: Tensor, tr: Tensor, bl: Tensor, br: Tensor) -> Tensor:
    return torch.where(tl <= 3, tr, torch.where(tl <= 6, bl, br))


def pointer_value() -> CausalModel:
    """``TL, TR, BL, BR`` in ``0..9`` -> ``O`` = the digit in quadrant ``POINTER_MAP[TL]``.

    Examples
    --------
    >>> import torch
    >>> m = pointer_value()
    >>> t = lambda *v: torch.tensor(v)
    >>> m.run({"TL": t(2, 5, 8), "TR": t(1, 1, 1), "BL": t(2, 2, 2), "BR": t(3, 3, 3)})["O"].tolist()
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
