"""Attribution diagnostics: gradients, integrated gradients, LRP, attention tracing and rollout,
ALTI, AUPC faithfulness, attribution patching (AtP, AtP*, EAP, EAP-IG) and TX-Ray.

Every method is an `Attribution` with one verb, ``attribute(inputs, target)``; see
`iit.attribution.base`. Places are coordinates (`iit.attribution.places`); transformer
internals come from the family table of `iit.transformers.families`
(`iit.attribution.layout`). Semiring backpropagation is its own package, `iit.semiring`.
"""

from typing import Any

from iit.attribution.alti import ALTI, ALTILayer, alti_rollout, layer_contributions
from iit.attribution.attention import (
    AttentionRollout,
    AttentionTracing,
    attention_rollout,
    attention_tracing,
    capture_attentions,
)
from iit.attribution.base import (
    Attribution,
    PlaceAttribution,
    Reduction,
    TokenAttribution,
    reduce_tokens,
)
from iit.attribution.edges import EdgeScores, edge_attribution_patching
from iit.attribution.faithfulness import (
    AUPCConfig,
    AUPCRow,
    AUPCTable,
    aupc_table,
    deletion_counts,
    perturbation_curve,
)
from iit.attribution.gradient import InputXGradient, IntegratedGradients, Saliency
from iit.attribution.layout import TransformerLayout, collect_places, transformer_layout
from iit.attribution.lrp import LRP, EpsilonRule, GammaRule, Rule, ZPlusRule, lrp_rules
from iit.attribution.patching import AtPConfig, attribution_patching, exact_patching_effects
from iit.attribution.places import Place, PlaceResolver
from iit.attribution.quadrature import QuadratureMethod, quadrature
from iit.attribution.targets import Target, output_tensor, target_scores

__all__ = [
    "ALTI",
    "AtPConfig",
    "ALTILayer",
    "AUPCConfig",
    "AUPCRow",
    "AUPCTable",
    "AttentionRollout",
    "AttentionTracing",
    "Attribution",
    "AttributionLogger",
    "EdgeScores",
    "EpsilonRule",
    "GammaRule",
    "InputXGradient",
    "IntegratedGradients",
    "LRP",
    "Place",
    "PlaceAttribution",
    "PlaceResolver",
    "QuadratureMethod",
    "Reduction",
    "Rule",
    "Saliency",
    "Target",
    "TokenAttribution",
    "ZPlusRule",
    "alti_rollout",
    "attention_rollout",
    "attribution_patching",
    "attention_tracing",
    "aupc_table",
    "capture_attentions",
    "deletion_counts",
    "edge_attribution_patching",
    "exact_patching_effects",
    "layer_contributions",
    "lrp_rules",
    "output_tensor",
    "perturbation_curve",
    "plot_contribution_matrix",
    "plot_token_heatmap",
    "quadrature",
    "reduce_tokens",
    "target_scores",
    "TransformerLayout",
    "collect_places",
    "transformer_layout",
]

# Imported on first use, so that ``import iit.attribution`` imports neither Lightning (the
# callback), matplotlib (plots) nor plotly (TX-Ray plots). Semiring backpropagation is its own
# package, `iit.semiring` (it used to live at ``iit.attribution.semiring``).
_LAZY = {
    "AttributionLogger": "iit.attribution.callback",
    "plot_contribution_matrix": "iit.attribution.plots",
    "plot_token_heatmap": "iit.attribution.plots",
    "txray": "iit.attribution.txray",
}
__all__ += ["AttributionLogger", "plot_contribution_matrix", "plot_token_heatmap", "txray"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name])
        return module if name == "txray" else getattr(module, name)
    if name == "semiring":
        raise AttributeError(
            "semiring backpropagation moved to its own package: use iit.semiring "
            "(e.g. from iit.semiring import SemiringBackprop, semiring_backward)"
        )
    raise AttributeError(f"module 'iit.attribution' has no attribute {name!r}")
