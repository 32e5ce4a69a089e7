"""Small networks used by the ready tasks (built from sizes; random init)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TokenMLP", "VectorMLP"]


class TokenMLP(nn.Module):
    """Embed ``n_tokens`` integer tokens, concatenate, then an MLP.

    ``tokens [batch, n_tokens]`` -> ``embed`` -> ``embedded`` (an ``nn.Identity`` anchor,
    ``[batch, n_tokens * d_embed]``) -> ``layers.0 .. layers.{n_layers-1}`` (Linear + ReLU,
    ``[batch, hidden]``) -> ``head`` ``[batch, n_out]``.
    """

    def __init__(self, vocab: int, n_tokens: int, d_embed: int, hidden: int, n_layers: int, n_out: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_embed)
        self.embedded = nn.Identity()
        widths = [n_tokens * d_embed] + [hidden] * n_layers
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(widths[:-1], widths[1:])
        )
        self.head = nn.Linear(widths[-1], n_out)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.embedded(self.embed(tokens).flatten(1))  # [batch, n_tokens * d_embed]
        for layer in self.layers:
            h = layer(h)  # [batch, hidden]
        return self.head(h)  # [batch, n_out]


class VectorMLP(nn.Module):
    """An MLP on real vectors: ``x [batch, d_in]`` -> ``layers.i`` (Linear + ReLU) -> ``head``."""

    def __init__(self, d_in: int, hidden: int, n_layers: int, n_out: int) -> None:
        super().__init__()
        widths = [d_in] + [hidden] * n_layers
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(widths[:-1], widths[1:])
        )
        self.head = nn.Linear(widths[-1], n_out)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def stack_inputs(values: dict[str, Tensor], names: tuple[str, ...]) -> Tensor:
    """``[batch, len(names)]`` integer tokens, or ``[batch, sum of dims]`` real vectors."""
    parts = [values[n] for n in names]
    if parts[0].dim() == 1:
        return torch.stack(parts, dim=1)
    return torch.cat(parts, dim=1)
