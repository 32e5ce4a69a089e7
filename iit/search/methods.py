"""Featurizer methods a search sweeps: how a cell of a given size builds its intervention.

| name | cell of size ``k`` | trained |
|------|--------------------|---------|
| ``das`` | rank-``k`` rotation (`RotationFeaturizer`), all ``k`` features | yes |
| ``pca`` | top-``k`` principal components of the training activations | no (fitted) |
| ``neurons`` | learned mask over neurons, then the ``k`` with largest logits | yes |
| ``sae`` | learned mask over SAE latents (given per place), top ``k`` | yes |

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

    Raises:
        TypeError: instantiating `Method` itself or a subclass that does not implement
            `max_size` and `build`.
    """

    name: str
    trainable: ClassVar[bool] = True

    @abstractmethod
    def max_size(self, data: PlaceData) -> int:
        """The largest size a cell at this place can have.

        Args:
            data: the place's collected data (its width ``data.d`` and training pairs).
        """

    @abstractmethod
    def build(self, data: PlaceData, size: int, generator: torch.Generator) -> Intervention:
        """The (untrained) intervention of a cell of ``size`` at ``data.place``.

        Args:
            data: the place's collected data.
            size: the cell's size ``k`` (``1 <= k <= max_size(data)``).
            generator: the cell's RNG for random initialisations.
        """

    def final(self, intervention: Intervention, size: int) -> Intervention:
        """The intervention that is scored, made from the trained one (default: itself).

        Args:
            intervention: the trained (or fitted) intervention `build` made.
            size: the cell's size ``k``.
        """
        return intervention

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class DAS(Method):
    """A rank-``k`` orthonormal basis trained so that interchanging its ``k`` coordinates
    interchanges the variable (low-rank DAS).

    Raises:
        TypeError: any argument (it takes none).
    """

    name = "das"

    def max_size(self, data: PlaceData) -> int:
        """The place's width ``d`` (a full rotation).

        Args:
            data: the place's collected data.
        """
        return data.d

    def build(self, data: PlaceData, size: int, generator: torch.Generator) -> Intervention:
        """A `FeatureInterchange` of the first ``size`` features of a random rank-``size``
        `RotationFeaturizer` over ``d``.

        Args:
            data: the place's collected data.
            size: the rank ``k``.
            generator: RNG of the initial basis.

        Raises:
            InterventionError: ``not 1 <= size <= d``.
        """
        coordinate = data.place.coordinate
        return FeatureInterchange(coordinate, RotationFeaturizer(data.d, size, generator=generator), range(size))


class PCA(Method):
    """The top-``k`` principal components of the place's training activations (bases and
    sources); nothing is trained, so the untrained control does not apply.

    Raises:
        TypeError: any argument (it takes none).
    """

    name = "pca"
    trainable = False

    def max_size(self, data: PlaceData) -> int:
        """``min(d, number of training activations)`` (bases and sources).

        Args:
            data: the place's collected data.
        """
        return min(data.d, 2 * len(data.train))

    def build(self, data: PlaceData, size: int, generator: torch.Generator) -> Intervention:
        """A `FeatureInterchange` of the top ``size`` principal components of the training
        activations ``[2 * n_train, ..., d]`` (``generator`` is unused: nothing is random).

        Args:
            data: the place's collected data.
            size: the number of components ``k``.
            generator: unused.

        Raises:
            InterventionError: ``size`` outside ``[1, min(n, d)]`` or fewer than 2 samples.
        """
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

    Raises:
        TypeError: an unknown argument (``kind`` is checked when a cell builds its
            intervention, raising `InterventionError`).
    """

    def __init__(
        self, name: str = "neurons", featurizer: Callable[[PlaceData], Featurizer] | None = None, kind: MaskKind = "sigmoid"
    ) -> None:
        self.name, self.featurizer, self.kind = name, featurizer, kind

    def _featurizer(self, data: PlaceData) -> Featurizer:
        return self.featurizer(data) if self.featurizer is not None else IdentityFeaturizer(data.d)

    def max_size(self, data: PlaceData) -> int:
        """The number of features of the place's featurizer.

        Args:
            data: the place's collected data.

        Raises:
            InterventionError: (``sae``) a place without an SAE.
        """
        return self._featurizer(data).n_features

    def build(self, data: PlaceData, size: int, generator: torch.Generator) -> Intervention:
        """A `MaskedFeatureInterchange` over all features, mask logits initialised at
        ``0.01 * N(0, 1)``; the size is applied by `final`.

        Args:
            data: the place's collected data.
            size: the cell's size ``k`` (used by `final`).
            generator: RNG of the initial logits.

        Raises:
            InterventionError: an unknown mask kind, or (``sae``) a place without an SAE.
        """
        featurizer = self._featurizer(data)
        init = 0.01 * torch.randn(featurizer.n_features, generator=generator)
        return MaskedFeatureInterchange(data.place.coordinate, featurizer, self.kind, init=init)

    def final(self, intervention: Intervention, size: int) -> Intervention:
        """A `FeatureInterchange` of the ``size`` features with the largest trained logits.

        Args:
            intervention: the trained `MaskedFeatureInterchange`.
            size: the number of features kept.
        """
        assert isinstance(intervention, MaskedFeatureInterchange)
        return intervention.to_interchange(size)


def neurons(kind: MaskKind = "sigmoid") -> LearnedMask:
    """A learned mask over neurons (``name="neurons"``).

    Args:
        kind: ``"sigmoid"`` or ``"hard_concrete"``.

    Raises:
        InterventionError: (when a cell runs) an unknown ``kind``.
    """
    return LearnedMask("neurons", None, kind)


def sae(featurizers: Mapping[str, Featurizer], kind: MaskKind = "sigmoid") -> LearnedMask:
    """A learned mask over SAE latents; ``featurizers`` maps place names to SAE featurizers.

    Args:
        featurizers: ``{place name: SAE featurizer}``.
        kind: ``"sigmoid"`` or ``"hard_concrete"``.

    Raises:
        InterventionError: (when a cell runs) a place without an SAE.
    """

    def pick(data: PlaceData) -> Featurizer:
        if data.place.name not in featurizers:
            raise InterventionError(f"no SAE for place {data.place.name!r}; SAEs are given for {sorted(featurizers)}")
        return featurizers[data.place.name]

    return LearnedMask("sae", pick, kind)
