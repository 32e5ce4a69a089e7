"""Coordinate system for Hugging Face transformers: ``(layer, component, position, head, dims)``,
padding-aware positions and attention probabilities as hidden states."""

from iit.transformers.attention import attention_probs_hook_points
from iit.transformers.coordinates import Position, TransformerCoordinate
from iit.transformers.families import (
    COMPONENTS,
    FAMILIES,
    Component,
    Family,
    ModelShape,
    QKVLayout,
    Site,
    family_of,
    model_shape,
)
from iit.transformers.interventionable import TransformerInterventionable
from iit.transformers.positions import Tokens, position_ids_from_mask, real_token_positions

__all__ = [
    "COMPONENTS",
    "FAMILIES",
    "Component",
    "Family",
    "ModelShape",
    "Position",
    "QKVLayout",
    "Site",
    "Tokens",
    "TransformerCoordinate",
    "TransformerInterventionable",
    "attention_probs_hook_points",
    "family_of",
    "model_shape",
    "position_ids_from_mask",
    "real_token_positions",
]
