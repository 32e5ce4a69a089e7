"""ALTI against a slow per-token, per-layer reference written here from the paper's equations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from iit.attribution import ALTI, alti_rollout
from iit.attribution.alti import transformed_vectors
from iit.errors import CoordinateError
from tests.attribution.conftest import tiny_bert, tiny_distilbert, tiny_gpt2, tiny_roberta


def _contribution_row(y: torch.Tensor, vectors: list[torch.Tensor]) -> torch.Tensor:
    """c_ij = max(0, |y_i|_1 - |y_i - T_i(x_j)|_1), normalised over j."""
    raw = torch.stack([torch.clamp(y.abs().sum() - (y - t).abs().sum(), min=0) for t in vectors])
    return raw / raw.sum()


def _reference_bert(model: nn.Module, ids: torch.Tensor) -> list[torch.Tensor]:
    """Post-LN ALTI, one token pair at a time: T_i(x_j) = L(Σ_h α_ij^h (x_j W_V^h + b_V^h) W_O^h
    + δ_ij x_j) / σ(u_i), L(v) = (v - mean v) γ, y_i = LN(u_i)."""
    cfg = model.config
    heads, dh = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
    per_layer = []
    for layer_index, layer in enumerate(model.bert.encoder.layer):
        sa, out = layer.attention.self, layer.attention.output
        gamma, beta, eps = out.LayerNorm.weight, out.LayerNorm.bias, out.LayerNorm.eps
        matrices = []
        for b in range(ids.shape[0]):
            x = hidden[layer_index][b].double()
            n = x.shape[0]
            wq, bq = sa.query.weight.double(), sa.query.bias.double()
            wk, bk = sa.key.weight.double(), sa.key.bias.double()
            wv, bv = sa.value.weight.double(), sa.value.bias.double()
            wo, bo = out.dense.weight.double(), out.dense.bias.double()
            alpha = []
            for h in range(heads):
                s = slice(h * dh, (h + 1) * dh)
                q = x @ wq[s].T + bq[s]
                k = x @ wk[s].T + bk[s]
                alpha.append(torch.softmax(q @ k.T / dh**0.5, -1))

            head_vec = [  # head_vec[h][j] = (x_j W_V^h + b_V^h) W_O^h, [d]
                [
                    (x[j] @ wv[h * dh : (h + 1) * dh].T + bv[h * dh : (h + 1) * dh])
                    @ wo[:, h * dh : (h + 1) * dh].T
                    for j in range(n)
                ]
                for h in range(heads)
            ]

            rows = []
            for i in range(n):
                u = sum(alpha[h][i, j] * head_vec[h][j] for h in range(heads) for j in range(n))
                u = u + bo + x[i]
                sigma = torch.sqrt(u.var(unbiased=False) + eps)
                y = (u - u.mean()) / sigma * gamma.double() + beta.double()
                vectors = []
                for j in range(n):
                    t = sum(alpha[h][i, j] * head_vec[h][j] for h in range(heads))
                    t = t + (x[j] if i == j else 0.0)
                    vectors.append((t - t.mean()) * gamma.double() / sigma)
                rows.append(_contribution_row(y, vectors))
            matrices.append(torch.stack(rows))
        per_layer.append(torch.stack(matrices))
    return per_layer


def _reference_gpt2(model: nn.Module, ids: torch.Tensor) -> list[torch.Tensor]:
    """Pre-LN ALTI: T_i(x_j) = Σ_h α_ij^h v_j^h W_O^h + δ_ij x_j with v_j = LN1(x_j) W_V + b_V,
    resultant y_i = x_i + attention output_i (incl. b_O)."""
    cfg = model.config
    heads, dh, d = cfg.n_head, cfg.n_embd // cfg.n_head, cfg.n_embd
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
    per_layer = []
    for layer_index, block in enumerate(model.transformer.h):
        w, bias = block.attn.c_attn.weight.double(), block.attn.c_attn.bias.double()
        wo, bo = block.attn.c_proj.weight.double(), block.attn.c_proj.bias.double()
        matrices = []
        for b in range(ids.shape[0]):
            x = hidden[layer_index][b].double()
            n = x.shape[0]
            ln = block.ln_1
            a = nn.functional.layer_norm(x, (d,), ln.weight.double(), ln.bias.double(), ln.eps)
            qkv = a @ w + bias
            q, k, v = qkv[:, :d], qkv[:, d : 2 * d], qkv[:, 2 * d :]
            causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
            alpha = []
            for h in range(heads):
                s = slice(h * dh, (h + 1) * dh)
                scores = (q[:, s] @ k[:, s].T / dh**0.5).masked_fill(~causal, float("-inf"))
                alpha.append(torch.softmax(scores, -1))
            rows = []
            for i in range(n):
                vectors = []
                for j in range(n):
                    t = sum(
                        alpha[h][i, j] * (v[j, h * dh : (h + 1) * dh] @ wo[h * dh : (h + 1) * dh])
                        for h in range(heads)
                    )
                    vectors.append(t + (x[j] if i == j else 0.0))
                y = sum(vectors) + bo
                rows.append(_contribution_row(y, vectors))
            matrices.append(torch.stack(rows))
        per_layer.append(torch.stack(matrices))
    return per_layer


def test_alti_matches_paper_reference_on_bert(ids: torch.Tensor) -> None:
    model = tiny_bert()
    ids = ids[:2, :5]
    reference = _reference_bert(model, ids)
    ours = ALTI(model, chunk_rows=2).contributions(ids)
    for layer, expected in enumerate(reference):
        torch.testing.assert_close(ours[layer].double(), expected, atol=1e-5, rtol=0)
    aggregated = reference[1] @ reference[0]
    torch.testing.assert_close(
        ALTI(model).attribute(ids, 0).double(), aggregated[:, 0], atol=1e-5, rtol=0
    )


def test_alti_matches_pre_ln_reference_on_gpt2(ids: torch.Tensor) -> None:
    model = tiny_gpt2()
    ids = ids[:2, :5]
    reference = _reference_gpt2(model, ids)
    ours = ALTI(model).contributions(ids)
    for layer, expected in enumerate(reference):
        torch.testing.assert_close(ours[layer].double(), expected, atol=1e-5, rtol=0)
    assert ALTI(model).position == -1


@pytest.mark.parametrize("factory", [tiny_bert, tiny_roberta, tiny_distilbert, tiny_gpt2])
def test_rows_sum_to_one_and_layernorm_is_reconstructed(factory, ids: torch.Tensor) -> None:
    model = factory()
    alti = ALTI(model)
    for layer in alti.layers(ids):
        vectors = transformed_vectors(layer)  # [B, T, T, D]
        torch.testing.assert_close(
            vectors.sum(2) + layer.bias, layer.resultant, atol=1e-5, rtol=1e-5
        )
    contributions = alti.contributions(ids)
    assert (contributions >= 0).all()
    torch.testing.assert_close(contributions.sum(-1), torch.ones(contributions.shape[:-1]))
    matrices = alti.matrices(ids)
    torch.testing.assert_close(matrices.sum(-1), torch.ones(matrices.shape[:-1]), atol=1e-5, rtol=0)


def test_attention_switched_off_gives_identity(ids: torch.Tensor) -> None:
    model = tiny_bert()
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            layer.attention.output.dense.weight.zero_()
    contributions = ALTI(model).contributions(ids)
    torch.testing.assert_close(contributions, torch.eye(ids.shape[1]).expand_as(contributions))


def test_single_token_and_rollout_shape_checks() -> None:
    model = tiny_bert()
    single = ALTI(model).contributions(torch.tensor([[5]]))
    torch.testing.assert_close(single, torch.ones(2, 1, 1, 1))
    with pytest.raises(ValueError, match="layers, batch, seq, seq"):
        alti_rollout(torch.rand(3, 3))


def test_unsupported_family_lists_supported() -> None:
    from transformers import T5Config, T5EncoderModel

    model = T5EncoderModel(
        T5Config(vocab_size=10, d_model=8, d_ff=8, num_layers=1, num_heads=2, d_kv=4)
    )
    with pytest.raises(CoordinateError, match="supported: \\['bert'"):
        ALTI(model)
