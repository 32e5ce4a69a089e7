"""Featurizer methods a search sweeps: how a cell of a given size builds its intervention.

==========  ===============================================================  ==========
name        cell of size ``k``                                               trained
==========  ===============================================================  ==========
``das``     rank-``k`` rotation (`RotationFeaturizer`), all k features  yes
``pca``     top-``k`` principal components of the training activations       no (fitted)
``neurons`` learned mask over neurons, then the ``k`` with largest logits      yes
``sae``     learned mask over SAE latents (given per place), top ``k``         yes
==========  ===============================================================  ==========

Write another by subclassing `Method`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import ClassVar

import torch

from iit.errors import InterventionError
from iit.featurizers import (
    FeatureInterchange,
    Featurizer,
    IdentityFeaturizer,
    MaskedFeatureInterchange,
    PCAFeaturizer,
    RotationFeaturizer,
)
from iit.featurizers.mask import MaskKind
from iit.interventions import Intervention
from iit.search.data import PlaceData

__all__ = ["Method", "DAS", "PCA", "LearnedMask", "neurons", "sae"]


class Method(ABC):
    """How a cell builds (and, if ``trainable``, trains) its intervention.

    Attributes:
        name: the ``featurizer`` column of the result table.
        trainable: the built intervention is trained on the training pairs.
    """

    name: str
    trainable: ClassVar[bool] = True

    @abstractmethod
    def max_size(self, data: PlaceData) -> int:
        """The largest size a cell at this place can have."""

    @abstractmethod
    def build(self, data: PlaceData, size: int, generator: torch.Generator) -> Intervention:
        """The (untrained) intervention of a cell of ``size`` at ``data.place``."""

    def final(self, intervention: Intervention, size: int) -> Intervention:
        """The intervention that is scored, made from the trained one (default: itself)."""
        return intervention

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class DAS(Method):
    """A rank-``k`` orthonormal basis trained so that interchanging its ``k`` coordinates
    interchanges the variable (low-rank DAS)."""

    name = "das"

    def max_size(self, data: PlaceData) -> int:
        return data.d

    def build(self, data: PlaceData, size: int, generator: torch.Generator) -> Intervention:
        coordinate = data.place.coordinate
        return FeatureInterchange(coordinate, RotationFeaturizer(data.d, size, generator=generator), range(size))


class PCA(Method):
    """The top-``k`` principal components of the place's training activations (bases and
    sources); nothing is trained, so the untrained control does not apply."""

    name = "pca"
    trainable = False

    def max_size(self, data: PlaceData) -> int:
        return min(data.d, 2 * len(data.train))

    def build(self, data: PlaceData, size: int, generator: torch.Generator) -> Intervention:
        acts = torch.cat([data.train.bases, data.train.sources[data.place.coordinate]])
        return FeatureInterchange(data.place.coordinate, PCAFeaturizer.fit(acts, size), range(size))


class LearnedMask(Method):
    """A learned mask over the features of ``featurizer`` (identity: neurons); a cell of size
    ``k`` interchanges the ``k`` features with the largest trained logits. Its untrained
    control is ``k`` features picked by the random initial logits.

    Args:
        name: the table name.
        featurizer: the basis per place (default: the neurons).
        kind: ``"sigmoid"`` or ``"hard_concrete"``.
    """

    def __init__(
        self, name: str = "neurons", featurizer: Callable[[PlaceData], Featurizer] | None = None, kind: MaskKind = "sigmoid"
    ) -> None:
        self.name, self.featurizer, self.kind = name, featurizer, kind

    def _featurizer(self, data: PlaceData) -> Featurizer:
        return self.featurizer(data) if self.featurizer is not None else IdentityFeaturizer(data.d)

    def max_size(self, data: PlaceData) -> int:
        return self._featurizer(data).n_features

    def build(self, data: PlaceData, size: int, generator: torch.Generator) -> Intervention:
        featurizer = self._featurizer(data)
        init = 0.01 * torch.randn(featurizer.n_features, generator=generator)
        return MaskedFeatureInterchange(data.place.coordinate, featurizer, self.kind, init=init)

    def final(self, intervention: Intervention, size: int) -> Intervention:
        assert isinstance(intervention, MaskedFeatureInterchange)
        return intervention.to_interchange(size)


def neurons(kind: MaskKind = "sigmoid") -> LearnedMask:
    """A learned mask over neurons (``name="neurons"``)."""
    return LearnedMask("neurons", None, kind)


def sae(featurizers: Mapping[str, Featurizer], kind: MaskKind = "sigmoid") -> LearnedMask:
    """A learned mask over SAE latents; ``featurizers`` maps place names to SAE featurizers.

    Raises:
        InterventionError: (when a cell runs) a place without an SAE.
    """

    def pick(data: PlaceData) -> Featurizer:
        if data.place.name not in featurizers:
            raise InterventionError(f"no SAE for place {data.place.name!r}; SAEs are given for {sorted(featurizers)}")
        return featurizers[data.place.name]

    return LearnedMask("sae", pick, kind)
