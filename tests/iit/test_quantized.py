"""Quantized weights, with every backend that installs and runs on this CPU under the torch pin:
optimum-quanto ``qint8`` and torchao ``Int8WeightOnlyConfig`` (int8 weight-only), bitsandbytes
LLM.int8 (loaded with ``from_pretrained(quantization_config=BitsAndBytesConfig(...))``).
Collection, interventions, DAS on the frozen quantized network and generation.

Each feature is compared with hand-written hooks on the same quantized model (exact) and with
the dequantized float model (a float32 copy whose linear weights are the dequantized int8
weights; tolerance: the backends' int8 kernels round differently from a float matmul).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from iit import Interchange, RotatedInterchange, Rotation
from iit.das import DASBatch, DASConfig, train_das
from iit.generation import generate
from iit.transformers import Tokens, TransformerCoordinate, TransformerInterventionable
from tests.iit.transformers._models import VOCAB, tiny_model


def _quanto(model: nn.Module, tmp: Path) -> nn.Module:
    quanto = pytest.importorskip("optimum.quanto")
    quanto.quantize(model, weights=quanto.qint8)
    quanto.freeze(model)
    return model


def _torchao(model: nn.Module, tmp: Path) -> nn.Module:
    quantization = pytest.importorskip("torchao.quantization")
    quantization.quantize_(model, quantization.Int8WeightOnlyConfig())
    return model


def _bitsandbytes_int8(model: nn.Module, tmp: Path) -> nn.Module:
    """Loaded the way users do: ``from_pretrained(quantization_config=BitsAndBytesConfig(...))``.
    (NF4 is not covered here: bitsandbytes 0.50's CPU NF4 path repacks weights in blocks of 32
    rows and fails on these tiny shapes; benchmarks/gpu_check.py covers it on CUDA.)"""
    pytest.importorskip("bitsandbytes")
    import transformers as tf

    model.save_pretrained(tmp / "float")
    return tf.AutoModelForCausalLM.from_pretrained(
        tmp / "float", quantization_config=tf.BitsAndBytesConfig(load_in_8bit=True), device_map="cpu",
        dtype=torch.float32,
    ).eval()


BACKENDS: dict[str, Callable[[nn.Module, Path], nn.Module]] = {
    "quanto": _quanto,
    "torchao": _torchao,
    "bnb_int8": _bitsandbytes_int8,
}
# Largest |quantized - dequantized| of the logits seen: 0 (quanto), 6e-8 (torchao), 4e-4
# (bitsandbytes int8 casts activations to float16 on the CPU).
DEQ_TOL = {"quanto": 1e-6, "torchao": 1e-5, "bnb_int8": 5e-3}


def _inputs(seed: int, batch: int = 3, seq: int = 6) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


BASE, SOURCE = _inputs(1), _inputs(2)


def _dequantize(weight: Tensor) -> Tensor | None:
    """The float weight behind a quantized one (``None`` for a plain float weight)."""
    kind = type(weight).__name__
    if kind == "Int8Params":  # bitsandbytes LLM.int8: row-wise absmax scales
        import bitsandbytes as bnb

        return bnb.functional.int8_vectorwise_dequant(weight.data, weight.SCB)
    if kind == "Params4bit":
        import bitsandbytes as bnb

        return bnb.functional.dequantize_4bit(weight.data, weight.quant_state)
    if type(weight.data) not in (Tensor, nn.Parameter):  # quanto / torchao tensor subclasses
        return weight.dequantize()
    return None


def _dequantized(float_model: nn.Module, quantized: nn.Module) -> nn.Module:
    """A float copy of ``float_model`` carrying ``quantized``'s dequantized weights."""
    copy_ = copy.deepcopy(float_model)
    table = dict(copy_.named_modules())
    n = 0
    for name, module in quantized.named_modules():
        weight = getattr(module, "weight", None)
        value = _dequantize(weight) if isinstance(weight, Tensor) else None
        if value is not None:
            table[name].weight.data = value.to(table[name].weight.dtype).reshape(table[name].weight.shape)
            n += 1
    assert n >= 7 * 3  # every linear layer of every block was quantized
    return copy_


def _d_head(model: nn.Module) -> int:
    return model.config.hidden_size // model.config.num_attention_heads


@pytest.fixture(params=sorted(BACKENDS))
def models(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, nn.Module, nn.Module]:
    """(backend, frozen quantized tiny Llama LM, frozen dequantized float twin)."""
    float_model = tiny_model("llama", head=True)
    quantized = BACKENDS[request.param](copy.deepcopy(float_model), tmp_path).requires_grad_(False)
    assert _dequantize(quantized.model.layers[0].mlp.up_proj.weight) is not None, "not quantized"
    return request.param, quantized, _dequantized(float_model, quantized).requires_grad_(False)


def _hooked_run(model: nn.Module, inputs: dict[str, Tensor], module: nn.Module, io: str, fn) -> Tensor:
    """Logits of a run with ``fn`` as a plain forward (pre-)hook on ``module``."""
    if io == "output":
        handle = module.register_forward_hook(fn)
    else:
        handle = module.register_forward_pre_hook(fn)
    try:
        return model(**inputs).logits
    finally:
        handle.remove()


def test_collect_matches_hand_hooks_and_dequantized(models) -> None:
    backend, quantized, deq = models
    layer = quantized.model.layers[1]
    coords = {
        "block": (TransformerCoordinate(1, "block_output", position=Tokens.last()), layer, "output"),
        "query": (TransformerCoordinate(1, "query", head=2), layer.self_attn.q_proj, "output"),
        "mlp_hidden": (TransformerCoordinate(1, "mlp_hidden"), layer.mlp.down_proj, "input"),
    }
    net = TransformerInterventionable(quantized)
    ours = net.collect(BASE, [c for c, _, _ in coords.values()])
    theirs = TransformerInterventionable(deq).collect(BASE, [c for c, _, _ in coords.values()])
    for key, (coord, module, io) in coords.items():
        got: list[Tensor] = []
        _hooked_run(
            quantized, BASE, module, io, lambda m, a, o=None, got=got, io=io: got.append(a[0] if io == "input" else o)
        )
        h = _d_head(quantized)
        hand = got[0][:, -1:] if key == "block" else got[0][..., 2 * h : 3 * h] if key == "query" else got[0]
        assert torch.equal(ours[coord], hand), key
        torch.testing.assert_close(ours[coord], theirs[coord], rtol=0, atol=DEQ_TOL[backend] * 10)


def test_interchange_matches_hand_hooks_and_dequantized(models) -> None:
    backend, quantized, deq = models
    q_proj = quantized.model.layers[0].self_attn.q_proj  # a quantized module's output
    c = TransformerCoordinate(0, "query", head=1, position=Tokens.at(-2, -1))
    got: list[Tensor] = []
    _hooked_run(quantized, SOURCE, q_proj, "output", lambda m, a, o: got.append(o))

    def write(m: nn.Module, a: tuple, o: Tensor) -> Tensor:
        o = o.clone()
        h = _d_head(quantized)
        o[:, -2:, h : 2 * h] = got[0][:, -2:, h : 2 * h]
        return o

    hand = _hooked_run(quantized, BASE, q_proj, "output", write)
    ours = TransformerInterventionable(quantized).intervene(BASE, [Interchange(c)], [SOURCE]).logits
    assert torch.equal(ours, hand)
    assert not torch.equal(ours, quantized(**BASE).logits)  # the interchange changed something
    reference = TransformerInterventionable(deq).intervene(BASE, [Interchange(c)], [SOURCE]).logits
    torch.testing.assert_close(ours, reference, rtol=0, atol=DEQ_TOL[backend])


def _das_batches() -> list[DASBatch]:
    """Three batches with random next-token labels for the intervened run (a target the rotation
    can move towards by choosing what it interchanges)."""
    batches = []
    for seed in range(3):
        base, source = _inputs(10 + seed, batch=4), _inputs(20 + seed, batch=4)
        labels = torch.randint(0, VOCAB, (4,), generator=torch.Generator().manual_seed(seed))
        batches.append(DASBatch(base, [source], labels))
    return batches


def _loss(output, labels: Tensor) -> Tensor:
    return nn.functional.cross_entropy(output.logits[:, -1], labels)


def test_das_on_frozen_quantized_network(models) -> None:
    backend, quantized, deq = models
    c = TransformerCoordinate(2, "block_output", position=Tokens.last())
    before = {n: p.detach().clone() for n, p in quantized.named_parameters()}

    def rotation() -> RotatedInterchange:
        d = quantized.config.hidden_size
        return RotatedInterchange(c, Rotation(d, generator=torch.Generator().manual_seed(0)), (0, d // 2))

    # First-step gradient against the dequantized float model.
    grads = []
    for model in (quantized, deq):
        iv = rotation()
        batch = _das_batches()[0]
        _loss(TransformerInterventionable(model).intervene(batch.base, [iv], batch.sources), batch.labels).backward()
        grads.append(iv.rotation.parametrizations.weight.original.grad)
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=DEQ_TOL[backend])

    iv = rotation()
    losses = train_das(TransformerInterventionable(quantized), [iv], _das_batches(), _loss, DASConfig(epochs=4, lr=0.05))
    assert len(losses) == 12
    assert sum(losses[-3:]) < sum(losses[:3])  # the rotation learns on the quantized network
    for name, p in quantized.named_parameters():  # the network stayed frozen and unchanged
        assert p.grad is None and torch.equal(_stored(p), _stored(before[name])), name


def _stored(t: Tensor) -> Tensor:
    """What a weight stores: the int8 codes for bitsandbytes, the dequantized values for the
    quanto / torchao tensor subclasses, the tensor itself otherwise."""
    if type(t).__name__ in ("Int8Params", "Params4bit"):
        return t.data
    value = _dequantize(t)
    return t if value is None else value


def test_generation_matches_hand_loop(models) -> None:
    backend, quantized, deq = models
    c = TransformerCoordinate(1, "block_output", position=Tokens.last())
    net = TransformerInterventionable(quantized)
    ours = generate(net, BASE, [Interchange(c)], [SOURCE], max_new_tokens=4, apply_to="every_step")
    block = quantized.model.layers[1]
    got: list[Tensor] = []
    _hooked_run(quantized, SOURCE, block, "output", lambda m, a, o: got.append(o))
    ids, mask = BASE["input_ids"], BASE["attention_mask"]
    tokens = []
    for _ in range(4):
        def write(m: nn.Module, a: tuple, o: Tensor) -> Tensor:
            o = o.clone()
            o[:, -1] = got[0][:, -1]
            return o

        with torch.no_grad():
            logits = _hooked_run(quantized, {"input_ids": ids, "attention_mask": mask}, block, "output", write)
        tokens.append(logits[:, -1].argmax(-1))
        ids = torch.cat([ids, tokens[-1][:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    assert torch.equal(ours, torch.stack(tokens, 1))
    reference = generate(
        TransformerInterventionable(deq), BASE, [Interchange(c)], [SOURCE], max_new_tokens=4, apply_to="every_step"
    )
    assert torch.equal(ours, reference)
