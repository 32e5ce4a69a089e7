"""One seed for a training run: network weights, data and per-step permutations."""

from __future__ import annotations

import os

from iit.errors import ArgumentError

__all__ = ["resolve_seed"]


def resolve_seed(seed: int | None) -> int:
    """The seed a training component uses: ``seed`` when given, else the global seed set by
    ``pytorch_lightning.seed_everything`` (``seed_everything:`` in a CLI config, stored in the
    ``PL_GLOBAL_SEED`` environment variable), else 0.

    `iit.training.IITModule` (initial weights, per-step source permutations) and
    `iit.training.CounterfactualDataModule` (pairs, shuffling) resolve their ``seed``
    argument with this, so ``seed_everything(s)`` alone makes a run repeatable, and a
    different ``s`` changes all three.

    Raises:
        ArgumentError: a negative seed, or a ``PL_GLOBAL_SEED`` that is not an integer.
    """
    if seed is None:
        raw = os.environ.get("PL_GLOBAL_SEED")
        if raw is None:
            return 0
        try:
            seed = int(raw)
        except ValueError:
            raise ArgumentError(f"PL_GLOBAL_SEED must be an integer (set by seed_everything), got {raw!r}") from None
    if seed < 0:
        raise ArgumentError(f"seed must be >= 0, got {seed}")
    return int(seed)
