"""The dtype a computation runs in: the model's own dtype, except that half types (float16,
bfloat16) upcast to float32, the way Hugging Face eager attention computes its softmax.

Use `upcast` wherever a reduction (softmax, a mean, a sort key) would lose accuracy in a half
type; never a bare ``.float()``, which silently drops a float64 model to float32 accuracy.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["HALF_DTYPES", "compute_dtype", "upcast"]

HALF_DTYPES: frozenset[torch.dtype] = frozenset({torch.float16, torch.bfloat16})


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for float16 / bfloat16, else ``dtype`` itself (float64 stays float64)."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def upcast(t: Tensor) -> Tensor:
    """``t`` in `compute_dtype` of its dtype (no copy for float32 / float64 tensors)."""
    return t.to(compute_dtype(t.dtype))
