"""Every attribution method on all eight families of the table (GPT-2, BERT, RoBERTa, DistilBERT,
Llama, Qwen2, Mistral with grouped key-value heads, GPT-NeoX), each against a slow reference
written here: attention from the model's own ``output_attentions``, gradients from autograd,
relevance conservation, and ALTI from the paper's equations with hand-written module paths."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from iit.attribution import (
    ALTI,
    LRP,
    AttentionRollout,
    AttentionTracing,
    EpsilonRule,
    IntegratedGradients,
    Saliency,
)
from iit.transformers import TransformerCoordinate
from tests.attribution.conftest import zero_biases
from tests.iit.transformers._models import FAMILY_NAMES, VOCAB, tiny_model

ENCODERS = ("bert", "roberta", "distilbert")


def _model(family: str) -> nn.Module:
    return tiny_model(family, head=True, attn="eager").double()


def _inputs(seq: int = 5) -> dict[str, Tensor]:
    ids = torch.randint(3, VOCAB, (2, seq), generator=torch.Generator().manual_seed(4))
    return {"input_ids": ids}


def _position(family: str) -> int:
    return 0 if family in ENCODERS else -1


def _target(family: str):
    pos = _position(family)
    return lambda out: out.logits[:, pos, 3]


def _own_attentions(model: nn.Module, inputs: dict) -> tuple[Tensor, tuple[Tensor, ...]]:
    with torch.no_grad():
        out = model(**inputs, output_attentions=True, output_hidden_states=True)
    return torch.stack(out.attentions), out.hidden_states


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_rollout_and_tracing_match_loops_over_the_models_own_attentions(family: str) -> None:
    model, inputs = _model(family), _inputs()
    attentions, _ = _own_attentions(model, inputs)  # [L, B, H, T, T] from the model itself
    layers, batch, heads, seq, _ = attentions.shape
    eye = torch.eye(seq, dtype=attentions.dtype)
    rollout = eye.expand(batch, seq, seq)
    for layer in range(layers):
        rollout = (0.5 * attentions[layer].mean(1) + 0.5 * eye) @ rollout
    torch.testing.assert_close(AttentionRollout(model).matrices(inputs), rollout)
    pos = _position(family) % seq
    want = torch.zeros(batch, seq, dtype=attentions.dtype)
    for b in range(batch):
        for h in range(heads):
            state = torch.zeros(seq, dtype=attentions.dtype)
            state[pos] = 1.0
            for layer in reversed(range(layers)):
                state = state @ attentions[layer, b, h]
            want[b] += state
    torch.testing.assert_close(AttentionTracing(model).attribute(inputs, None), want)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_gradients_and_ig_match_autograd_and_completeness(family: str) -> None:
    model, inputs = _model(family), _inputs()
    target = _target(family)
    captured = []
    handle = model.get_input_embeddings().register_forward_hook(
        lambda _m, _a, out: (out.retain_grad(), captured.append(out)) and None
    )
    try:
        target(model(**inputs)).sum().backward()
    finally:
        handle.remove()
    model.zero_grad()
    grad = Saliency(model, abs=False).attribute(inputs, target)
    torch.testing.assert_close(grad, captured[0].grad)
    # baseline: other tokens (a zero baseline puts RMSNorm's kink at alpha ~ 0 on the path)
    other = {"input_ids": torch.randint(3, VOCAB, (2, 5), generator=torch.Generator().manual_seed(9))}
    ig, delta = IntegratedGradients(model, n_steps=64).attribute(
        inputs, target, baseline_inputs=other, return_convergence_delta=True
    )
    assert ig.shape == captured[0].shape
    assert delta.abs().max() < 1e-6  # Σ IG = f(x) - f(baseline)
    # a transformer coordinate as the place: the block-1 input at the explained position
    place = TransformerCoordinate(1, "block_input", position=_position(family) % 5)
    at_place = Saliency(model, layer=place, abs=False).attribute(inputs, target)
    assert at_place.shape == (2, 1, 16) and at_place.abs().sum() > 0


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_lrp_conserves_relevance_on_bias_free_models(family: str) -> None:
    """With ε -> 0 and no biases every rule is linear given its frozen factors (LN / RMSNorm
    normalisers, attention probabilities, MLP gates), so Σ R = f_c at the block-0 input
    (encoders: a hidden unit of the base model's output, their LM heads hold a bare bias)."""
    inputs = _inputs()
    if family in ENCODERS:
        model = tiny_model(family, attn="eager").double()

        def target(out):
            return out.last_hidden_state[:, 0, 3]
    else:
        model, target = _model(family), _target(family)
    zero_biases(model)
    lrp = LRP(model, layer=TransformerCoordinate(0, "block_input"), default_rule=EpsilonRule(1e-12))
    relevance, delta = lrp.attribute(inputs, target, return_convergence_delta=True)
    f = target(model(**inputs)).detach()
    assert relevance.shape == (2, 5, 16)
    assert delta.abs().max() < 1e-7 * max(1.0, float(f.abs().max())), (delta, f)


# ----------------------------------------------------------------------- ALTI reference
# Hand-written per family: value vectors v_j (per head, before W_O), W_O, and the post-LN norm.
def _values_and_out(family: str, block: nn.Module, x: Tensor, heads: int, kv: int) -> tuple[Tensor, nn.Module]:
    """``[T, H, d]`` value vectors of one sequence ``x`` ``[T, D]`` and the output projection."""
    T, D = x.shape
    if family == "gpt2":
        v = block.attn.c_attn(block.ln_1(x))[:, 2 * D :]
        return v.view(T, heads, -1), block.attn.c_proj
    if family in ("bert", "roberta"):
        return block.attention.self.value(x).view(T, heads, -1), block.attention.output.dense
    if family == "distilbert":
        return block.attention.v_lin(x).view(T, heads, -1), block.attention.out_lin
    if family == "gpt_neox":
        qkv = block.attention.query_key_value(block.input_layernorm(x)).view(T, heads, -1)
        return qkv[..., 2 * qkv.shape[-1] // 3 :], block.attention.dense
    v = block.self_attn.v_proj(block.input_layernorm(x)).view(T, kv, -1)  # Llama, Qwen2, Mistral
    return v.repeat_interleave(heads // kv, dim=1), block.self_attn.o_proj


def _w_o(proj: nn.Module, heads: int) -> Tensor:
    w = proj.weight if type(proj).__name__ == "Conv1D" else proj.weight.T  # [H*d, D]
    return w.reshape(heads, -1, w.shape[-1])


def _blocks(model: nn.Module, family: str) -> nn.ModuleList:
    base = model.base_model
    return {"gpt2": lambda: base.h, "distilbert": lambda: base.transformer.layer}.get(
        family, lambda: base.encoder.layer if family in ("bert", "roberta") else base.layers
    )()


def _post_norm(family: str, block: nn.Module) -> nn.LayerNorm | None:
    if family in ("bert", "roberta"):
        return block.attention.output.LayerNorm
    return block.sa_layer_norm if family == "distilbert" else None


@torch.no_grad()
def _alti_reference(model: nn.Module, family: str, inputs: dict) -> Tensor:
    """ALTI from the equations, one (i, j) pair at a time; ``[batch, seq, seq]``."""
    attentions, hidden = _own_attentions(model, inputs)
    cfg = model.config
    heads = attentions.shape[2]
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    result = []
    for b in range(attentions.shape[1]):
        total = None
        for layer, block in enumerate(_blocks(model, family)):
            x = hidden[layer][b]
            T = x.shape[0]
            v, proj = _values_and_out(family, block, x, heads, kv)
            w = _w_o(proj, heads)
            b_o = proj.bias if proj.bias is not None else torch.zeros(x.shape[-1], dtype=x.dtype)
            alpha = attentions[layer, b]
            mixed = [[sum(alpha[h, i, j] * v[j, h] @ w[h] for h in range(heads)) for j in range(T)] for i in range(T)]
            vectors = [[mixed[i][j] + (x[j] if i == j else 0) for j in range(T)] for i in range(T)]
            norm = _post_norm(family, block)
            c = torch.zeros(T, T, dtype=x.dtype)
            for i in range(T):
                u = sum(vectors[i]) + b_o
                if norm is None:
                    y, t = u, vectors[i]
                else:
                    sigma = torch.sqrt(u.var(unbiased=False) + norm.eps)
                    y = (u - u.mean()) / sigma * norm.weight + norm.bias
                    t = [(vec - vec.mean()) * norm.weight / sigma for vec in vectors[i]]
                for j in range(T):
                    c[i, j] = torch.clamp(y.abs().sum() - (y - t[j]).abs().sum(), min=0)
            c = c / c.sum(-1, keepdim=True)
            total = c if total is None else c @ total
        result.append(total)
    return torch.stack(result)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_alti_matches_the_papers_equations(family: str) -> None:
    model, inputs = _model(family), _inputs()
    torch.testing.assert_close(ALTI(model).matrices(inputs), _alti_reference(model, family, inputs))
