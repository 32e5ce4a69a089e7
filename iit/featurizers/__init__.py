"""Featurizers: maps from a hidden state to features and back, and interchanges on chosen
features (see :mod:`iit.featurizers.base` for the concept).

====================================  ==================================================
:class:`IdentityFeaturizer`           neurons
:class:`RotationFeaturizer`           learned orthonormal basis, full or rank ``k`` (DAS)
:class:`PCAFeaturizer`                principal components of collected activations
:class:`SAEFeaturizer`                sparse-autoencoder latents (error kept)
:class:`FeatureInterchange`           interchange chosen features from a source run
:class:`MaskedFeatureInterchange`     learned (sigmoid / hard-concrete) mask over features
====================================  ==================================================
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
