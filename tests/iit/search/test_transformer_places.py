"""``transformer_places`` on tiny GPT-2 and Llama configs: the grid it generates (against a
hand-written list), what each place reads (against Hugging Face's hidden states and a plain
forward hook), and a search cell that runs on them."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from causal_models import standard
from iit import TransformerInterventionable
from iit.errors import CoordinateError
from iit.search import (
    DAS,
    CounterfactualSplits,
    FitSettings,
    SearchProblem,
    SearchSettings,
    search,
    transformer_places,
)

D_MODEL = 16


def _gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=12, n_positions=8, n_embd=D_MODEL, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def _llama() -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=12, hidden_size=D_MODEL, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=8, bos_token_id=0, eos_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


# family: (block module prefix, attention output projection under a block, head width)
FAMILIES = {
    "gpt2": (_gpt2, "transformer.h", "attn.c_proj", 8),
    "llama": (_llama, "model.layers", "self_attn.o_proj", 4),
}

# (name, layer, component, position, head) in the order transformer_places generates them
EXPECTED_GRID = [
    ("L=0_c=block_output", 0, "block_output", None, None),
    ("L=0_c=block_output_p=2", 0, "block_output", 2, None),
    ("L=0_c=head_attention_output", 0, "head_attention_output", None, None),
    ("L=0_c=head_attention_output_p=2", 0, "head_attention_output", 2, None),
    ("L=1_c=block_output", 1, "block_output", None, None),
    ("L=1_c=block_output_p=2", 1, "block_output", 2, None),
    ("L=1_c=head_attention_output", 1, "head_attention_output", None, None),
    ("L=1_c=head_attention_output_p=2", 1, "head_attention_output", 2, None),
]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_grid_and_resolved_modules(family: str) -> None:
    make, blocks, attn_out, _ = FAMILIES[family]
    net = TransformerInterventionable(make())
    places = transformer_places([0, 1], components=("block_output", "head_attention_output"), positions=(None, 2))
    got = [(p.name, p.layer, p.component, p.position, p.head) for p in places]
    assert got == EXPECTED_GRID
    tokens = torch.tensor([[1, 2, 3, 4]])
    for place, (_, layer, component, position, _) in zip(places, EXPECTED_GRID):
        coordinate = place.coordinate
        assert (coordinate.layer, coordinate.component, coordinate.position) == (layer, component, position)
        resolved = net.resolve(coordinate, tokens)
        if component == "block_output":
            assert (resolved.module, resolved.io) == (f"{blocks}.{layer}", "output")
        else:
            assert (resolved.module, resolved.io) == (f"{blocks}.{layer}.{attn_out}", "input")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_places_read_what_the_model_computes(family: str) -> None:
    make, blocks, attn_out, head_width = FAMILIES[family]
    model = make()
    net = TransformerInterventionable(model)
    tokens = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    block = transformer_places([0], positions=(2,))[0]
    (head,) = transformer_places([1], components=("head_attention_output",), heads=(1,))
    captured = {}
    projection = model.get_submodule(f"{blocks}.1.{attn_out}")
    handle = projection.register_forward_pre_hook(lambda _m, args: captured.setdefault("x", args[0].detach()))
    try:
        with torch.no_grad():
            reference = model(tokens, output_hidden_states=True).hidden_states
    finally:
        handle.remove()
    with torch.no_grad():
        acts = net.collect(tokens, [block.coordinate, head.coordinate])
    torch.testing.assert_close(acts[block.coordinate].reshape(2, D_MODEL), reference[1][:, 2])
    want = captured["x"][..., head_width : 2 * head_width]
    torch.testing.assert_close(acts[head.coordinate].reshape(want.shape), want)


def test_head_on_a_component_without_heads_is_rejected() -> None:
    with pytest.raises(CoordinateError, match="no heads"):
        transformer_places([0], components=("block_output",), heads=(0,))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_search_cell_runs_on_the_places(family: str) -> None:
    make = FAMILIES[family][0]
    causal = standard.digit_sum(3)  # O in 0..9: the first 10 logits at the last position

    def encode(values):
        return torch.stack([values["x"], values["y"], values["z"], torch.full_like(values["x"], 10)], 1)

    def decode(output):
        return output.logits[:, -1, :10]

    problem = SearchProblem(TransformerInterventionable(make()), causal, "S", encode, decode)
    splits = CounterfactualSplits.generate(causal, "S", (64, 32, 64), seed=0)
    places = transformer_places([0, 1], positions=(1,))
    settings = SearchSettings(fit=FitSettings(epochs=1, batch_size=32), seed=0)
    result = search(problem, splits, places, [DAS()], [2], settings, progress=False)
    table = result.table
    assert sorted(table["place"]) == ["L=0_c=block_output_p=1", "L=1_c=block_output_p=1"]
    assert sorted(table["layer"]) == [0, 1] and list(table["position"]) == [1, 1]
    for column in ("iia_test", "control_random", "control_untrained"):
        assert table[column].between(0, 1).all(), table
