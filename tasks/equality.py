"""Hierarchical equality with an MLP, tested on unseen entities (reference §2.1, task B).

``W, X, Y, Z`` are entity vectors; ``WX = (W == X)``, ``YZ = (Y == Z)``, ``O = (WX == YZ)``.
Training inputs draw entities from a pool of ``train_entities`` random vectors, held-out inputs
from a disjoint fresh pool of ``test_entities`` (so IIA and accuracy are measured on entities the
network never saw). Both samplers draw the four patterns AABB / AABC / ABCC / ABCD equally often.
Counterfactual pairs intervene on ``{WX}``, ``{YZ}`` or both (one choice per row).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import torch
from torch import Tensor, nn

from causal_models import CausalModel, CounterfactualConfig, standard
from causal_models.data import InputSampler
from causal_models.standard import EntityPool, EqualityPatternSampler
from iit import Coordinate, Index
from iit.alignment import AlignedTo
from iit.errors import ArgumentError
from iit.training import IITTask
from tasks.networks import VectorMLP

__all__ = ["EqualityPairs", "HierarchicalEqualityMLP", "entity_pools"]


@lru_cache(maxsize=8)
def entity_pools(train_entities: int, test_entities: int, emb_dim: int, seed: int) -> tuple[EntityPool, EntityPool]:
    """The (cached) training pool and the disjoint pool of unseen test entities,
    ``[n, emb_dim]`` each (see `causal_models.standard.make_entity_pools`)."""
    return standard.make_entity_pools(train_entities, test_entities, emb_dim, seed)


class EqualityPairs:
    """The data side of the hierarchical-equality tasks, over a task's two entity pools.

    Inputs ``W, X, Y, Z`` follow the four equality patterns (`EqualityPatternSampler`), training
    pairs from the first pool and evaluation pairs from the second (held-out entities); each pair
    intervenes on ``{WX}``, ``{YZ}`` or both (uniformly), from one source. A task mixes it in before
    `IITTask` and defines ``pools()``.
    """

    def pools(self) -> tuple[EntityPool, EntityPool]:
        """``(training pool, held-out pool)`` of entities ``[n, dim]``."""
        raise NotImplementedError

    def counterfactual_config(self) -> CounterfactualConfig:
        """Each pair intervenes on ``{WX}``, ``{YZ}`` or ``{WX, YZ}`` (uniformly), from one source."""
        return CounterfactualConfig(variables=("WX", "YZ"), selection="subset")

    def train_sampler(self, model: CausalModel) -> InputSampler:
        """Inputs built from the training pool."""
        return EqualityPatternSampler(self.pools()[0])

    def eval_sampler(self, model: CausalModel) -> InputSampler:
        """Inputs built from the held-out pool only."""
        return EqualityPatternSampler(self.pools()[1])


class HierarchicalEqualityMLP(EqualityPairs, IITTask):
    """An MLP on the concatenated entities ``[batch, 4 * emb_dim]``; ``WX`` aligned to the first
    half of the first hidden layer, ``YZ`` to the second half.

    Args:
        emb_dim: entity dimension.
        hidden: hidden width (published: ``4 * emb_dim = 8``).
        n_layers: hidden layers (Linear + ReLU).
        train_entities: size of the training entity pool.
        test_entities: size of the disjoint pool of unseen entities used for evaluation.
        pool_seed: seeds both pools.

    Raises:
        ValueError: an odd ``hidden`` (the two variables get half of the first layer each).
    """

    name = "hierarchical_equality_mlp"

    def __init__(
        self,
        emb_dim: int = 2,
        hidden: int = 8,
        n_layers: int = 3,
        train_entities: int = 1000,
        test_entities: int = 100,
        pool_seed: int = 0,
    ) -> None:
        if hidden % 2:
            raise ArgumentError(f"hidden must be even (WX and YZ get half of layers.0 each), got {hidden}")
        self.emb_dim, self.hidden, self.n_layers = emb_dim, hidden, n_layers
        self.train_entities, self.test_entities, self.pool_seed = train_entities, test_entities, pool_seed

    def pools(self) -> tuple[EntityPool, EntityPool]:
        """``(training pool, unseen test pool)``."""
        return entity_pools(self.train_entities, self.test_entities, self.emb_dim, self.pool_seed)

    def causal_model(self) -> CausalModel:
        return standard.hierarchical_equality(self.emb_dim)

    def build_network(self) -> nn.Module:
        return VectorMLP(4 * self.emb_dim, self.hidden, self.n_layers, 2)

    def alignments(self) -> Mapping[str, Mapping[str, AlignedTo]]:
        """``default``: WX -> ``layers.0[0:h/2)``, YZ -> ``[h/2:h)``; ``swapped`` exchanges the
        halves; ``second_layer`` uses the same halves of ``layers.1``."""
        half = self.hidden // 2
        first, second = Index.dims(0, half), Index.dims(half, self.hidden)
        return {
            "default": {"WX": Coordinate("layers.0", first), "YZ": Coordinate("layers.0", second)},
            "swapped": {"WX": Coordinate("layers.0", second), "YZ": Coordinate("layers.0", first)},
            "second_layer": {"WX": Coordinate("layers.1", first), "YZ": Coordinate("layers.1", second)},
        }


    def encode_inputs(self, values: Mapping[str, Tensor]) -> Tensor:
        """``[batch, 4 * emb_dim]``: ``W, X, Y, Z`` concatenated."""
        return torch.cat([values[k] for k in ("W", "X", "Y", "Z")], dim=1)
