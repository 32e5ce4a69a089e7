"""LRP against captum's LRP, closed forms written here, and conservation on transformers."""

from __future__ import annotations

import math

import pytest
import torch
from captum.attr import LRP as CaptumLRP
from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule
from captum.attr._utils.lrp_rules import EpsilonRule as CaptumEpsilon
from captum.attr._utils.lrp_rules import GammaRule as CaptumGamma
from torch import nn

from iit.attribution import LRP, EpsilonRule, GammaRule, InputXGradient, ZPlusRule
from iit.errors import CoordinateError
from tests.attribution.conftest import mlp64, tiny_bert, tiny_gpt2

RULES = {
    "epsilon": (lambda: EpsilonRule(1e-3), lambda: CaptumEpsilon(1e-3)),
    "gamma": (lambda: GammaRule(0.25), lambda: CaptumGamma(0.25)),
    "zplus": (lambda: ZPlusRule(), lambda: Alpha1_Beta0_Rule()),
}


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(3)
    return torch.randn(6, 5, dtype=torch.float64)


@pytest.mark.parametrize("name", list(RULES))
def test_lrp_rules_match_captum_on_mlp(x: torch.Tensor, name: str) -> None:
    ours_rule, captum_rule = RULES[name]
    ours = LRP(mlp64(), default_rule=ours_rule()).attribute(x, 1)
    reference = mlp64()
    for layer in reference:
        if isinstance(layer, nn.Linear):
            layer.rule = captum_rule()
    theirs = CaptumLRP(reference).attribute(x.clone().requires_grad_(), target=1)
    torch.testing.assert_close(ours, theirs, atol=1e-9, rtol=1e-7)


def test_per_layer_rules_match_captum(x: torch.Tensor) -> None:
    rules = {"0": GammaRule(0.5), "2": ZPlusRule()}
    ours = LRP(mlp64(), rules=rules, default_rule=EpsilonRule(1e-2)).attribute(x, 0)
    reference = mlp64()
    reference[0].rule, reference[2].rule = CaptumGamma(0.5), Alpha1_Beta0_Rule()
    reference[4].rule = CaptumEpsilon(1e-2)
    theirs = CaptumLRP(reference).attribute(x.clone().requires_grad_(), target=0)
    torch.testing.assert_close(ours, theirs, atol=1e-9, rtol=1e-7)


def test_linear_closed_form() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(4, 3).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    relevance, delta = LRP(linear, default_rule=EpsilonRule(0.0)).attribute(
        x, 2, return_convergence_delta=True
    )
    torch.testing.assert_close(relevance, linear.weight[2].detach() * x)
    torch.testing.assert_close(
        delta, -linear.bias[2].detach().expand(5)
    )  # the bias keeps its share


def _two_layer_reference(
    net: nn.Sequential, x: torch.Tensor, c: int, gamma: float, eps: float
) -> torch.Tensor:
    """Textbook LRP by loops: γ-rule on the first layer, ε-rule on the output layer."""
    w1, b1 = net[0].weight.detach(), net[0].bias.detach()
    w2, b2 = net[2].weight.detach(), net[2].bias.detach()
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        h = [
            max(0.0, float(sum(w1[k, j] * x[n, j] for j in range(x.shape[1])) + b1[k]))
            for k in range(w1.shape[0])
        ]
        z_out = float(sum(w2[c, k] * h[k] for k in range(len(h))) + b2[c])
        stab = z_out + eps * (1 if z_out >= 0 else -1)
        r_h = [h[k] * float(w2[c, k]) * z_out / stab for k in range(len(h))]
        for j in range(x.shape[1]):
            total = 0.0
            for k in range(len(h)):
                wp = [
                    float(w1[k, i]) + gamma * max(float(w1[k, i]), 0.0) for i in range(x.shape[1])
                ]
                z = sum(wp[i] * float(x[n, i]) for i in range(x.shape[1])) + float(b1[k])
                z = z + eps * (1 if z >= 0 else -1)
                total += float(x[n, j]) * wp[j] * r_h[k] / z
            out[n, j] = total
    return out


def test_two_layer_relu_closed_form() -> None:
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    x = torch.randn(3, 3, dtype=torch.float64)
    ours = LRP(net, rules={"0": GammaRule(0.3, epsilon=1e-6)}, default_rule=EpsilonRule(1e-6))
    torch.testing.assert_close(
        ours.attribute(x, 1), _two_layer_reference(net, x, 1, 0.3, 1e-6), atol=1e-10, rtol=1e-8
    )


def test_lrp0_is_grad_x_input_and_conserves_on_bias_free_relu_net(x: torch.Tensor) -> None:
    net = mlp64(bias=False)
    relevance, delta = LRP(net, default_rule=EpsilonRule(0.0)).attribute(
        x, 2, return_convergence_delta=True
    )
    torch.testing.assert_close(relevance, InputXGradient(net).attribute(x, 2))
    assert delta.abs().max() < 1e-12


def _reference_bert_relevance(model: nn.Module, ids: torch.Tensor, c: int) -> torch.Tensor:
    """CP-LRP (Ali et al.) of BERT re-derived here: grad x input of a hand-written forward in
    which softmax outputs and LayerNorm σ are constants and GELU/tanh pass relevance through."""
    cfg = model.config
    bert = model.bert

    def ln(v: torch.Tensor, mod: nn.LayerNorm) -> torch.Tensor:
        sigma = torch.sqrt(v.var(-1, unbiased=False, keepdim=True) + mod.eps).detach()
        return (v - v.mean(-1, keepdim=True)) / sigma * mod.weight + mod.bias

    def through(v: torch.Tensor, f) -> torch.Tensor:  # identity rule: relevance passes unchanged
        return v * (f(v) / v).detach()

    emb = bert.embeddings
    positions = torch.arange(ids.shape[1])
    e = emb.word_embeddings(ids) + emb.position_embeddings(positions)
    e = e + emb.token_type_embeddings(torch.zeros_like(ids))
    h0 = ln(e, emb.LayerNorm).detach().requires_grad_(True)
    h = h0
    heads, d_head = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    for layer in bert.encoder.layer:
        att = layer.attention

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(t.shape[0], t.shape[1], heads, d_head).transpose(1, 2)

        q, k, v = split(att.self.query(h)), split(att.self.key(h)), split(att.self.value(h))
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d_head), -1).detach()
        ctx = (probs @ v).transpose(1, 2).reshape(h.shape)
        h = ln(att.output.dense(ctx) + h, att.output.LayerNorm)
        inter = through(layer.intermediate.dense(h), nn.functional.gelu)
        h = ln(layer.output.dense(inter) + h, layer.output.LayerNorm)
    pooled = through(bert.pooler.dense(h[:, 0]), torch.tanh)
    logits = model.classifier(pooled)
    (grad,) = torch.autograd.grad(logits[:, c].sum(), h0)
    return h0.detach() * grad


def test_transformer_lrp_matches_hand_written_cp_lrp(ids: torch.Tensor) -> None:
    model = tiny_bert()
    ours = LRP(model, layer="bert.embeddings", default_rule=EpsilonRule(0.0)).attribute(ids, 1)
    torch.testing.assert_close(ours, _reference_bert_relevance(model, ids, 1), atol=1e-5, rtol=1e-4)


def test_relevance_is_conserved_on_bias_free_bert(ids: torch.Tensor) -> None:
    model = tiny_bert(zero_bias=True)
    with torch.no_grad():
        logits = model(ids).logits[:, 0]
    lrp = LRP(model, layer="bert.embeddings", default_rule=EpsilonRule(0.0))
    relevance, delta = lrp.attribute(ids, 0, return_convergence_delta=True)
    torch.testing.assert_close(relevance.flatten(1).sum(1), logits, atol=1e-4, rtol=1e-4)
    assert delta.abs().max() < 1e-4
    naive = LRP(
        model, layer="bert.embeddings", default_rule=EpsilonRule(0.0), transformer_rules=False
    )
    _, naive_delta = naive.attribute(ids, 0, return_convergence_delta=True)
    assert naive_delta.abs().max() > 100 * delta.abs().max()  # the AH/LN rules are what conserve


def test_relevance_is_conserved_on_bias_free_gpt2(ids: torch.Tensor) -> None:
    model = tiny_gpt2(zero_bias=True)
    with torch.no_grad():
        logits = model(ids).logits[:, 2]
    relevance = LRP(model, layer="transformer.drop", default_rule=EpsilonRule(0.0)).attribute(
        ids, 2
    )
    torch.testing.assert_close(relevance.flatten(1).sum(1), logits, atol=1e-4, rtol=1e-4)


def test_lrp_errors() -> None:
    conv = nn.Sequential(nn.Conv2d(1, 1, 2), nn.Flatten(), nn.Linear(1, 2))
    with pytest.raises(CoordinateError, match="no rule for module '0'"):
        LRP(conv).attribute(torch.randn(1, 1, 2, 2), 0)
    with pytest.raises(CoordinateError, match="linear layer"):
        LRP(mlp64(), rules={"1": EpsilonRule()}).attribute(torch.randn(1, 5).double(), 0)
    with pytest.raises(ValueError, match="gamma"):
        GammaRule(-1.0)
