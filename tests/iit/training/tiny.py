"""A tiny digit-sum task used by the training tests (digits 0..4, small MLP)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from causal_models import standard
from iit import Coordinate, Index
from iit.training import IITTask


class TinyNet(nn.Module):
    """digits [batch, 3] -> float one-hots [batch, 15] -> layers.0 (16) -> layers.1 (16) -> head (13)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Sequential(nn.Linear(15, 16), nn.Tanh()), nn.Sequential(nn.Linear(16, 16), nn.Tanh())])
        self.head = nn.Linear(16, 13)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


class TinyDigitSum(IITTask):
    name = "tiny_digit_sum"

    def __init__(self, variables: tuple[str, ...] = ("S", "z")) -> None:
        self.variables = variables
        self.encoded: list[Tensor] = []
        self.track_inputs = False

    def causal_model(self):
        return standard.digit_sum(4)

    def build_network(self) -> nn.Module:
        torch.manual_seed(0)
        return TinyNet()

    def alignments(self):
        return {
            "default": {"S": Coordinate("layers.0", Index.dims(0, 8)), "z": Coordinate("layers.0", Index.dims(8, 16))},
            "swapped": {"S": Coordinate("layers.0", Index.dims(8, 16)), "z": Coordinate("layers.0", Index.dims(0, 8))},
        }

    def candidate_variables(self):
        return self.variables

    def encode_inputs(self, values: Mapping[str, Tensor]) -> Tensor:
        x = torch.cat([nn.functional.one_hot(values[k].long(), 5).float() for k in "xyz"], dim=1)
        if self.track_inputs:
            x.requires_grad_(True)
            self.encoded.append(x)
        return x
