"""What an attribution explains: pick one scalar per batch row out of a model's output.

Every attribution method in `iit.attribution` takes a ``target`` in the same forms:

* ``int``: a class / logit index, the same for every row (output ``[batch, classes]``);
* ``Tensor[batch]`` of ints: one class index per row;
* a callable ``output -> Tensor[batch]``: any scalar function of the model's output (use it
  for sequence outputs ``[batch, seq, vocab]``, regression heads, or a logit difference).

``output`` is first reduced to a tensor by `output_tensor` (``.logits`` of Hugging Face
outputs, element 0 of a tuple), except for callables, which receive the raw output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from iit.errors import TargetError
from iit.outputs import output_tensor

Target = int | Tensor | Callable[[Any], Tensor]
"""What an attribution explains: an output class index, a tensor of indices ``[batch]``, or a function of the model output returning scores ``[batch]``."""

__all__ = ["Target", "output_tensor", "target_scores"]


def target_scores(output: Any, target: Target) -> Tensor:
    """Reduce a model output to one scalar per row, ``[batch]``.

    Args:
        output: the model's output (tensor ``[batch, classes]``, HF output, tuple, ...).
        target: see the module docstring.

    Returns:
        ``Tensor[batch]`` of the selected scores (differentiable).

    Raises:
        TargetError: if the target does not fit the output (index out of range, wrong batch
            size, output not 2-D for an index target, callable returning the wrong shape).
    """
    if callable(target) and not isinstance(target, Tensor):
        scores = target(output)
        if not isinstance(scores, Tensor) or scores.dim() != 1:
            raise TargetError(
                "a callable target must return a 1-D tensor [batch], got "
                f"{type(scores).__name__} of shape {tuple(getattr(scores, 'shape', ()))}"
            )
        return scores
    logits = output_tensor(output)
    if logits.dim() == 1:
        raise TargetError(
            f"the model output has shape {tuple(logits.shape)}: an index target needs "
            "[batch, classes]; use target=lambda out: out for a scalar-per-row output"
        )
    if logits.dim() != 2:
        raise TargetError(
            f"the model output has shape {tuple(logits.shape)}: an index target needs "
            "[batch, classes]; for sequence outputs pass a callable, e.g. "
            "target=lambda out: out.logits[:, -1, token_id]"
        )
    batch, classes = logits.shape
    if isinstance(target, bool):
        raise TargetError("target must be an int, a Tensor[batch] or a callable, got bool")
    if isinstance(target, int):
        if not -classes <= target < classes:
            raise TargetError(f"target index {target} is out of range for {classes} classes")
        return logits[:, target]
    if isinstance(target, Tensor):
        if target.shape != (batch,) or target.dtype in (
            torch.float16,
            torch.float32,
            torch.float64,
        ):
            raise TargetError(
                f"a tensor target must be integer class indices of shape ({batch},), got "
                f"{target.dtype} of shape {tuple(target.shape)}"
            )
        if (target < 0).any() or (target >= classes).any():
            raise TargetError(f"target indices must lie in [0, {classes}), got {target.tolist()}")
        return logits.gather(1, target.to(logits.device).long().unsqueeze(1)).squeeze(1)
    raise TargetError(
        f"target must be an int, a Tensor[batch] or a callable, got {type(target).__name__}"
    )
