"""Semiring backpropagation on ordinary PyTorch models (Du et al., ACL 2023).

One reverse walk over an ATen-level trace of the model computes, per source element, the
gradient (``real``), the top gradient path (``max_product``) or the gradient-graph entropy
(``entropy``); see :mod:`.backward` for the granularities and :mod:`.paths` for reading paths.

Speed and memory: the pass frees each state and forward value after its last use when no path
is asked for (``SemiringConfig(record_path=False)``), and ``SemiringConfig(compile=True)`` runs
the walk as one program compiled by ``torch.compile`` once per graph structure
(:mod:`.compiled_walk`; ``clear_compiled_walks()`` drops the programs).
``python benchmarks/semiring.py`` prints both against autograd's backward.
"""

from iit.attribution.semiring.backward import (
    SemiringBackprop,
    SemiringConfig,
    SemiringResult,
    gradient_graph_entropy,
    semiring_backward,
)
from iit.attribution.semiring.compiled_walk import clear_compiled_walks
from iit.attribution.semiring.ops import supported_op_names
from iit.attribution.semiring.paths import GradientPath, PathStep, best_source_index, top_path
from iit.attribution.semiring.semirings import Granularity, SemiringName
from iit.attribution.semiring.weights import clear_weight_cache

__all__ = [
    "SemiringBackprop",
    "SemiringConfig",
    "SemiringResult",
    "semiring_backward",
    "gradient_graph_entropy",
    "top_path",
    "best_source_index",
    "GradientPath",
    "PathStep",
    "supported_op_names",
    "Granularity",
    "SemiringName",
    "clear_weight_cache",
    "clear_compiled_walks",
]
