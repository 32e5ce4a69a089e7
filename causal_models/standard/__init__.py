"""Standard causal models used by the tasks: digit sum, hierarchical equality, boolean circuits,
price tagging and pointer-value retrieval."""

from causal_models.standard.arithmetic import digit_sum, digit_sum4
from causal_models.standard.boolean import and_or_not, boolean_circuit
from causal_models.standard.equality import (
    EntityPool,
    EqualityPatternSampler,
    hierarchical_equality,
    make_entity_pools,
)
from causal_models.standard.pointer import POINTER_MAP, pointer_value
from causal_models.standard.pricing import PriceSampler, price_tagging

__all__ = [
    "digit_sum",
    "digit_sum4",
    "hierarchical_equality",
    "EntityPool",
    "EqualityPatternSampler",
    "make_entity_pools",
    "boolean_circuit",
    "and_or_not",
    "price_tagging",
    "PriceSampler",
    "pointer_value",
    "POINTER_MAP",
]
