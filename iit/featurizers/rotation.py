"""The learned rotation featurizer (DAS): features are coordinates in an orthonormal basis.

With ``W`` (``[d, k]``, orthonormal columns, an `iit.learned.Rotation`), ``encode(h) =
h @ W`` and ``decode(f) = f @ W^T``. ``k = d`` is a full rotation (no reconstruction error);
``k < d`` a low-rank one, whose error ``h - h W W^T`` (the part outside the subspace) is kept.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from iit.errors import InterventionError
from iit.featurizers.base import (
    Featurizer,
    dtype_from_name,
    dtype_name,
    in_compute_dtype,
    register_featurizer,
)
from iit.learned import Rotation, interchange_in_basis

__all__ = ["RotationFeaturizer"]


@register_featurizer
class RotationFeaturizer(Featurizer):
    """Features = ``h @ W`` for a trainable orthonormal ``W`` ``[d, k]``.

    Args:
        d: width of the hidden state.
        k: number of features (default ``d``: a full rotation).
        rotation: use this `Rotation` (shared with other interventions)
            instead of a new one; then ``d`` and ``k`` must match it.
        generator: RNG of a new rotation's initialisation.
        dtype: storage dtype of a new rotation (default float32; computations run in
            ``promote_types`` of it and the hidden state's dtype).

    Raises:
        InterventionError: ``not 1 <= k <= d`` (from `Rotation`) or a
            ``rotation`` whose shape differs from ``(d, k)``.
    """

    kind = "rotation"

    def __init__(
        self,
        d: int,
        k: int | None = None,
        *,
        rotation: Rotation | None = None,
        generator: torch.Generator | None = None,
        dtype: str | torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        k = d if k is None else k
        if rotation is None:
            rotation = Rotation(d, k, generator=generator, dtype=dtype_from_name(dtype) if isinstance(dtype, str) else dtype)
        elif (rotation.d, rotation.k) != (d, k):
            raise InterventionError(f"rotation is {rotation.d} x {rotation.k}, expected d={d}, k={k}")
        self.rotation = rotation
        self.d, self.n_features = int(d), int(k)

    def basis(self) -> Rotation:
        """The rotation (shared with other interventions on it)."""
        return self.rotation

    def encode(self, h: Tensor) -> Tensor:
        """``h @ W``: ``[..., d] -> [..., k]``, in ``promote_types(W dtype, h dtype)`` on ``h``'s device."""
        x, w = in_compute_dtype(h, self.rotation.matrix())
        return x @ w

    def decode(self, f: Tensor) -> Tensor:
        """``f @ W^T``: ``[..., k] -> [..., d]``, in ``promote_types(W dtype, f dtype)`` on ``f``'s device."""
        x, w = in_compute_dtype(f, self.rotation.matrix())
        return x @ w.T

    def interchange(self, base: Tensor, source: Tensor, features: tuple[int, ...]) -> Tensor:
        """Interchange ``features`` from ``source`` into ``base`` (``[batch, ..., d]``) with the
        reconstruction error from the base: the same function as `iit.RotatedInterchange`
        / `iit.LowRankRotatedInterchange` (`iit.learned.interchange_in_basis`)."""
        first, last = features[0], features[-1] + 1
        contiguous = features == tuple(range(first, last))
        columns: slice | list[int] | None = slice(first, last) if contiguous else list(features)
        if contiguous and (first, last) == (0, self.n_features):
            columns = None
        return interchange_in_basis(base, source, self.rotation.matrix, columns)

    def config(self) -> dict[str, Any]:
        """``{"d", "k", "dtype"}``: the constructor arguments of a rotation of this shape."""
        return {"d": self.d, "k": self.n_features, "dtype": dtype_name(self.rotation.weight.dtype)}
