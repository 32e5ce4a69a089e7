"""The identity featurizer: features are the neurons themselves."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from iit.errors import InterventionError
from iit.featurizers.base import Featurizer, register_featurizer

__all__ = ["IdentityFeaturizer"]


@register_featurizer
class IdentityFeaturizer(Featurizer):
    """Features = neurons: ``encode(h) = h``, ``decode(f) = f`` (``n_features = d``).

    Args:
        d: width of the hidden state.

    Raises:
        InterventionError: ``d < 1``.
    """

    kind = "identity"

    def __init__(self, d: int) -> None:
        super().__init__()
        if d < 1:
            raise InterventionError(f"IdentityFeaturizer needs d >= 1, got {d}")
        self.d = self.n_features = int(d)

    def encode(self, h: Tensor) -> Tensor:
        """``h`` itself: ``[..., d] -> [..., d]``."""
        return h

    def decode(self, f: Tensor) -> Tensor:
        """``f`` itself: ``[..., d] -> [..., d]``."""
        return f

    def config(self) -> dict[str, Any]:
        """``{"d": d}``."""
        return {"d": self.d}
