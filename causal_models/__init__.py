"""Causal models on networkx DAGs, evaluated on whole batches of tensors.

A `CausalModel` is a DAG whose nodes are variables, each with a value domain and (unless it is an
input) a mechanism computing it from its parents. Mechanisms act on batches ``[batch, ...]``, so
running, ``do`` and interchange interventions over 100k examples are a few tensor operations. The
counterfactual generator builds IIT training data from it.

To add your own model, give each variable ``(parents, mechanism, domain)``; inputs are
``((), None, domain)``. A vectorised mechanism takes its parents' batched values in order and
returns ``[batch, *domain.shape]``; a plain Python mechanism is applied per row with the 4th element
``vectorized=False``. Standard models are in `causal_models.standard`: `digit_sum`, `digit_sum4`,
`hierarchical_equality` (with `EntityPool`, `EqualityPatternSampler`), `boolean_circuit`,
`and_or_not`, `price_tagging` (with `PriceSampler`) and `pointer_value`.

Examples:
    A model in a few lines, a run and an interchange intervention:

    >>> import torch
    >>> from causal_models import CausalModel, FiniteDomain, IntegerRange
    >>> model = CausalModel.from_mapping(
    ...     {
    ...         "a": ((), None, IntegerRange(0, 5)),
    ...         "b": ((), None, IntegerRange(0, 5)),
    ...         "big": (("a",), lambda a: a >= 3, FiniteDomain.boolean()),
    ...         "O": (("big", "b"), lambda big, b: b if big else 0, IntegerRange(0, 5), False),
    ...     },
    ...     outputs=["O"],
    ...     name="gate",
    ... )
    >>> base = {"a": torch.tensor([4, 1]), "b": torch.tensor([2, 2])}
    >>> source = {"a": torch.tensor([0, 4]), "b": torch.tensor([0, 0])}
    >>> model.run(base)["O"].tolist()
    [2, 0]
    >>> model.interchange(base, [source], {"big": 0})["O"].tolist()
    [0, 2]

    Counterfactual data for IIT:

    >>> from causal_models import CounterfactualConfig, CounterfactualGenerator
    >>> gen = CounterfactualGenerator(model, CounterfactualConfig(variables=("big",)), seed=0)
    >>> len(gen.generate(1000))
    1000
"""

from causal_models import standard
from causal_models.data import (
    CounterfactualBatch,
    CounterfactualConfig,
    CounterfactualDataset,
    CounterfactualExample,
    CounterfactualGenerator,
    IndependentSampler,
    InputSampler,
)
from causal_models.domains import Domain, FiniteDomain, IntegerRange, RealDomain
from causal_models.drawing import (
    KIND_COLORS,
    draw,
    layered_positions,
    short_domain,
    to_dot,
    write_dot,
)
from causal_models.errors import (
    BatchShapeError,
    CausalModelError,
    DatasetIndexError,
    DomainError,
    GraphError,
    InterventionSpecError,
    MechanismError,
    MissingInputError,
    SamplingError,
    UnknownVariableError,
)
from causal_models.model import CausalModel, Variable

__all__ = [
    "CausalModel",
    "Variable",
    "Domain",
    "FiniteDomain",
    "IntegerRange",
    "RealDomain",
    "InputSampler",
    "IndependentSampler",
    "CounterfactualConfig",
    "CounterfactualBatch",
    "CounterfactualExample",
    "CounterfactualGenerator",
    "CounterfactualDataset",
    "layered_positions",
    "short_domain",
    "draw",
    "to_dot",
    "write_dot",
    "KIND_COLORS",
    "CausalModelError",
    "DatasetIndexError",
    "UnknownVariableError",
    "GraphError",
    "DomainError",
    "MechanismError",
    "BatchShapeError",
    "InterventionSpecError",
    "MissingInputError",
    "SamplingError",
    "standard",
]
