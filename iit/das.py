"""Training learned interventions (DAS) on a frozen model, with source activations cached
across epochs.

The wrapped model must be frozen (no parameter requires grad): then the values a source run
gives never change, so `SourceCache` collects them once per batch and every later epoch
skips the source runs. Only the interventions' parameters are optimised.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from iit.activations import Activations
from iit.alignment_checks import check_interventions, check_parameter_ranges
from iit.errors import ArgumentTypeError, InterventionError, InterventionShapeError
from iit.hooks import Inputs, batch_size
from iit.interventionable import Interventionable
from iit.interventions import Intervention
from iit.trainable import LearnedInterventions, TrainingProgress

__all__ = ["DASBatch", "DASConfig", "SourceCache", "check_frozen", "train_das", "das_step"]


@dataclass(frozen=True)
class DASBatch:
    """One training batch: base inputs, source inputs (one per source slot) and the labels the
    intervened output should predict.

    Args:
        base: the base inputs (a tensor ``[batch, ...]``, a tuple, or a dict of keyword
            arguments).
        sources: one input per source slot, each with ``batch`` rows like ``base``.
        labels: what the intervened output should predict, ``[batch, ...]`` (e.g. class ids
            ``[batch]`` for a cross-entropy ``loss_fn``).

    Raises:
        ArgumentTypeError: ``sources`` is not a list / tuple (one tensor where a list of sources
            is expected), or ``labels`` is not a tensor.
        InterventionShapeError: base, sources and labels do not have the same number of rows.
    """

    base: Inputs
    sources: Sequence[Inputs]
    labels: Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.sources, (list, tuple)):
            raise ArgumentTypeError(
                f"DASBatch.sources must be a list with one input per source slot, got "
                f"{type(self.sources).__name__}; wrap a single source: sources=[source]"
            )
        if not isinstance(self.labels, Tensor):
            raise ArgumentTypeError(f"DASBatch.labels must be a tensor [batch, ...], got {type(self.labels).__name__}")
        rows = {"base": batch_size(self.base), "labels": self.labels.shape[0] if self.labels.dim() else None}
        rows.update({f"source {i}": batch_size(s) for i, s in enumerate(self.sources)})
        known = {k: v for k, v in rows.items() if v is not None}
        if len(set(known.values())) > 1:
            raise InterventionShapeError(
                f"DASBatch: base, sources and labels must have the same number of rows, got {known}; "
                "row i of every source and of the labels belongs to base row i"
            )


@dataclass(frozen=True)
class DASConfig:
    """Optimisation settings (Adam).

    Attributes:
        epochs: passes over the batches.
        lr: learning rate of rotations.
        boundary_lr: learning rate of Boundless DAS boundaries.
        boundary_penalty: weight of the boundary-size term of Boundless DAS.
        temperature: ``(start, end)`` of the linear temperature schedule (Boundless DAS).
        cache_sources: reuse source activations across epochs.

    Raises:
        InterventionError: ``epochs < 1``, a learning rate ``<= 0``, a negative
            ``boundary_penalty``, or a temperature pair that is not two values ``> 0``.
    """

    epochs: int = 1
    lr: float = 1e-3
    boundary_lr: float = 1e-2
    boundary_penalty: float = 1.0
    temperature: tuple[float, float] = (50.0, 0.1)
    cache_sources: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or not self.lr > 0 or not self.boundary_lr > 0:
            raise InterventionError(f"DASConfig needs epochs >= 1 and positive learning rates, got {self}")
        if not self.boundary_penalty >= 0:
            raise InterventionError(f"DASConfig.boundary_penalty must be >= 0, got {self.boundary_penalty}")
        if len(self.temperature) != 2 or not all(t > 0 for t in self.temperature):
            raise InterventionError(
                f"DASConfig.temperature must be (start, end) with both > 0, got {self.temperature}"
            )


def check_frozen(model: Interventionable) -> None:
    """Raise unless every parameter of the wrapped model has ``requires_grad=False``.

    Raises:
        InterventionError: naming the trainable parameters (and how to freeze them).
    """
    trainable = [n for n, p in model.model.named_parameters() if p.requires_grad]
    if trainable:
        shown = ", ".join(trainable[:5]) + (" ..." if len(trainable) > 5 else "")
        raise InterventionError(
            f"DAS trains interventions on a frozen model, but {len(trainable)} model parameter(s) "
            f"require grad ({shown}); call model.model.requires_grad_(False) first (cached source "
            "activations would be stale if the model changed)"
        )


@dataclass
class SourceCache:
    """Source activations per batch index, collected once on the frozen model.

    Args:
        model: the wrapped (frozen) model.
        interventions: the interventions whose source coordinates are collected.

    Raises:
        InterventionError: a parameter of the wrapped model requires grad (cached values would
            go stale).
    """

    model: Interventionable
    interventions: Sequence[Intervention]
    _store: dict[int, list[Activations]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        check_frozen(self.model)

    def sources(self, index: int, batch: DASBatch) -> list[Activations]:
        """Activations standing in for ``batch.sources`` (collected on first use of ``index``).

        Args:
            index: the batch's position in the training data (the cache key).
            batch: the batch whose sources are collected on a miss.

        Returns:
            One `iit.Activations` per source slot, values ``[batch, ...]``.

        Raises:
            CoordinateError: a source coordinate that does not fit the model.
        """
        if index not in self._store:
            self._store[index] = collect_sources(self.model, self.interventions, batch.sources)
        return self._store[index]

    def __len__(self) -> int:
        return len(self._store)


def collect_sources(
    model: Interventionable, interventions: Sequence[Intervention], sources: Sequence[Inputs]
) -> list[Activations]:
    """One `Activations` per source slot with every source coordinate that reads it
    (``detach=True``: no graph is kept)."""
    out = []
    for slot, source in enumerate(sources):
        coords: list[Any] = []
        for iv in interventions:
            if iv.needs_source and iv.source == slot and not any(c is iv.source_coordinate for c in coords):
                coords.append(iv.source_coordinate)
        out.append(model.collect(source, coords, detach=True) if coords else Activations({}))
    return out


def das_step(
    model: Interventionable,
    interventions: Sequence[Intervention],
    batch: DASBatch,
    loss_fn: Callable[[Any, Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    sources: Sequence[Inputs | Activations] | None = None,
    boundary_penalty: float = 0.0,
) -> float:
    """One optimisation step: intervened forward, ``loss_fn(output, labels)`` (+
    ``boundary_penalty`` times the interventions' regularizer terms, e.g. Boundless DAS's
    boundary size), backward, ``optimizer.step()``, then each intervention's
    ``after_optimizer_step`` (Boundless boundaries are projected back to ``[1e-3, 1]``); see
    `iit.trainable`. Returns the loss.

    Args:
        model: the wrapped model.
        interventions: the learned interventions applied (and stepped).
        batch: base, sources and labels ``[batch, ...]``.
        loss_fn: ``loss_fn(output, labels)`` -> 0-d loss tensor ``[]``.
        optimizer: the optimizer over the interventions' parameters.
        sources: stand-ins for ``batch.sources`` (e.g. cached `iit.Activations`); default:
            ``batch.sources``.
        boundary_penalty: weight of the interventions' regularizer terms.

    Returns:
        The step's loss as a float.

    Raises:
        InterventionError: a Boundless boundary outside ``[1e-3, 1]`` before the step (it is
            never clamped silently; only the projection after a step moves it).
    """
    interventions = [interventions] if isinstance(interventions, Intervention) else list(interventions)
    for iv in interventions:
        check_parameter_ranges(iv, "das_step")
    learned = LearnedInterventions(interventions)
    optimizer.zero_grad(set_to_none=True)
    output = model.intervene(
        batch.base, list(interventions), list(batch.sources if sources is None else sources), detach_sources=True
    )
    loss = loss_fn(output, batch.labels)
    if boundary_penalty:
        regularizer = learned.regularizer()
        if regularizer is not None:
            loss = loss + boundary_penalty * regularizer
    loss.backward()
    optimizer.step()
    learned.after_optimizer_step()
    return float(loss.detach())


def train_das(
    model: Interventionable,
    interventions: Sequence[Intervention],
    batches: Sequence[DASBatch],
    loss_fn: Callable[[Any, Tensor], Tensor],
    config: DASConfig = DASConfig(),
) -> list[float]:
    """Train ``interventions`` on a frozen ``model``; returns the loss of every step.

    ``loss_fn(output, labels)`` gets the intervened output (e.g. logits ``[batch, n_classes]``)
    and the batch's ``labels`` (``[batch, ...]``) and returns a 0-d loss tensor ``[]``.

    The interventions' training protocol (`iit.trainable`) is driven exactly as
    `iit.training.IITModule` drives it in DAS mode: ``on_training_step`` before each
    optimizer step (Boundless DAS: temperature annealed over ``config.temperature``),
    ``config.boundary_penalty`` times their regularizer added to the loss, their
    ``"boundary"`` parameter group trained at ``config.boundary_lr``, ``after_optimizer_step``
    after each step.

    Before the first step, one probe forward on the first batch checks every intervention
    against the real hidden states (`iit.alignment_checks.check_interventions`): a
    rotation wider than its slot fails here, naming both widths, not inside the first step.

    Args:
        model: the wrapped, frozen model.
        interventions: the learned interventions to train (their parameters are optimised).
        batches: the training batches, visited in order every epoch.
        loss_fn: ``loss_fn(output, labels)`` -> 0-d loss tensor.
        config: optimisation settings.

    Returns:
        The loss of every optimizer step, ``config.epochs * len(batches)`` floats.

    Raises:
        InterventionError: a model parameter requires grad, no batches, no trainable
            intervention parameter, or a parameter outside its range.
        ArgumentTypeError: one DASBatch or one intervention where a list is expected.
        AlignmentError: a learned intervention whose width differs from its slot's.
        CoordinateError: a coordinate that does not fit the model.

    Examples:
        The network's output is unit 0 of its hidden state, so the labels of "interchange the
        variable" are the source's unit 0, and the one direction DAS must find is ``±e0``:

        >>> import torch
        >>> from torch import nn
        >>> from iit import Coordinate, Interventionable, LowRankRotatedInterchange
        >>> _ = torch.manual_seed(0)
        >>> readout = nn.Linear(2, 1, bias=False)
        >>> _ = readout.weight.data.copy_(torch.tensor([[1.0, 0.0]]))
        >>> net = Interventionable(nn.Sequential(nn.Identity(), readout)).requires_grad_(False)
        >>> das = LowRankRotatedInterchange(Coordinate("0"), 2, k=1)
        >>> base, source = torch.randn(64, 2), torch.randn(64, 2)
        >>> batch = DASBatch(base, [source], labels=source[:, :1])
        >>> losses = train_das(net, [das], [batch], nn.functional.mse_loss, DASConfig(epochs=200, lr=0.05))
        >>> losses[0] > 0.1, losses[-1] < 1e-6
        (True, True)
        >>> das.rotation.matrix().detach().abs().round(decimals=2)
        tensor([[1.],
                [0.]])
    """
    check_frozen(model)
    if isinstance(batches, DASBatch) or not isinstance(batches, Sequence):
        raise ArgumentTypeError(
            f"train_das needs a list of DASBatch, got {type(batches).__name__}; wrap one batch: [batch]"
        )
    if isinstance(interventions, Intervention):
        raise ArgumentTypeError("train_das needs a list of interventions; wrap one: [intervention]")
    if not batches:
        raise InterventionError("train_das needs at least one batch")
    learned = LearnedInterventions(interventions)
    groups = learned.param_groups(config.lr, {"boundary": config.boundary_lr})
    if not groups:
        raise InterventionError("the interventions have no trainable parameters")
    check_interventions(model, list(interventions), batches[0].base)
    optimizer = torch.optim.Adam(groups)
    total = config.epochs * len(batches)
    cache = SourceCache(model, interventions) if config.cache_sources else None
    losses: list[float] = []
    step = 0
    for _ in range(config.epochs):
        for index, batch in enumerate(batches):
            learned.on_training_step(TrainingProgress(step, total, config.temperature))
            sources = cache.sources(index, batch) if cache is not None else None
            losses.append(
                das_step(model, interventions, batch, loss_fn, optimizer, sources, config.boundary_penalty)
            )
            step += 1
    return losses
