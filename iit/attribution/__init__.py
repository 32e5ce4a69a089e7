"""Attribution diagnostics: gradients, integrated gradients, LRP, attention tracing and rollout,
ALTI, and AUPC faithfulness.

Every method is an :class:`Attribution` with one verb, ``attribute(inputs, target)``; see
:mod:`iit.attribution.base`.
"""

from iit.attribution._layers import LayerRef, resolve_layer
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
from iit.attribution.callback import AttributionLogger
from iit.attribution.faithfulness import (
    AUPCConfig,
    AUPCRow,
    AUPCTable,
    aupc_table,
    deletion_counts,
    perturbation_curve,
)
from iit.attribution.families import FAMILIES, Family, transformer_layout
from iit.attribution.gradient import InputXGradient, IntegratedGradients, Saliency
from iit.attribution.lrp import LRP, EpsilonRule, GammaRule, Rule, ZPlusRule, lrp_rules
from iit.attribution.plots import plot_contribution_matrix, plot_token_heatmap
from iit.attribution.quadrature import QuadratureMethod, quadrature
from iit.attribution.targets import Target, output_tensor, target_scores

__all__ = [
    "ALTI",
    "ALTILayer",
    "AUPCConfig",
    "AUPCRow",
    "AUPCTable",
    "AttentionRollout",
    "AttentionTracing",
    "Attribution",
    "AttributionLogger",
    "EpsilonRule",
    "FAMILIES",
    "Family",
    "GammaRule",
    "InputXGradient",
    "IntegratedGradients",
    "LRP",
    "LayerRef",
    "PlaceAttribution",
    "QuadratureMethod",
    "Reduction",
    "Rule",
    "Saliency",
    "Target",
    "TokenAttribution",
    "ZPlusRule",
    "alti_rollout",
    "attention_rollout",
    "attention_tracing",
    "aupc_table",
    "capture_attentions",
    "deletion_counts",
    "layer_contributions",
    "lrp_rules",
    "output_tensor",
    "perturbation_curve",
    "plot_contribution_matrix",
    "plot_token_heatmap",
    "quadrature",
    "reduce_tokens",
    "resolve_layer",
    "target_scores",
    "transformer_layout",
]

# --- semiring / txray re-exports (added by the lead; this module does not import them) -------
from iit.attribution import semiring, txray  # noqa: E402  (iit.attribution.semiring.top_path, ...)

__all__ += ["semiring", "txray"]
