"""Per-place data of a search: encoded inputs, source activations and labels of each split,
collected once per place and shared by every cell there."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from causal_models.data import CounterfactualBatch
from iit.activations import Activations
from iit.search.problem import CounterfactualSplits, Place, SearchProblem

__all__ = ["SplitData", "PlaceData", "collect_place"]


@dataclass(frozen=True)
class SplitData:
    """One split at one place.

    Attributes:
        batch: the counterfactual pairs.
        sources: source activations at the place (``Activations`` keyed by the place's
            coordinate), ``[n, ..., d]``.
        bases: base activations at the place, ``[n, ..., d]`` (for unsupervised fits, e.g. PCA).
        labels: counterfactual class indices ``[n]``.
        impactful: bool ``[n]``: the intervention changes the causal output.

    Raises:
        TypeError: a missing or unknown field (made by `collect_place`).
    """

    batch: CounterfactualBatch
    sources: Activations
    bases: Tensor
    labels: Tensor
    impactful: Tensor

    def __len__(self) -> int:
        return len(self.batch)

    def chunks(self, size: int, order: Tensor | None = None) -> Iterator[tuple[CounterfactualBatch, Activations, Tensor]]:
        """``(pairs, source activations, labels)`` in chunks of ``size`` rows (in ``order``).

        Args:
            size: rows per chunk (the last may be shorter).
            order: LongTensor ``[n]``: the row order (default: as stored).

        Returns:
            An iterator of ``(pairs, activations [size, ..., d], labels [size])``.
        """
        order = torch.arange(len(self)) if order is None else order
        for start in range(0, len(self), size):
            idx = order[start : start + size]
            yield self.batch.select(idx), self.sources.rows(idx), self.labels[idx]


@dataclass(frozen=True)
class PlaceData:
    """The three splits at one place, and the width ``d`` of its last axis.

    Made by `collect_place`.

    Attributes:
        place: the place.
        train: the pairs methods are fitted on.
        validation: the pairs the best epoch is selected on.
        test: the held-out pairs cells are scored on.

    Raises:
        TypeError: a missing or unknown field.
    """

    place: Place
    train: SplitData
    validation: SplitData
    test: SplitData

    @property
    def d(self) -> int:
        """Width of the place's last axis (from the training activations ``[n, ..., d]``)."""
        return int(self.train.bases.shape[-1])


def _collect(problem: SearchProblem, batch: CounterfactualBatch, place: Place, chunk: int) -> SplitData:
    coordinate = place.coordinate
    sources, bases = [], []
    with torch.no_grad():
        for start in range(0, len(batch), chunk):
            idx = torch.arange(start, min(start + chunk, len(batch)))
            part = batch.select(idx)
            sources.append(problem.model.collect(problem.encode_inputs(part.sources[0]), [coordinate])[coordinate])
            bases.append(problem.model.collect(problem.encode_inputs(part.base), [coordinate])[coordinate])
    labels = problem.labels(batch.counterfactual_output)
    return SplitData(batch, Activations({coordinate: torch.cat(sources)}), torch.cat(bases), labels, batch.impactful)


def collect_place(problem: SearchProblem, splits: CounterfactualSplits, place: Place, chunk: int = 1024) -> PlaceData:
    """Collect the source and base activations of every split at ``place``.

    Raises:
        CoordinateError: the place does not resolve on the model.
    """
    return PlaceData(
        place,
        _collect(problem, splits.train, place, chunk),
        _collect(problem, splits.validation, place, chunk),
        _collect(problem, splits.test, place, chunk),
    )
