"""Find the tensor a model output stands for (shared by training and attribution)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from iit.errors import TargetError

__all__ = ["output_tensor"]


def output_tensor(output: Any) -> Tensor:
    """Return the tensor an output stands for: itself, ``.logits``, or element 0 of a tuple.

    Raises:
        TargetError: if no tensor can be found in ``output``.
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
