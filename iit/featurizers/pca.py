"""The PCA featurizer: features are coordinates along principal components of collected
activations (fitted once, not trained)."""

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
from iit.precision import compute_dtype

__all__ = ["PCAFeaturizer"]


@register_featurizer
class PCAFeaturizer(Featurizer):
    """``encode(h) = (h - mean) @ V``, ``decode(f) = f @ V^T + mean``, with ``V`` (``[d, k]``) the
    top-``k`` principal directions (orthonormal columns, by decreasing variance).

    Build it with `fit`; the constructor makes an empty one of the given shape (for loading).

    Args:
        d: width of the hidden state.
        k: number of components.
        dtype: storage dtype of the buffers (`fit` uses the activations' compute dtype:
            float64 for float64 activations, float32 otherwise).

    Raises:
        InterventionError: ``not 1 <= k <= d``.
    """

    kind = "pca"

    def __init__(self, d: int, k: int, dtype: str | torch.dtype = torch.float32) -> None:
        super().__init__()
        if not 1 <= k <= d:
            raise InterventionError(f"PCAFeaturizer needs 1 <= k <= d, got d={d}, k={k}")
        self.d, self.n_features = int(d), int(k)
        dtype = dtype_from_name(dtype) if isinstance(dtype, str) else dtype
        self.register_buffer("mean", torch.zeros(d, dtype=dtype))
        self.register_buffer("components", torch.zeros(d, k, dtype=dtype))
        self.register_buffer("explained_variance", torch.zeros(k, dtype=dtype))

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
        out = cls(d, k, dtype=compute_dtype(activations.dtype))
        out.mean.copy_(mean)
        out.components.copy_(v)
        out.explained_variance.copy_(s[:k] ** 2 / (n - 1))
        return out

    def encode(self, h: Tensor) -> Tensor:
        """``(h - mean) @ V``: ``[..., d] -> [..., k]``, in ``promote_types(buffer dtype, h dtype)``
        on ``h``'s device."""
        x, mean, v = in_compute_dtype(h, self.mean, self.components)
        return (x - mean) @ v

    def decode(self, f: Tensor) -> Tensor:
        """``f @ V^T + mean``: ``[..., k] -> [..., d]``, in ``promote_types(buffer dtype, f dtype)``
        on ``f``'s device."""
        x, mean, v = in_compute_dtype(f, self.mean, self.components)
        return x @ v.T + mean

    def config(self) -> dict[str, Any]:
        """``{"d", "k", "dtype"}``: the constructor arguments of an empty PCA of this shape."""
        return {"d": self.d, "k": self.n_features, "dtype": dtype_name(self.components.dtype)}
