"""Models placed by accelerate (``dispatch_model`` with cpu + disk offload, ``cpu_offload``,
``init_empty_weights`` + ``load_checkpoint_and_dispatch``) give exactly what the undispatched
model gives: collection, interventions with live and cached sources, ablations, learned
rotations (outputs and gradients), generation and every attribution method.

On this CPU-only machine the execution device is the CPU, but the offloaded modules hold ``meta``
weights between calls and load them in accelerate's hooks, which is what these tests exercise.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from accelerate import cpu_offload, dispatch_model, init_empty_weights, load_checkpoint_and_dispatch
from torch import Tensor, nn

from iit import (
    Activations,
    BoundlessRotatedInterchange,
    ConstantAblation,
    Interchange,
    LowRankRotatedInterchange,
    MeanAblation,
    ResampleAblation,
    RotatedInterchange,
    Rotation,
    ZeroAblation,
)
from iit.generation import generate
from iit.placement import is_offloaded, materialized
from iit.transformers import Tokens, TransformerCoordinate, TransformerInterventionable
from tests.iit.transformers._models import VOCAB, tiny_model

# Half the blocks go to disk (meta between calls), the rest stay on the CPU behind hooks.
DEVICE_MAPS = {
    "llama": {
        "model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "disk",
        "model.layers.1": "cpu", "model.layers.2": "disk", "model.norm": "disk", "lm_head": "cpu",
    },
    "gpt2": {
        "transformer.wte": "cpu", "transformer.wpe": "disk", "transformer.h.0": "disk",
        "transformer.h.1": "cpu", "transformer.h.2": "disk", "transformer.ln_f": "cpu", "lm_head": "cpu",
    },
}


def _inputs(seed: int, batch: int = 3, seq: int = 6) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


BASE, SOURCE = _inputs(1), _inputs(2)


def _dispatched(model: nn.Module, family: str, tmp: Path) -> nn.Module:
    placed = dispatch_model(copy.deepcopy(model), DEVICE_MAPS[family], main_device="cpu", offload_dir=str(tmp))
    assert any(is_offloaded(m) for m in placed.modules())
    return placed


@pytest.fixture(params=["llama", "gpt2"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[TransformerInterventionable, TransformerInterventionable]:
    """(undispatched, dispatched with cpu + disk offload) wrappers of one tiny causal LM."""
    model = tiny_model(request.param, head=True)
    if request.param == "gpt2":  # accelerate re-ties shared weights; untie them for a clean map
        model.config.tie_word_embeddings = False
        model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    return TransformerInterventionable(model), TransformerInterventionable(_dispatched(model, request.param, tmp_path))


def _meta_weights(net: TransformerInterventionable) -> list[str]:
    """Names of the offloaded parameters that are currently on the meta device."""
    return [n for n, p in net.model.named_parameters() if p.device.type == "meta"]


COORDS = [
    TransformerCoordinate(0, "block_output", position=Tokens.last()),
    TransformerCoordinate(1, "mlp_hidden"),
    TransformerCoordinate(2, "attention_probs", head=1),
    TransformerCoordinate(2, "value", head=(0, 3), position=(1, 2)),
]


def test_collect_matches_undispatched_and_weights_return_to_offload(pair) -> None:
    ref, net = pair
    meta = _meta_weights(net)
    assert meta  # the disk blocks are offloaded
    for stop_early in (True, False):
        ref.stop_source_early = net.stop_source_early = stop_early
        ours, theirs = net.collect(BASE, COORDS), ref.collect(BASE, COORDS)
        for c in COORDS:
            assert torch.equal(ours[c], theirs[c]), c.describe()
    stopped = net.collect(BASE, [COORDS[0]])  # stops inside block 0 (on disk)
    assert torch.equal(stopped[COORDS[0]], ref.collect(BASE, [COORDS[0]])[COORDS[0]])
    assert _meta_weights(net) == meta  # nothing left loaded after the early stop


def test_intervene_live_and_cached_sources(pair) -> None:
    ref, net = pair
    c = TransformerCoordinate(1, "block_output", position=Tokens.at(-2, -1))
    heads = TransformerCoordinate(0, "head_attention_output", head=2)
    ivs = [Interchange(c), Interchange(heads, source=1)]
    expected = ref.intervene(BASE, ivs, [SOURCE, _inputs(3)]).logits
    assert torch.equal(net.intervene(BASE, ivs, [SOURCE, _inputs(3)]).logits, expected)
    cached = [ref.collect(SOURCE, [c]), net.collect(_inputs(3), [heads])]  # one cache per model
    assert isinstance(cached[0], Activations)
    assert torch.equal(net.intervene(BASE, ivs, cached).logits, expected)
    assert torch.equal(ref.intervene(BASE, ivs, cached).logits, expected)


def test_ablations(pair) -> None:
    ref, net = pair
    c = TransformerCoordinate(2, "mlp_output", position=(0, 4))
    pool = ref.collect(SOURCE, [c])[c]
    for make in (
        lambda m: ZeroAblation(c),
        lambda m: MeanAblation.fit(m, [BASE, SOURCE], c),
        lambda m: ResampleAblation(c, pool, seed=4),
        lambda m: ConstantAblation(c, pool[1]),
    ):
        expected = ref.intervene(BASE, [make(ref)]).logits
        assert torch.equal(net.intervene(BASE, [make(net)]).logits, expected)


@pytest.mark.parametrize("kind", ["rotated", "low_rank", "boundless"])
def test_learned_rotations_outputs_and_gradients(pair, kind: str) -> None:
    ref, net = pair
    c = TransformerCoordinate(1, "block_output", position=Tokens.last())

    def make() -> nn.Module:
        torch.manual_seed(5)
        if kind == "rotated":
            return RotatedInterchange(c, Rotation(16), (0, 4))
        if kind == "low_rank":
            return LowRankRotatedInterchange(c, 16, 3)
        return BoundlessRotatedInterchange(c, 16, boundary=0.3, temperature=2.0)

    results = []
    for wrapper in (ref, net):
        iv = make()
        out = wrapper.intervene(BASE, [iv], [SOURCE]).logits
        out[:, -1].logsumexp(-1).sum().backward()
        results.append((out.detach(), [p.grad for p in iv.parameters()]))
    (out_ref, grads_ref), (out_net, grads_net) = results
    assert torch.equal(out_net, out_ref)
    assert len(grads_ref) >= 1 and all(g is not None for g in grads_ref)
    for g_net, g_ref in zip(grads_net, grads_ref):
        assert torch.equal(g_net, g_ref)


@pytest.mark.parametrize("apply_to", ["prompt", "every_step"])
def test_generation(pair, apply_to: str) -> None:
    ref, net = pair
    c = TransformerCoordinate(1, "block_output", position=Tokens.last())
    ivs = [Interchange(c)]
    expected = generate(ref, BASE, ivs, [SOURCE], max_new_tokens=4, apply_to=apply_to)
    assert torch.equal(generate(net, BASE, ivs, [SOURCE], max_new_tokens=4, apply_to=apply_to), expected)


def test_cpu_offload_whole_model() -> None:
    """accelerate.cpu_offload: every weight in a CPU store, meta between calls."""
    model = tiny_model("llama", head=True)
    ref = TransformerInterventionable(model)
    net = TransformerInterventionable(cpu_offload(copy.deepcopy(model), execution_device=torch.device("cpu")))
    assert _meta_weights(net)
    c = TransformerCoordinate(0, "mlp_output")
    assert torch.equal(net.collect(BASE, [c])[c], ref.collect(BASE, [c])[c])
    iv = RotatedInterchange(c, 16, (2, 9))
    assert torch.equal(net.intervene(BASE, [iv], [SOURCE]).logits, ref.intervene(BASE, [iv], [SOURCE]).logits)


def _block_map(model: nn.Module, blocks: str) -> dict[str, str]:
    """Blocks 0 and 2 on disk, everything else on the CPU (one entry per sibling module)."""
    parent, _, name = blocks.rpartition(".")
    owner = model.get_submodule(parent)
    device_map = {child: "cpu" for child, _ in model.named_children() if child != parent}
    device_map.update({f"{parent}.{child}": "cpu" for child, _ in owner.named_children() if child != name})
    device_map.update({f"{blocks}.{i}": "disk" if i % 2 == 0 else "cpu" for i in range(len(owner.get_submodule(name)))})
    return device_map


def _saved(model: nn.Module, tmp: Path) -> Path:
    model.save_pretrained(tmp / "checkpoint")
    return tmp / "checkpoint"


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_load_checkpoint_and_dispatch(family: str, tmp_path: Path) -> None:
    """An empty-weight skeleton filled from a saved checkpoint, blocks on cpu and disk."""
    import transformers as tf

    model = tiny_model(family, head=family != "bert")
    path = _saved(model, tmp_path)
    cls = tf.AutoModel if family == "bert" else tf.AutoModelForCausalLM
    with init_empty_weights():
        skeleton = cls.from_config(model.config)
    skeleton.tie_weights()  # GPT-2 ties lm_head to wte; the checkpoint holds wte only
    blocks = {"llama": "model.layers", "gpt2": "transformer.h", "bert": "encoder.layer"}[family]
    placed = load_checkpoint_and_dispatch(
        skeleton, str(path), device_map=_block_map(skeleton, blocks), offload_folder=str(tmp_path / "offload")
    ).eval()
    ref, net = TransformerInterventionable(model), TransformerInterventionable(placed)
    assert _meta_weights(net)
    c = TransformerCoordinate(2, "block_input", position=Tokens.at(0, 2))
    probs = TransformerCoordinate(0, "attention_probs")
    ours, theirs = net.collect(BASE, [c, probs]), ref.collect(BASE, [c, probs])
    assert torch.equal(ours[c], theirs[c]) and torch.equal(ours[probs], theirs[probs])
    ivs = [RotatedInterchange(c, Rotation(16, generator=torch.Generator().manual_seed(0)), (0, 5))]
    out_net, out_ref = net.intervene(BASE, ivs, [SOURCE]), ref.intervene(BASE, ivs, [SOURCE])
    key = "last_hidden_state" if family == "bert" else "logits"
    assert torch.equal(out_net[key], out_ref[key])


def test_materialized_restores_offload(pair) -> None:
    _, net = pair
    linear = next(m for m in net.model.modules() if is_offloaded(m) and type(m).__name__ in ("Linear", "Conv1D"))
    assert linear.weight.device.type == "meta"
    with pytest.raises(RuntimeError, match="inside"):
        with materialized(linear) as module:
            assert module.weight.device.type == "cpu" and module.weight.abs().sum() > 0
            raise RuntimeError("inside")
    assert linear.weight.device.type == "meta"


# ---------------------------------------------------------------------------- attribution


def _attribution_pair(family: str, tmp: Path) -> tuple[nn.Module, nn.Module]:
    from tests.attribution.conftest import tiny_bert, tiny_gpt2

    model = tiny_bert() if family == "bert" else tiny_gpt2()
    device_map = {
        "bert": {
            "bert.embeddings": "cpu", "bert.encoder.layer.0": "disk", "bert.encoder.layer.1": "cpu",
            "bert.pooler": "disk", "dropout": "cpu", "classifier": "disk",
        },
        "gpt2": {
            "transformer.wte": "cpu", "transformer.wpe": "disk", "transformer.drop": "cpu",
            "transformer.h.0": "disk", "transformer.h.1": "cpu", "transformer.ln_f": "disk", "score": "cpu",
        },
    }[family]
    return model, dispatch_model(copy.deepcopy(model), device_map, main_device="cpu", offload_dir=str(tmp))


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_attribution_methods(family: str, tmp_path: Path) -> None:
    from iit.attribution import (
        ALTI,
        LRP,
        AttentionRollout,
        AttentionTracing,
        InputXGradient,
        IntegratedGradients,
        Saliency,
    )

    model, placed = _attribution_pair(family, tmp_path)
    ids = torch.randint(1, 40, (2, 6), generator=torch.Generator().manual_seed(0))
    methods = [Saliency, InputXGradient, IntegratedGradients, LRP, AttentionRollout, AttentionTracing]
    if family == "bert":
        methods.append(ALTI)  # ALTI on an encoder
    for method in methods:
        ours, theirs = method(placed).attribute(ids, 1), method(model).attribute(ids, 1)
        assert torch.equal(ours, theirs), method.__name__
    assert any(p.device.type == "meta" for p in placed.parameters())  # still offloaded
