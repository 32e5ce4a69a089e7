"""A handcrafted network whose alignment is known: ``S = x + y`` lies along one rotated
direction of ``l0`` (no single neuron holds it) and in neuron 0 of ``l1``."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from causal_models import standard
from iit import Interventionable
from iit.search import CounterfactualSplits, SearchProblem, module_places

MAX_DIGIT = 3


class HandcraftedSum(nn.Module):
    """``h0 = R [x + y, z, x, y]`` (``R`` a fixed rotation), ``h1 = R^T h0``, logits
    ``-(h1[0] + h1[1] - c)^2`` over ``c = 0 .. 3 * MAX_DIGIT``."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(7)
        r, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
        basis = torch.tensor([[1.0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=torch.float64)
        self.l0 = nn.Linear(3, 4, bias=False)
        self.l1 = nn.Linear(4, 4, bias=False)
        with torch.no_grad():
            self.l0.weight.copy_((r @ basis).float())
            self.l1.weight.copy_(r.T.float())
        self.register_buffer("classes", torch.arange(3 * MAX_DIGIT + 1, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        u = self.l1(self.l0(x))
        o = u[:, 0] + u[:, 1]
        return -((o[:, None] - self.classes) ** 2)


def encode(values: dict[str, Tensor]) -> Tensor:
    return torch.stack([values[k].float() for k in "xyz"], dim=1)


@pytest.fixture()
def problem() -> SearchProblem:
    return SearchProblem(Interventionable(HandcraftedSum()), standard.digit_sum(MAX_DIGIT), "S", encode)


@pytest.fixture(scope="session")
def splits() -> CounterfactualSplits:
    return CounterfactualSplits.generate(standard.digit_sum(MAX_DIGIT), "S", (512, 256, 512), seed=0)


@pytest.fixture()
def places() -> list:
    return module_places(["l0", "l1"])
