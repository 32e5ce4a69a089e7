"""Find the tensor a model output stands for (shared by training and attribution)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from iit.errors import TargetError

__all__ = ["output_tensor"]


def output_tensor(output: Any) -> Tensor:
    """Return the tensor an output stands for: itself, ``.logits``, or element 0 of a tuple.

    Args:
        output: a model's output (a tensor, a ``ModelOutput`` with ``logits``, or a tuple / list
            whose first element is a tensor).

    Returns:
        The tensor, as the model produced it (e.g. logits ``[batch, seq, vocab]``).

    Raises:
        TargetError: if no tensor can be found in ``output``.

    Examples:
        >>> import torch
        >>> output_tensor((torch.ones(2, 3), "cache")).shape
        torch.Size([2, 3])
    """
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TargetError(
        f"cannot find a tensor in the model output of type {type(output).__name__}; "
        "pass a callable that maps the output to a tensor"
    )
