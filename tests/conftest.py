"""Shared fixtures: small models built from configs (random init, no hub access)."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)


class ToyMLP(nn.Module):
    """in 4 -> 8 -> 8 -> 3 with ReLUs; `layers.i` are the hidden blocks."""

    def __init__(self, d_in: int = 4, d_hidden: int = 8, d_out: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU()), nn.Sequential(nn.Linear(d_hidden, d_hidden), nn.ReLU())]
        )
        self.head = nn.Linear(d_hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


class AnchoredGraph(nn.Module):
    """Seed-004 style hand-written network: nn.Identity anchors expose slices of hidden states.

    x [batch, 3, 5] (three one-hot-ish operands) -> shared embedding -> anchors a, b, c ->
    concat -> dense -> anchors d (first half) and e (second half) -> head.
    """

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(5, 6)
        self.a, self.b, self.c = nn.Identity(), nn.Identity(), nn.Identity()
        self.dense = nn.Linear(18, 12)
        self.d, self.e = nn.Identity(), nn.Identity()
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(self.embed(x[:, 0]))
        b = self.b(self.embed(x[:, 1]))
        c = self.c(self.embed(x[:, 2]))
        h = torch.tanh(self.dense(torch.cat([a, b, c], dim=-1)))
        d = self.d(h[:, :6])
        e = self.e(h[:, 6:])
        return self.head(torch.cat([d, e], dim=-1))


@pytest.fixture
def mlp() -> ToyMLP:
    torch.manual_seed(0)
    return ToyMLP()


@pytest.fixture
def anchored() -> AnchoredGraph:
    torch.manual_seed(1)
    return AnchoredGraph()


def make_gpt2(n_layer: int = 2, n_embd: int = 32, n_head: int = 4, vocab: int = 64):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(2)
    config = GPT2Config(
        n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab, n_positions=64,
        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config).eval()


@pytest.fixture
def gpt2():
    return make_gpt2()
