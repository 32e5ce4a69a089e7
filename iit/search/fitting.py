"""Fitting one cell's intervention on the training pairs, with the model frozen.

This is the search's one coupling to the DAS trainer (`iit.das.das_step`): each step
runs the intervened model on a minibatch of bases with the cached source activations, takes
the cross-entropy to the counterfactual labels (plus a sparsity penalty for learned masks),
and steps Adam. After every epoch the intervention is scored on the validation pairs and the
best state is kept (selection on validation).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from iit.das import DASBatch, das_step
from iit.errors import ArgumentError
from iit.featurizers.mask import MaskedFeatureInterchange
from iit.interventions import Intervention
from iit.search.data import PlaceData, SplitData
from iit.search.problem import SearchProblem

__all__ = ["FitSettings", "fit_intervention", "correct_rows"]


@dataclass(frozen=True)
class FitSettings:
    """How each trainable cell is fitted.

    Attributes:
        epochs: passes over the training pairs.
        batch_size: pairs per step.
        lr: Adam learning rate.
        sparsity: weight of a learned mask's sparsity penalty (per feature, averaged).
        temperature: ``(start, end)`` of a sigmoid mask's temperature, annealed linearly per step.
        eval_batch_size: pairs per evaluation forward.

    Raises:
        ArgumentError: non-positive sizes or learning rate, negative sparsity.
    """

    epochs: int = 5
    batch_size: int = 256
    lr: float = 1e-2
    sparsity: float = 0.01
    temperature: tuple[float, float] = (1.0, 0.05)
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        if min(self.epochs, self.batch_size, self.eval_batch_size) < 1 or self.lr <= 0 or self.sparsity < 0:
            raise ArgumentError(f"FitSettings needs positive epochs / sizes / lr and sparsity >= 0, got {self}")


def correct_rows(problem: SearchProblem, intervention: Intervention, split: SplitData, batch_size: int) -> Tensor:
    """bool ``[n]``: the intervened network predicts the counterfactual label (eval mode, no grad).

    Args:
        problem: the search problem.
        intervention: the intervention scored.
        split: the pairs (with their source activations and labels ``[n]``).
        batch_size: rows per forward.

    Raises:
        InterventionShapeError: an intervention that does not fit the place's hidden state.
    """
    was = intervention.training
    intervention.eval()
    out = []
    with torch.no_grad():
        for pairs, sources, labels in split.chunks(batch_size):
            output = problem.model.intervene(problem.encode_inputs(pairs.base), [intervention], [sources])
            out.append(problem.decode_output(output).argmax(-1) == labels)
    intervention.train(was)
    return torch.cat(out)


def fit_intervention(
    problem: SearchProblem,
    intervention: Intervention,
    data: PlaceData,
    settings: FitSettings,
    generator: torch.Generator,
    final: Callable[[Intervention], Intervention] = lambda iv: iv,
) -> tuple[Intervention, dict[str, Any]]:
    """Train ``intervention`` on ``data.train``; keep the epoch whose ``final(intervention)``
    scores best on ``data.validation``.

    Args:
        problem: the search problem.
        intervention: the intervention to train (its parameters are optimised).
        data: the place's splits (training and validation are used).
        settings: epochs, batch sizes, learning rate, sparsity and temperature.
        generator: RNG of the per-epoch shuffling.
        final: the intervention that is evaluated, made from the trained one (e.g. a learned
            mask's top-k hard interchange).

    Returns:
        ``(final intervention of the best epoch, {"best_epoch", "val_iia", "losses"})``.

    Raises:
        ValueError: (from torch) an intervention without trainable parameters (Adam gets an
            empty parameter list).
        InterventionError: a learned intervention's parameter outside its range before a step
            (see `iit.das.das_step`).
    """
    params = [p for p in intervention.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    mask = intervention if isinstance(intervention, MaskedFeatureInterchange) else None
    n_features = len(mask.logits) if mask is not None else 1

    def loss_fn(output: Any, labels: Tensor) -> Tensor:
        loss = F.cross_entropy(problem.decode_output(output), labels)
        if mask is not None and settings.sparsity > 0:
            loss = loss + settings.sparsity * mask.penalty() / n_features
        return loss

    steps = settings.epochs * -(-len(data.train) // settings.batch_size)
    start_t, end_t = settings.temperature
    best: tuple[float, int, dict[str, Tensor]] | None = None
    losses: list[float] = []
    step = 0
    for epoch in range(settings.epochs):
        intervention.train()
        order = torch.randperm(len(data.train), generator=generator)
        for pairs, sources, labels in data.train.chunks(settings.batch_size, order):
            if mask is not None:
                mask.set_temperature(start_t + (end_t - start_t) * step / max(steps - 1, 1))
            batch = DASBatch(problem.encode_inputs(pairs.base), [sources], labels)
            losses.append(das_step(problem.model, [intervention], batch, loss_fn, optimizer))
            step += 1
        score = float(correct_rows(problem, final(intervention), data.validation, settings.eval_batch_size).float().mean())
        if best is None or score > best[0]:
            best = (score, epoch, copy.deepcopy(intervention.state_dict()))
    assert best is not None
    intervention.load_state_dict(best[2])
    intervention.eval()
    return final(intervention), {"best_epoch": best[1], "val_iia": best[0], "losses": losses}
