"""Attention rollout and layer-wise attention tracing: closed forms and hand-built cases."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from iit.attribution import (
    AttentionRollout,
    AttentionTracing,
    attention_rollout,
    attention_tracing,
    capture_attentions,
)
from iit.errors import CoordinateError
from tests.attribution.conftest import tiny_bert, tiny_gpt2


def _uniform_attention_bert(layers: int) -> BertForSequenceClassification:
    """Query and key projections zeroed: every head attends uniformly to all tokens."""
    model = tiny_bert(layers=layers)
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            for proj in (layer.attention.self.query, layer.attention.self.key):
                proj.weight.zero_()
                proj.bias.zero_()
    return model


@pytest.mark.parametrize("layers", [1, 3])
def test_rollout_of_uniform_attention_has_closed_form(layers: int, ids: torch.Tensor) -> None:
    model = _uniform_attention_bert(layers)
    n = ids.shape[1]
    p = torch.full((n, n), 1.0 / n)
    expected = p + 0.5**layers * (torch.eye(n) - p)  # (0.5 P + 0.5 I)^L with P idempotent
    rollout = AttentionRollout(model).matrices(ids)
    torch.testing.assert_close(rollout, expected.expand(ids.shape[0], n, n), atol=1e-6, rtol=0)
    scores = AttentionRollout(model, position=2).attribute(ids, 0)
    torch.testing.assert_close(scores, expected[2].expand(ids.shape[0], n), atol=1e-6, rtol=0)


def test_rollout_hand_computed_two_layers() -> None:
    a1 = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.0, 1.0]]])  # heads of layer 1
    a2 = torch.tensor([[[0.2, 0.8], [1.0, 0.0]], [[0.6, 0.4], [0.0, 1.0]]])
    attentions = torch.stack([a1, a2]).unsqueeze(1)  # [2, 1, 2, 2, 2]
    h1 = 0.5 * torch.tensor([[0.5, 0.5], [0.25, 0.75]]) + 0.5 * torch.eye(2)
    h2 = 0.5 * torch.tensor([[0.4, 0.6], [0.5, 0.5]]) + 0.5 * torch.eye(2)
    expected = torch.tensor(
        [
            [h2[0, 0] * h1[0, 0] + h2[0, 1] * h1[1, 0], h2[0, 0] * h1[0, 1] + h2[0, 1] * h1[1, 1]],
            [h2[1, 0] * h1[0, 0] + h2[1, 1] * h1[1, 0], h2[1, 0] * h1[0, 1] + h2[1, 1] * h1[1, 1]],
        ]
    )
    torch.testing.assert_close(attention_rollout(attentions)[0], expected)
    identity = torch.eye(3).expand(4, 1, 2, 3, 3)
    torch.testing.assert_close(attention_rollout(identity)[0], torch.eye(3))


def test_tracing_chains_heads_per_index() -> None:
    a1 = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.0, 1.0]]])
    a2 = torch.tensor([[[0.2, 0.8], [1.0, 0.0]], [[0.6, 0.4], [0.0, 1.0]]])
    attentions = torch.stack([a1, a2]).unsqueeze(1)
    # head 0: [1, 0] @ a2[0] = [0.2, 0.8]; @ a1[0] = [0.2 + 0.4, 0.4] = [0.6, 0.4]
    # head 1: [1, 0] @ a2[1] = [0.6, 0.4]; @ a1[1] = [0, 1.0]
    per_head = attention_tracing(attentions, 0)
    torch.testing.assert_close(per_head, torch.tensor([[0.6, 1.4]]))
    # head mean: m2 row 0 = [0.4, 0.6]; m1 = [[0.5, 0.5], [0.25, 0.75]] -> [0.35, 0.65]
    torch.testing.assert_close(
        attention_tracing(attentions, 0, heads="mean"), torch.tensor([[0.35, 0.65]])
    )
    with pytest.raises(IndexError, match="position 5"):
        attention_tracing(attentions, 5)


@pytest.mark.parametrize("factory", [tiny_bert, tiny_gpt2])
def test_captured_attentions_equal_eager_output_attentions(factory, ids: torch.Tensor) -> None:
    model = factory()
    before = model.config._attn_implementation
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    captured, output = capture_attentions(model, lambda x: model(**x), inputs, return_output=True)
    assert model.config._attn_implementation == before  # restored
    model.config._attn_implementation = "eager"
    try:
        reference = model(**inputs, output_attentions=True)
    finally:
        model.config._attn_implementation = before
    torch.testing.assert_close(captured, torch.stack(reference.attentions), atol=1e-6, rtol=0)
    torch.testing.assert_close(output.logits, reference.logits, atol=1e-5, rtol=0)


def test_tracing_class_on_model_matches_functional(ids: torch.Tensor) -> None:
    model = tiny_bert()
    attentions, _ = capture_attentions(model, lambda x: model(x), ids)
    scores = AttentionTracing(model).attribute(ids, 0)
    torch.testing.assert_close(scores, attention_tracing(attentions, 0))
    assert AttentionTracing(tiny_gpt2()).position == -1


def test_attention_methods_need_a_hf_model() -> None:
    plain = torch.nn.Linear(3, 3)
    with pytest.raises(CoordinateError, match="Hugging Face config"):
        AttentionRollout(plain).attribute(torch.randn(1, 3), 0)
    with pytest.raises(ValueError, match="layers, batch, heads"):
        attention_rollout(torch.rand(2, 3, 3))


def test_bert_config_untouched_after_exception(ids: torch.Tensor) -> None:
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=40,
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=8,
        )
    )
    before = model.config._attn_implementation

    def boom(module, args):
        raise RuntimeError("boom")

    def broken(x):  # fails as the attention starts (the forward stops after it otherwise)
        handle = model.bert.encoder.layer[0].attention.register_forward_pre_hook(boom)
        try:
            return model(x)
        finally:
            handle.remove()

    with pytest.raises(RuntimeError, match="boom"):
        AttentionRollout(model, forward=broken).attribute(ids, 0)
    assert model.config._attn_implementation == before
