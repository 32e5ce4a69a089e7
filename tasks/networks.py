"""Small networks used by the ready tasks (built from sizes; random init)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iit.errors import ArgumentError

__all__ = ["TinyTransformer", "TokenMLP", "TransformerBlock", "VectorMLP", "stack_inputs"]


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


class TransformerBlock(nn.Module):
    """A pre-LayerNorm transformer block with bidirectional multi-head attention.

    ``x [batch, seq, d_model]`` -> ``x + attn(ln1(x))`` -> ``+ mlp(ln2(.))``; its output is the
    residual stream after the block, ``[batch, seq, d_model]``.
    """

    def __init__(self, d_model: int, n_heads: int, d_mlp: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ArgumentError(f"d_model={d_model} must be a multiple of n_heads={n_heads}")
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_mlp), nn.GELU(), nn.Linear(d_mlp, d_model))

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=-1)  # [batch, seq, d_model] each
        heads = [t.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v)]
        attn = F.scaled_dot_product_attention(*heads)  # [batch, heads, seq, d_head]
        x = x + self.proj(attn.transpose(1, 2).reshape(B, T, D))  # [batch, seq, d_model]
        return x + self.mlp(self.ln2(x))  # [batch, seq, d_model]


class TinyTransformer(nn.Module):
    """A small bidirectional transformer classifier over integer tokens, read out at the last
    position.

    ``tokens [batch, seq]`` -> token + position embeddings -> ``blocks.0 .. blocks.{n_layers-1}``
    (`TransformerBlock`; each output is the residual stream ``[batch, seq, d_model]``)
    -> ``ln_f`` -> ``head`` on the last position -> ``[batch, n_out]``.

    Args:
        vocab: number of token ids.
        seq_len: the (fixed) sequence length.
        d_model, n_heads, d_mlp, n_layers: the transformer's sizes.
        n_out: number of classes.
    """

    def __init__(
        self, vocab: int, seq_len: int, d_model: int, n_heads: int, d_mlp: int, n_layers: int, n_out: int
    ) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.randn(seq_len, d_model) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, n_heads, d_mlp) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_out)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens [batch, seq_len]`` -> logits ``[batch, n_out]``.

        Raises:
            ValueError: a sequence length other than ``seq_len``.
        """
        if tokens.dim() != 2 or tokens.shape[1] != self.seq_len:
            raise ArgumentError(f"TinyTransformer expects tokens [batch, {self.seq_len}], got {tuple(tokens.shape)}")
        x = self.embed(tokens) + self.pos  # [batch, seq, d_model]
        for block in self.blocks:
            x = block(x)  # [batch, seq, d_model]
        return self.head(self.ln_f(x[:, -1]))  # [batch, n_out]


def stack_inputs(values: dict[str, Tensor], names: tuple[str, ...]) -> Tensor:
    """``[batch, len(names)]`` integer tokens, or ``[batch, sum of dims]`` real vectors."""
    parts = [values[n] for n in names]
    if parts[0].dim() == 1:
        return torch.stack(parts, dim=1)
    return torch.cat(parts, dim=1)
