"""Featurizers: maps from a hidden state to features and back, and interchanges on chosen
features (see `iit.featurizers.base` for the concept).

| Name | What it is |
| --- | --- |
| `IdentityFeaturizer` | neurons |
| `RotationFeaturizer` | learned orthonormal basis, full or rank ``k`` (DAS) |
| `PCAFeaturizer` | principal components of collected activations |
| `SAEFeaturizer` | sparse-autoencoder latents (error kept) |
| `FeatureInterchange` | interchange chosen features from a source run |
| `MaskedFeatureInterchange` | learned (sigmoid / hard-concrete) mask over features |
"""

from iit.featurizers.base import (
    FEATURIZERS,
    Featurizer,
    featurizer_from_config,
    register_featurizer,
)
from iit.featurizers.identity import IdentityFeaturizer
from iit.featurizers.interchange import FeatureInterchange, feature_indices
from iit.featurizers.mask import MaskedFeatureInterchange
from iit.featurizers.pca import PCAFeaturizer
from iit.featurizers.rotation import RotationFeaturizer
from iit.featurizers.sae import SAEFeaturizer

__all__ = [
    "FEATURIZERS",
    "FeatureInterchange",
    "Featurizer",
    "IdentityFeaturizer",
    "MaskedFeatureInterchange",
    "PCAFeaturizer",
    "RotationFeaturizer",
    "SAEFeaturizer",
    "feature_indices",
    "featurizer_from_config",
    "register_featurizer",
]
