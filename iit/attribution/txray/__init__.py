"""TX-Ray (Rethmeier, Saxena, Augenstein, UAI 2020): neuron activation -> feature
distributions, their change between models or training stages, and plotly views."""

from iit.attribution.txray.callback import TXRayCallback
from iit.attribution.txray.distributions import (
    NeuronDistributions,
    TXRayConfig,
    accumulate,
    record_distributions,
)
from iit.attribution.txray.measures import TXRayComparison, compare, hellinger_distance
from iit.attribution.txray.plots import (
    plot_activation_mass,
    plot_hellinger_vs_length,
    plot_length_shift,
    plot_neuron_details,
)

__all__ = [
    "TXRayConfig",
    "NeuronDistributions",
    "record_distributions",
    "accumulate",
    "hellinger_distance",
    "compare",
    "TXRayComparison",
    "TXRayCallback",
    "plot_hellinger_vs_length",
    "plot_length_shift",
    "plot_activation_mass",
    "plot_neuron_details",
]
