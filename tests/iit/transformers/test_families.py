"""Every family: a transformer coordinate reads the same tensor as a hand-written hook on the
corresponding module (paths written here, independently of the family table)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from iit.errors import CoordinateError
from iit.transformers import FAMILIES, TransformerCoordinate, TransformerInterventionable
from iit.transformers.families import family_of, model_shape
from tests.iit.transformers._models import FAMILY_NAMES, VOCAB, tiny_model

LAYER = 1
# Hand-written module paths per family, relative to block LAYER: (attention output module,
# module before the MLP's down projection whose output is the MLP hidden activation, MLP output
# module, q / k / v projection(s), attention-output projection).
HAND = {
    "gpt2": dict(block="h.1", attn_out=("attn.c_proj", "out"), act="mlp.act", mlp_out="mlp",
                 qkv="attn.c_attn", o_proj="attn.c_proj"),
    "bert": dict(block="encoder.layer.1", attn_out=("attention.output.dense", "out"),
                 act="intermediate", mlp_out="output.dense",
                 qkv=("attention.self.query", "attention.self.key", "attention.self.value"),
                 o_proj="attention.output.dense"),
    "distilbert": dict(block="transformer.layer.1", attn_out=("attention", "out0"), act="ffn.activation",
                       mlp_out="ffn.lin2", qkv=("attention.q_lin", "attention.k_lin", "attention.v_lin"),
                       o_proj="attention.out_lin"),
    "llama": dict(block="layers.1", attn_out=("self_attn", "out0"), act=None, mlp_out="mlp",
                  qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), o_proj="self_attn.o_proj"),
    "gpt_neox": dict(block="layers.1", attn_out=("attention", "out0"), act="mlp.act", mlp_out="mlp",
                     qkv="attention.query_key_value", o_proj="attention.dense"),
}
HAND["roberta"] = HAND["bert"]
HAND["qwen2"] = HAND["mistral"] = HAND["llama"]


def _inputs(batch: int = 2, seq: int = 6) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, VOCAB, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, 4:] = 0  # right padding in row 1
    return {"input_ids": ids, "attention_mask": mask}


def _hand_read(model: nn.Module, paths: list[str], inputs: dict) -> tuple[dict[str, Tensor], object]:
    """Forward hooks written by hand: the raw outputs of each module path."""
    table = dict(model.named_modules())
    got: dict[str, object] = {}
    handles = [
        table[p].register_forward_hook(lambda m, a, o, p=p: got.__setitem__(p, o)) for p in paths
    ]
    try:
        out = model(**inputs, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    return got, out


def _first(x: object) -> Tensor:
    return x[0] if isinstance(x, tuple) else x  # type: ignore[return-value]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_components_match_hand_written_hooks(family: str) -> None:
    model = tiny_model(family)
    hand = HAND[family]
    b = hand["block"]
    qkv = hand["qkv"] if isinstance(hand["qkv"], tuple) else (hand["qkv"],)
    paths = [f"{b}.{hand['attn_out'][0]}", f"{b}.{hand['mlp_out']}", *(f"{b}.{p}" for p in qkv)]
    if hand["act"]:
        paths.append(f"{b}.{hand['act']}")
    else:  # Llama-style gated MLP: hidden = act(gate) * up
        paths += [f"{b}.mlp.gate_proj", f"{b}.mlp.up_proj"]
    inputs = _inputs()
    got, out = _hand_read(model, paths, inputs)
    cfg = model.config
    H = cfg.num_attention_heads
    D = cfg.hidden_size
    d = D // H
    K = getattr(cfg, "num_key_value_heads", None) or H
    B, T = inputs["input_ids"].shape

    if hand["act"]:
        hidden = _first(got[f"{b}.{hand['act']}"])
    else:
        hidden = nn.functional.silu(got[f"{b}.mlp.gate_proj"]) * got[f"{b}.mlp.up_proj"]
    if len(qkv) == 3:
        q, k, v = (got[f"{b}.{p}"] for p in qkv)
    elif family == "gpt2":
        q, k, v = got[f"{b}.{qkv[0]}"].split(D, dim=-1)
    else:  # GPT-NeoX: [q_h | k_h | v_h] per head
        per_head = got[f"{b}.{qkv[0]}"].view(B, T, H, 3 * d)
        q, k, v = (t.reshape(B, T, H * d) for t in per_head.split(d, dim=-1))
    expected = {
        "block_input": out.hidden_states[LAYER],
        "block_output": out.hidden_states[LAYER + 1],
        "attention_output": _first(got[f"{b}.{hand['attn_out'][0]}"]),
        "mlp_output": _first(got[f"{b}.{hand['mlp_out']}"]),
        "mlp_hidden": hidden,
        "query": q,
        "key": k,
        "value": v,
    }
    net = TransformerInterventionable(model)
    coords = {name: TransformerCoordinate(LAYER, name) for name in expected}
    acts = net.collect(inputs, list(coords.values()))
    for name, want in expected.items():
        torch.testing.assert_close(acts[coords[name]], want, msg=f"{family} {name}")

    # per-head values equal a manual reshape, keys/values through the GQA map of the config
    rep = H // K
    for h in range(H):
        per = {
            "query": q.view(B, T, H, d)[:, :, h],
            "key": k.view(B, T, K, d)[:, :, h // rep],
            "value": v.view(B, T, K, d)[:, :, h // rep],
        }
        cs = {n: TransformerCoordinate(LAYER, n, head=h) for n in per}
        acts = net.collect(inputs, list(cs.values()))
        for n, want in per.items():
            torch.testing.assert_close(acts[cs[n]], want, msg=f"{family} {n} head {h}")
    # dims inside a head, two heads at once
    c = TransformerCoordinate(LAYER, "query", head=(2, 0), dims=(1, 3))
    want = torch.cat([q.view(B, T, H, d)[:, :, 2, 1:3], q.view(B, T, H, d)[:, :, 0, 1:3]], dim=-1)
    torch.testing.assert_close(net.collect(inputs, [c])[c], want)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_attention_probs_and_head_outputs_match_eager_reference(family: str) -> None:
    """Probabilities equal the eager model's ``output_attentions``; per-head attention outputs
    equal probs @ V per head (V from a hand-written hook); the model output is unchanged."""
    sdpa = tiny_model(family, attn="sdpa")
    eager = tiny_model(family, attn="eager")
    eager.load_state_dict(sdpa.state_dict())
    inputs = _inputs()
    ref = eager(**inputs, output_attentions=True)
    net = TransformerInterventionable(sdpa)
    probs_c = TransformerCoordinate(LAYER, "attention_probs")
    head_c = TransformerCoordinate(LAYER, "head_attention_output", head=3)
    value_c = TransformerCoordinate(LAYER, "value", head=3)
    out, acts = net.collect(inputs, [probs_c, head_c, value_c], return_output=True)
    real = inputs["attention_mask"].bool()
    probs = acts[probs_c]
    torch.testing.assert_close(probs[0], ref.attentions[LAYER][0])
    torch.testing.assert_close(probs[1][:, real[1]][..., real[1]], ref.attentions[LAYER][1][:, real[1]][..., real[1]])
    manual = probs[:, 3] @ acts[value_c]  # [B, T, d]
    torch.testing.assert_close(acts[head_c][real], manual[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.last_hidden_state[real], sdpa(**inputs).last_hidden_state[real], atol=1e-5, rtol=1e-5)
    # the switch is undone
    assert sdpa.config._attn_implementation == "sdpa"
    assert not any("iit_attention_probs" in n for n, _ in sdpa.named_modules())


def test_attention_probs_switch_is_undone_after_an_exception() -> None:
    model = tiny_model("llama")
    net = TransformerInterventionable(model)
    c = TransformerCoordinate(0, "attention_probs", position=(40,))  # beyond the sequence
    with pytest.raises(CoordinateError, match="beyond"):
        net.collect(_inputs(), [c])
    assert model.config._attn_implementation == "sdpa"
    assert not any("iit_attention_probs" in n for n, _ in model.named_modules())
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_gqa_head_map_follows_config(family: str) -> None:
    model = tiny_model(family)
    shape = model_shape(model, family_of(model))
    assert (shape.n_heads, shape.n_kv_heads) == (model.config.num_attention_heads, model.config.num_key_value_heads)
    group = model.config.num_attention_heads // model.config.num_key_value_heads
    assert [shape.kv_head(h) for h in range(shape.n_heads)] == [h // group for h in range(shape.n_heads)]


def test_task_head_models_resolve_through_the_base_prefix() -> None:
    model = tiny_model("gpt2", head=True)
    net = TransformerInterventionable(model)
    c = TransformerCoordinate(2, "block_output")
    x = _inputs()
    torch.testing.assert_close(net.collect(x, [c])[c], _block_out(model, x))
    assert net.resolve(c, x).module == "transformer.h.2"


def _block_out(model: nn.Module, x: dict) -> Tensor:
    got: list[Tensor] = []
    h = model.transformer.h[2].register_forward_hook(lambda m, a, o: got.append(o))
    try:
        model(**x)
    finally:
        h.remove()
    return got[0]


def _forward_counter(model: nn.Module) -> Callable[[], int]:
    calls = [0]
    model.register_forward_pre_hook(lambda m, a: calls.__setitem__(0, calls[0] + 1))
    return lambda: calls[0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(layer=3, component="block_output"), r"layers 0\.\.2"),
        (dict(layer=0, component="query", head=4), r"valid heads are 0\.\.3"),
        (dict(layer=0, component="key", dims=(0, 9)), r"exceed the width 8"),
        (dict(layer=0, component="block_output", dims=(0, 17)), r"d_model=16"),
    ],
)
def test_out_of_range_raises_before_any_forward(kwargs: dict, match: str) -> None:
    model = tiny_model("llama")
    calls = _forward_counter(model)
    net = TransformerInterventionable(model)
    from iit import Interchange

    c = TransformerCoordinate(**kwargs)
    with pytest.raises(CoordinateError, match=match):
        net.intervene(_inputs(), [Interchange(c)], sources=[_inputs()])
    with pytest.raises(CoordinateError, match=match):
        net.validate(c)
    assert calls() == 0


def test_unknown_component_lists_nearest_names() -> None:
    with pytest.raises(CoordinateError, match="did you mean 'mlp_output'"):
        TransformerCoordinate(0, "mlp_outptu")  # type: ignore[arg-type]
    with pytest.raises(CoordinateError, match="has no heads"):
        TransformerCoordinate(0, "block_output", head=1)


def test_unknown_family_names_supported_types() -> None:
    from transformers import GPTJConfig, GPTJModel

    model = GPTJModel(GPTJConfig(n_layer=1, n_embd=16, n_head=4, rotary_dim=4, vocab_size=VOCAB))
    with pytest.raises(CoordinateError, match="no family entry") as info:
        TransformerInterventionable(model)
    assert "gpt_neox" in str(info.value) and "gpt2" in str(info.value)
    assert set(FAMILIES) >= {"gpt2", "bert", "distilbert", "roberta", "llama", "qwen2", "mistral", "gpt_neox"}
