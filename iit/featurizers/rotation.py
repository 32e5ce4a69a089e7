"""The learned rotation featurizer (DAS): features are coordinates in an orthonormal basis.

With ``W`` (``[d, k]``, orthonormal columns, an :class:`iit.learned.Rotation`), ``encode(h) =
h @ W`` and ``decode(f) = f @ W^T``. ``k = d`` is a full rotation (no reconstruction error);
``k < d`` a low-rank one, whose error ``h - h W W^T`` (the part outside the subspace) is kept.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from iit.errors import InterventionError
from iit.featurizers.base import Featurizer, register_featurizer
from iit.learned import Rotation

__all__ = ["RotationFeaturizer"]


@register_featurizer
class RotationFeaturizer(Featurizer):
    """Features = ``h @ W`` for a trainable orthonormal ``W`` ``[d, k]``.

    Args:
        d: width of the hidden state.
        k: number of features (default ``d``: a full rotation).
        rotation: use this :class:`~iit.learned.Rotation` (shared with other interventions)
            instead of a new one; then ``d`` and ``k`` must match it.
        generator: RNG of a new rotation's initialisation.

    Raises:
        InterventionError: ``not 1 <= k <= d`` (from :class:`~iit.learned.Rotation`) or a
            ``rotation`` whose shape differs from ``(d, k)``.
    """

    kind = "rotation"

    def __init__(
        self, d: int, k: int | None = None, *, rotation: Rotation | None = None, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        k = d if k is None else k
        if rotation is None:
            rotation = Rotation(d, k, generator=generator)
        elif (rotation.d, rotation.k) != (d, k):
            raise InterventionError(f"rotation is {rotation.d} x {rotation.k}, expected d={d}, k={k}")
        self.rotation = rotation
        self.d, self.n_features = int(d), int(k)

    def encode(self, h: Tensor) -> Tensor:
        w = self.rotation.matrix()
        return h.to(w.dtype) @ w

    def decode(self, f: Tensor) -> Tensor:
        return f @ self.rotation.matrix().T

    def config(self) -> dict[str, Any]:
        return {"d": self.d, "k": self.n_features}
