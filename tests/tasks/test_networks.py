"""The tasks' networks against slow references written here."""

from __future__ import annotations

import math

import pytest
import torch

from tasks.networks import TinyTransformer, TransformerBlock, stack_inputs


def _reference_block(block: TransformerBlock, x: torch.Tensor) -> torch.Tensor:
    """Per-head softmax attention with explicit loops (no fused kernels)."""
    B, T, D = x.shape
    H = block.n_heads
    d_head = D // H
    h = torch.nn.functional.layer_norm(x, (D,), block.ln1.weight, block.ln1.bias)
    w, b = block.qkv.weight, block.qkv.bias
    q, k, v = (h @ w[i * D : (i + 1) * D].T + b[i * D : (i + 1) * D] for i in range(3))
    heads = []
    for head in range(H):
        cols = slice(head * d_head, (head + 1) * d_head)
        scores = q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(d_head)  # [B, T, T]
        heads.append(torch.softmax(scores, dim=-1) @ v[..., cols])
    x = x + torch.cat(heads, dim=-1) @ block.proj.weight.T + block.proj.bias
    h2 = torch.nn.functional.layer_norm(x, (D,), block.ln2.weight, block.ln2.bias)
    return x + block.mlp(h2)


def test_block_matches_reference_attention() -> None:
    torch.manual_seed(0)
    block = TransformerBlock(d_model=12, n_heads=3, d_mlp=20)
    x = torch.randn(5, 4, 12)
    torch.testing.assert_close(block(x), _reference_block(block, x), atol=1e-5, rtol=1e-5)


def test_transformer_reads_out_the_last_position() -> None:
    torch.manual_seed(1)
    net = TinyTransformer(vocab=7, seq_len=4, d_model=16, n_heads=4, d_mlp=32, n_layers=2, n_out=5)
    tokens = torch.randint(0, 7, (6, 4))
    x = net.embed(tokens) + net.pos
    for block in net.blocks:
        x = _reference_block(block, x)
    expected = net.head(net.ln_f(x[:, -1]))
    torch.testing.assert_close(net(tokens), expected, atol=1e-5, rtol=1e-5)
    # attention is bidirectional: changing the first token changes the read-out
    changed = tokens.clone()
    changed[:, 0] = (changed[:, 0] + 1) % 7
    assert not torch.allclose(net(changed), net(tokens))


def test_transformer_bad_input() -> None:
    net = TinyTransformer(vocab=7, seq_len=4, d_model=16, n_heads=4, d_mlp=32, n_layers=1, n_out=5)
    with pytest.raises(ValueError, match=r"expects tokens \[batch, 4\], got \(2, 3\)"):
        net(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="multiple of n_heads"):
        TransformerBlock(d_model=10, n_heads=3, d_mlp=8)


def test_stack_inputs() -> None:
    ints = {"a": torch.tensor([1, 2]), "b": torch.tensor([3, 4])}
    assert stack_inputs(ints, ("b", "a")).tolist() == [[3, 1], [4, 2]]
    vecs = {"a": torch.zeros(2, 3), "b": torch.ones(2, 2)}
    assert stack_inputs(vecs, ("a", "b")).tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 1, 1]]
