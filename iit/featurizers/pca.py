"""The PCA featurizer: features are coordinates along principal components of collected
activations (fitted once, not trained)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from iit.errors import InterventionError
from iit.featurizers.base import Featurizer, register_featurizer

__all__ = ["PCAFeaturizer"]


@register_featurizer
class PCAFeaturizer(Featurizer):
    """``encode(h) = (h - mean) @ V``, ``decode(f) = f @ V^T + mean``, with ``V`` (``[d, k]``) the
    top-``k`` principal directions (orthonormal columns, by decreasing variance).

    Build it with :meth:`fit`; the constructor makes an empty one of the given shape (for loading).

    Args:
        d: width of the hidden state.
        k: number of components.

    Raises:
        InterventionError: ``not 1 <= k <= d``.
    """

    kind = "pca"

    def __init__(self, d: int, k: int) -> None:
        super().__init__()
        if not 1 <= k <= d:
            raise InterventionError(f"PCAFeaturizer needs 1 <= k <= d, got d={d}, k={k}")
        self.d, self.n_features = int(d), int(k)
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("components", torch.zeros(d, k))
        self.register_buffer("explained_variance", torch.zeros(k))

    @classmethod
    def fit(cls, activations: Tensor, k: int | None = None) -> PCAFeaturizer:
        """Principal components of ``activations`` (``[n, ..., d]``; every leading axis is a sample).

        Each component's sign is fixed so that its largest-magnitude entry is positive (the fit is
        deterministic). ``explained_variance`` holds the variances along the components
        (``singular value^2 / (n - 1)``).

        Raises:
            InterventionError: fewer than 2 samples, or ``k`` outside ``[1, min(n, d)]``.
        """
        x = activations.detach().reshape(-1, activations.shape[-1]).double()
        n, d = x.shape
        k = min(n, d) if k is None else k
        if n < 2 or not 1 <= k <= min(n, d):
            raise InterventionError(f"PCA needs >= 2 samples and 1 <= k <= min(n, d); got n={n}, d={d}, k={k}")
        mean = x.mean(0)
        _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
        v = vh[:k].T  # [d, k]
        sign = torch.sign(v.gather(0, v.abs().argmax(0, keepdim=True)))
        v = v * torch.where(sign == 0, torch.ones_like(sign), sign)
        out = cls(d, k)
        out.mean.copy_(mean.float())
        out.components.copy_(v.float())
        out.explained_variance.copy_((s[:k] ** 2 / (n - 1)).float())
        return out

    def encode(self, h: Tensor) -> Tensor:
        return (h.to(self.components.dtype) - self.mean) @ self.components

    def decode(self, f: Tensor) -> Tensor:
        return f @ self.components.T + self.mean

    def config(self) -> dict[str, Any]:
        return {"d": self.d, "k": self.n_features}
