"""Semiring backpropagation on ordinary PyTorch models (Du et al., ACL 2023).

One reverse walk over an ATen-level trace of the model computes, per source element, the
gradient (``real``), the top gradient path (``max_product``) or the gradient-graph entropy
(``entropy``); see `backward` for the granularities and `paths` for reading paths.

`SemiringBackprop` is an attribution like those of `iit.attribution`
(``attribute(inputs, target)``, sources given as coordinates). It owns its caches (parameter
transforms, compiled walk programs: `SemiringCache`), which are bounded and released
with it; `semiring_backward` without a cache keeps nothing after the call. Importing this
package registers and compiles nothing: the custom op of the compiled walk is registered, and
the C++ max-product kernel built, by the first call that needs them.

Speed and memory: the pass frees each state and forward value after its last use when no path
is asked for (``SemiringConfig(record_path=False)``), and ``SemiringConfig(compile=True)`` runs
the walk as one program compiled by ``torch.compile`` once per graph structure
(`compiled_walk`). ``python benchmarks/semiring.py`` prints both against autograd's
backward.
"""

from iit.semiring.backward import (
    SemiringBackprop,
    SemiringCache,
    SemiringConfig,
    SemiringResult,
    gradient_graph_entropy,
    semiring_backward,
)
from iit.semiring.ops import supported_op_names
from iit.semiring.paths import GradientPath, PathStep, best_source_index, top_path
from iit.semiring.semirings import Granularity, SemiringName

__all__ = [
    "SemiringBackprop",
    "SemiringCache",
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
]
