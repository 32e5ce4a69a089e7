"""A handcrafted network whose alignment is known, for alignment-search examples and tests.

``S = x + y`` (digit sum ``x, y, z -> S -> O = S + z``) lies along one *rotated* direction of
``l0`` (no single neuron holds it: ``h0 = R [x + y, z, x, y]`` for a fixed rotation ``R``) and in
neuron 0 of ``l1`` (``h1 = R^T h0``). The logits ``-(h1[0] + h1[1] - c)^2`` over the classes
``c = 0 .. 3 * max_digit`` make the output exact.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["RotatedSum", "encode_digits"]


class RotatedSum(nn.Module):
    """``[batch, 3]`` digits ``(x, y, z)`` -> logits ``[batch, 3 * max_digit + 1]``.

    Args:
        max_digit: digits are ``0 .. max_digit``.
        seed: seeds the rotation ``R``.
    """

    def __init__(self, max_digit: int = 3, seed: int = 7) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        r, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
        basis = torch.tensor([[1.0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=torch.float64)
        self.l0 = nn.Linear(3, 4, bias=False)
        self.l1 = nn.Linear(4, 4, bias=False)
        with torch.no_grad():
            self.l0.weight.copy_((r @ basis).float())
            self.l1.weight.copy_(r.T.float())
        self.register_buffer("classes", torch.arange(3 * max_digit + 1, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        u = self.l1(self.l0(x))  # [batch, 4]
        o = u[:, 0] + u[:, 1]
        return -((o[:, None] - self.classes) ** 2)


def encode_digits(values: Mapping[str, Tensor]) -> Tensor:
    """``[batch, 3]`` floats ``(x, y, z)`` from causal input values."""
    return torch.stack([values[k].float() for k in "xyz"], dim=1)
