"""The DAS sweep of `tasks.das_equality`, expressed as an `iit.search` spec: for one
variable of hierarchical equality (``WX`` or ``YZ``), every hidden layer of the frozen,
behaviour-trained MLP x {DAS, PCA, learned neuron mask} x sizes, on pairs from the training
entities (fit, validation) and from unseen entities (test)::

    python -m iit.search tasks.das_equality_search:spec --set variable='"WX"' \\
        --out runs/search_equality_WX --heatmap layer,size --featurizer das
"""

from __future__ import annotations

from causal_models.standard import EqualityPatternSampler
from iit import Interventionable
from iit.search import (
    DAS,
    PCA,
    CounterfactualSplits,
    FitSettings,
    SearchProblem,
    SearchSettings,
    module_places,
    neurons,
)
from iit.search.cli import SearchSpec
from tasks.das_equality import BaseNetwork, behaviour_trained_network

__all__ = ["spec"]


def spec(
    variable: str = "WX",
    sizes: tuple[int, ...] = (1, 2, 4, 8),
    pairs: tuple[int, int, int] = (20_000, 2_000, 4_000),
    epochs: int = 6,
    quick: bool = False,
    seed: int = 0,
) -> SearchSpec:
    """The search spec (``quick``: a small base network and fewer pairs, for tests).

    Raises:
        AlignmentError: a variable other than the causal model's (``WX``, ``YZ``, ...).
    """
    base = BaseNetwork(epochs=1, train_size=4_096, train_entities=500, test_entities=100) if quick else BaseNetwork()
    if quick:
        pairs, epochs = (1_024, 256, 512), 3
    network, _ = behaviour_trained_network(base)
    task = base.task()
    causal_model = task.causal_model()
    train_pool, test_pool = task.pools()
    splits = CounterfactualSplits.generate(
        causal_model, variable, tuple(pairs),  # type: ignore[arg-type]
        sampler=EqualityPatternSampler(train_pool), test_sampler=EqualityPatternSampler(test_pool), seed=seed,
    )
    problem = SearchProblem(Interventionable(network), causal_model, variable, task.encode_inputs)
    places = module_places([f"layers.{i}" for i in range(base.n_layers)])
    settings = SearchSettings(fit=FitSettings(epochs=epochs, batch_size=256, lr=2e-2), seed=seed)
    return SearchSpec(problem, splits, places, [DAS(), PCA(), neurons()], list(sizes), settings)
