"""Alignment search: for one causal variable, which place (layer, component, position, head)
and which features (neurons, a learned rotation, PCA, SAE latents) of a network carry it.

See `search` (the sweep), `SearchResult` (the tidy table, best cell, smallest size
within a margin of the best), `plot_heatmap`, `compare_hypotheses` and
`iit.search.distributed` (Ray). Command line: ``python -m iit.search --help``.
"""

from iit.search.cells import Cell, SearchSettings, run_cell
from iit.search.data import PlaceData, collect_place
from iit.search.fitting import FitSettings
from iit.search.hypotheses import Hypothesis, HypothesisComparison, compare_hypotheses
from iit.search.methods import DAS, PCA, LearnedMask, Method, neurons, sae
from iit.search.plots import plot_heatmap
from iit.search.problem import (
    CounterfactualSplits,
    Place,
    SearchProblem,
    module_places,
    transformer_places,
)
from iit.search.results import SearchResult
from iit.search.run import search
from iit.search.stats import wilson_interval

__all__ = [
    "DAS",
    "PCA",
    "Cell",
    "CounterfactualSplits",
    "FitSettings",
    "Hypothesis",
    "HypothesisComparison",
    "LearnedMask",
    "Method",
    "Place",
    "PlaceData",
    "SearchProblem",
    "SearchResult",
    "SearchSettings",
    "collect_place",
    "compare_hypotheses",
    "module_places",
    "neurons",
    "plot_heatmap",
    "run_cell",
    "sae",
    "search",
    "transformer_places",
    "wilson_interval",
]
