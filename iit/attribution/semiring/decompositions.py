"""Which computation graph the semiring pass walks: ATen ops, with a few fused ops decomposed.

The tracer (:mod:`.trace`) records the model at the ATen level and replaces every op in
:data:`DECOMPOSITIONS` by the primitive ops its decomposition calls, so that those appear as
nodes of the gradient graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch._decomp import get_decompositions

aten = torch.ops.aten

__all__ = ["DECOMPOSITIONS"]

#: op overload -> function of the op's arguments that computes it from primitive ATen ops.
DECOMPOSITIONS: dict[Any, Callable[..., Any]] = dict(
    get_decompositions(
        [
            aten._scaled_dot_product_flash_attention_for_cpu,
            aten._scaled_dot_product_efficient_attention,
            aten._scaled_dot_product_flash_attention,
        ]
    )
)
