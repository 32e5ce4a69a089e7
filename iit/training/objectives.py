"""IIT objectives as plain functions (the functional core of `iit.training.IITModule`).

Shapes: ``logits`` are the network's decoded outputs ``[batch, classes]`` for classification or
``[batch]`` / ``[batch, d]`` for regression; ``labels`` are class indices ``[batch]`` (int64) or
targets shaped like the predictions.

* behaviour (task) loss: ``loss(N(b), H(b))``;
* IIT loss: ``loss(N_{Π(V) <- N(s)}(b), H_{V <- H(s)}(b))`` — same function, counterfactual
  labels from the causal model;
* strict IIT (SIIT) loss: ``loss(N_{U <- N(s)}(b), H(b))`` for unaligned coordinates ``U``.

All three are `prediction_loss` applied to different pairs; IIA is `correct`
averaged over pairs.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from iit.errors import IITError

__all__ = ["TaskKind", "prediction_loss", "correct"]

TaskKind = Literal["classification", "regression"]


def prediction_loss(logits: Tensor, labels: Tensor, kind: TaskKind) -> Tensor:
    """Mean loss of predictions against labels.

    Args:
        logits: ``[batch, classes]`` (classification) or ``[batch, ...]`` (regression).
        labels: ``[batch]`` class indices, or targets shaped like ``logits``.
        kind: ``"classification"`` (cross-entropy) or ``"regression"`` (mean squared error).

    Returns:
        A scalar tensor (0 for an empty batch).

    Raises:
        IITError: shapes that do not fit the task kind.
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    if kind == "classification":
        if logits.dim() != 2 or labels.shape != logits.shape[:1]:
            raise IITError(
                f"classification needs logits [batch, classes] and labels [batch], got "
                f"{tuple(logits.shape)} and {tuple(labels.shape)}"
            )
        return F.cross_entropy(logits, labels.long())
    if logits.shape != labels.shape:
        raise IITError(
            f"regression needs predictions and targets of one shape, got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    return F.mse_loss(logits, labels.to(logits.dtype))


def correct(logits: Tensor, labels: Tensor, kind: TaskKind, atol: float = 0.05) -> Tensor:
    """bool ``[batch]``: the prediction matches the label (argmax for classification; every
    entry within ``atol`` for regression).

    Args:
        logits: classification: ``[batch, classes]``; regression: predictions ``[batch, ...]``.
        labels: classification: class indices ``[batch]``; regression: targets shaped like
            ``logits``.
        kind: ``"classification"`` or ``"regression"``.
        atol: absolute tolerance of a correct regression prediction.

    Raises:
        RuntimeError: (from torch) ``labels`` that do not broadcast against the predictions.

    Examples:
        >>> import torch
        >>> correct(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]), "classification")
        tensor([ True, False])
        >>> correct(torch.tensor([[1.02], [1.5]]), torch.tensor([[1.0], [1.0]]), "regression")
        tensor([ True, False])
    """
    if kind == "classification":
        return logits.argmax(dim=-1) == labels.to(logits.device)
    close = (logits - labels.to(logits.dtype)).abs() <= atol
    return close.reshape(close.shape[0], -1).all(dim=1)


def mean_or_one(values: Tensor) -> Tensor:
    """Mean of a bool / float vector, or 1.0 when it is empty."""
    return values.float().mean() if values.numel() else torch.tensor(1.0)
