"""Synthetic data of the semiring-backpropagation experiments.

* `first_token_repeated_once` follows ``preprocessing/datasets.py`` of the paper's code
  (reference §5.2): vocab 20 with 0 reserved for padding, length 10, half the examples have the
  first token repeated exactly once at a uniformly drawn position ``r >= 1``; ``RandomState(0)``.
* `ffoom`: "four features, only one matters": ``X ~ U[0, 1)^{N x 4}``, ``y = X[:, 0] > 0.5``.
* `sva_grammar`: a tiny subject-verb-agreement grammar written here (the paper used the
  Linzen/Goldberg dataset, which is not available offline): ``[CLS] the (ADJ) N_subj
  (PREP the (ADJ) N_attr) [MASK]``; the label is the subject's number, and the optional
  prepositional phrase carries an attractor noun of either number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from iit.errors import ArgumentError

__all__ = [
    "TokenDataset",
    "first_token_repeated_once",
    "ffoom",
    "SVA_VOCAB",
    "sva_grammar",
    "split",
]


@dataclass(frozen=True)
class TokenDataset:
    """Token ids ``[N, T]``, labels ``[N]`` and per-example metadata ``[N, k]`` (task-specific:
    FirstTokenRepeatedOnce stores the repeat position or -1; SVA stores subject and attractor
    positions or -1)."""

    ids: Tensor
    labels: Tensor
    meta: Tensor


def first_token_repeated_once(
    num_points: int = 1000, vocab_size: int = 20, seq_len: int = 10, seed: int = 0
) -> TokenDataset:
    """FirstTokenRepeatedOnce. ``meta[:, 0]`` = position of the repeat (``-1`` if ``y = 0``).

    Raises:
        ValueError: if ``vocab_size < 3`` or ``seq_len < 2``.
    """
    if vocab_size < 3 or seq_len < 2:
        raise ArgumentError(f"need vocab_size >= 3 and seq_len >= 2, got {vocab_size}, {seq_len}")
    rng = np.random.RandomState(seed=seed)
    eligible = np.arange(1, vocab_size)
    labels = np.zeros(num_points, dtype=np.int64)
    labels[: num_points // 2] = 1
    labels = labels[rng.permutation(num_points)]
    ids = np.zeros((num_points, seq_len), dtype=np.int64)
    meta = np.full((num_points, 1), -1, dtype=np.int64)
    for i, y in enumerate(labels):
        first = rng.choice(eligible)
        others = eligible[eligible != first]
        ids[i, 0] = first
        ids[i, 1:] = rng.choice(others, size=seq_len - 1)
        if y == 1:
            r = rng.randint(1, seq_len)
            ids[i, r] = first
            meta[i, 0] = r
    return TokenDataset(torch.from_numpy(ids), torch.from_numpy(labels), torch.from_numpy(meta))


def ffoom(num_points: int = 10000, seed: int = 0) -> tuple[Tensor, Tensor]:
    """FFOOM: ``X`` ``[N, 4]`` uniform in ``[0, 1)`` (float32) and ``y = 1[X[:, 0] > 0.5]``."""
    rng = np.random.RandomState(seed=seed)
    x = rng.uniform(size=(num_points, 4)).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy((x[:, 0] > 0.5).astype(np.int64))


SVA_VOCAB: tuple[str, ...] = (
    "[PAD]", "[CLS]", "[MASK]", "the",
    "dog", "cat", "boy", "girl", "car",  # singular nouns 4..8
    "dogs", "cats", "boys", "girls", "cars",  # plural nouns 9..13
    "near", "behind", "with",  # prepositions 14..16
    "big", "old", "red",  # adjectives 17..19
)  # fmt: skip
_SING, _PLUR = list(range(4, 9)), list(range(9, 14))
_PREP, _ADJ = list(range(14, 17)), list(range(17, 20))
SVA_LEN = 10


def sva_grammar(num_points: int = 2000, seed: int = 0, p_attractor: float = 0.7) -> TokenDataset:
    """Subject-verb agreement sentences. ``labels``: 0 = singular subject, 1 = plural.

    ``meta[:, 0]`` = subject position, ``meta[:, 1]`` = attractor position (``-1`` if none),
    ``meta[:, 2]`` = 1 if the attractor's number differs from the subject's.
    """
    rng = np.random.RandomState(seed=seed)
    ids = np.zeros((num_points, SVA_LEN), dtype=np.int64)
    labels = rng.randint(0, 2, size=num_points)
    meta = np.full((num_points, 3), -1, dtype=np.int64)
    for i, y in enumerate(labels):
        toks = [1, 3]
        if rng.rand() < 0.3:
            toks.append(rng.choice(_ADJ))
        meta[i, 0] = len(toks)
        toks.append(rng.choice(_PLUR if y else _SING))
        meta[i, 2] = 0
        if rng.rand() < p_attractor:
            toks += [rng.choice(_PREP), 3]
            if rng.rand() < 0.3:
                toks.append(rng.choice(_ADJ))
            plural_attr = rng.rand() < 0.5
            meta[i, 1] = len(toks)
            meta[i, 2] = int(plural_attr != bool(y))
            toks.append(rng.choice(_PLUR if plural_attr else _SING))
        toks.append(2)
        ids[i, : len(toks)] = toks
    return TokenDataset(torch.from_numpy(ids), torch.from_numpy(labels), torch.from_numpy(meta))


def split(n: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Index tensors of a 0.7 / 0.1 / 0.2 train/val/test split (``random_split`` semantics)."""
    parts = torch.utils.data.random_split(
        range(n), [0.7, 0.1, 0.2], generator=torch.Generator().manual_seed(seed)
    )
    return tuple(torch.tensor(list(p.indices)) for p in parts)  # type: ignore[return-value]
