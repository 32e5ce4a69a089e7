"""Standard causal models used by the tasks.

Digit sum (`digit_sum`, `digit_sum4`), hierarchical equality (`hierarchical_equality` with
`EntityPool`, `make_entity_pools` and `EqualityPatternSampler`), boolean circuits
(`boolean_circuit`, `and_or_not`), price tagging (`price_tagging` with `PriceSampler`) and
pointer-value retrieval (`pointer_value`, `POINTER_MAP`).

Examples:
    >>> import torch
    >>> from causal_models import standard
    >>> m = standard.digit_sum()
    >>> m.run({"x": torch.tensor([1]), "y": torch.tensor([2]), "z": torch.tensor([3])})["O"].item()
    6
"""

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
