"""`iit.generation.generate` against Hugging Face `generate` and a hand-written greedy loop."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from torch import Tensor, nn

from iit import Interchange
from iit.errors import InterventionError
from iit.generation import generate
from iit.transformers import Tokens, TransformerCoordinate, TransformerInterventionable
from tests.iit.transformers._models import VOCAB, tiny_model


def _left_padded(rows: list[list[int]]) -> dict[str, Tensor]:
    T = max(map(len, rows))
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r):] = torch.tensor(r)
        mask[i, T - len(r):] = 1
    return {"input_ids": ids, "attention_mask": mask}


PROMPT = _left_padded([[5, 9, 12, 3], [7, 8]])
SOURCE = _left_padded([[11, 4, 30], [21, 22, 23, 24]])


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_identity_patch_matches_hf_generate(family: str) -> None:
    model = tiny_model(family, head=True)
    net = TransformerInterventionable(model)
    c = TransformerCoordinate(1, "block_output", position=Tokens.last())
    ours = generate(net, PROMPT, [Interchange(c)], [PROMPT], max_new_tokens=5)
    hf = model.generate(**PROMPT, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(ours, hf[:, PROMPT["input_ids"].shape[1]:])


def _lively_gpt2() -> nn.Module:
    """A tiny untied GPT-2 with larger random weights, so greedy generations vary."""
    torch.manual_seed(0)
    config = tf.GPT2Config(
        n_layer=3, n_embd=16, n_head=4, n_inner=24, vocab_size=VOCAB, n_positions=64,
        bos_token_id=0, eos_token_id=0, tie_word_embeddings=False, initializer_range=0.3,
    )
    return tf.GPT2LMHeadModel(config).eval()


def _hand_loop(model: nn.Module, every_step: bool, steps: int) -> Tensor:
    """Greedy loop with a hand-written hook writing the source's last real token state."""
    block = model.transformer.h[1]
    got: list[Tensor] = []
    h = block.register_forward_hook(lambda m, a, o: got.append(o))
    try:
        model(**SOURCE)
    finally:
        h.remove()
    src = got[0][:, -1]  # left padded: the last real token is at -1
    ids, mask = PROMPT["input_ids"], PROMPT["attention_mask"]
    prompt_last = PROMPT["input_ids"].shape[1] - 1
    new = []
    for _ in range(steps):
        pos = ids.shape[1] - 1 if every_step else prompt_last

        def patch(m: nn.Module, a: tuple, o: Tensor, pos: int = pos) -> Tensor:
            o = o.clone()
            o[:, pos] = src
            return o

        h = block.register_forward_hook(patch)
        try:
            with torch.no_grad():
                logits = model(
                    input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)
                ).logits
        finally:
            h.remove()
        tok = logits[:, -1].argmax(-1)
        new.append(tok)
        ids = torch.cat([ids, tok[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return torch.stack(new, 1)


@pytest.mark.parametrize("apply_to", ["prompt", "every_step"])
def test_generate_matches_hand_written_loop(apply_to: str) -> None:
    model = _lively_gpt2()
    net = TransformerInterventionable(model)
    c = TransformerCoordinate(1, "block_output", position=Tokens.last())
    ours = generate(net, PROMPT, [Interchange(c)], [SOURCE], max_new_tokens=6, apply_to=apply_to)  # type: ignore[arg-type]
    want = _hand_loop(model, apply_to == "every_step", 6)
    assert torch.equal(ours, want)
    assert c.position == Tokens.last()  # the coordinate is restored
    other = _hand_loop(model, apply_to != "every_step", 6)
    assert not torch.equal(want, other)  # the two modes differ on this model


def test_generate_rejects_bad_arguments() -> None:
    net = TransformerInterventionable(tiny_model("gpt2"))
    c = TransformerCoordinate(0, "block_output", position=Tokens.last())
    with pytest.raises(InterventionError, match="apply_to"):
        generate(net, PROMPT, [Interchange(c)], [SOURCE], max_new_tokens=2, apply_to="all")  # type: ignore[arg-type]
    with pytest.raises(InterventionError, match="no logits"):
        generate(net, PROMPT, [Interchange(c)], [SOURCE], max_new_tokens=2)
    assert VOCAB > 30
