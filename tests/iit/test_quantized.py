"""Quantized weights (int8 weight-only: optimum-quanto ``qint8`` and torchao
``Int8WeightOnlyConfig``, the CPU backends that run under the torch pin): collection,
interventions, DAS on the frozen quantized network and generation.

Each feature is compared with hand-written hooks on the same quantized model (exact) and with
the dequantized float model (a float32 copy whose linear weights are the dequantized int8
weights; tolerance: the backends' int8 kernels round differently from a float matmul).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from iit import Interchange, RotatedInterchange, Rotation
from iit.das import DASBatch, DASConfig, train_das
from iit.generation import generate
from iit.transformers import Tokens, TransformerCoordinate, TransformerInterventionable
from tests.iit.transformers._models import VOCAB, tiny_model


def _quanto(model: nn.Module) -> nn.Module:
    quanto = pytest.importorskip("optimum.quanto")
    quanto.quantize(model, weights=quanto.qint8)
    quanto.freeze(model)
    return model


def _torchao(model: nn.Module) -> nn.Module:
    quantization = pytest.importorskip("torchao.quantization")
    quantization.quantize_(model, quantization.Int8WeightOnlyConfig())
    return model


BACKENDS: dict[str, Callable[[nn.Module], nn.Module]] = {"quanto": _quanto, "torchao": _torchao}
# Largest |quantized - dequantized| of the logits seen is 0 (quanto) and 6e-8 (torchao).
DEQ_TOL = {"quanto": 1e-6, "torchao": 1e-5}


def _inputs(seed: int, batch: int = 3, seq: int = 6) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


BASE, SOURCE = _inputs(1), _inputs(2)


def _dequantized(float_model: nn.Module, quantized: nn.Module) -> nn.Module:
    """A float copy of ``float_model`` carrying ``quantized``'s dequantized weights."""
    copy_ = copy.deepcopy(float_model)
    table = dict(copy_.named_modules())
    n = 0
    for name, module in quantized.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, Tensor) and type(weight.data) not in (Tensor, nn.Parameter) and hasattr(weight, "dequantize"):
            table[name].weight.data = weight.dequantize().to(table[name].weight.dtype)
            n += 1
    assert n >= 7 * 3  # every linear layer of every block was quantized
    return copy_


@pytest.fixture(params=sorted(BACKENDS))
def models(request: pytest.FixtureRequest) -> tuple[str, nn.Module, nn.Module]:
    """(backend, frozen quantized tiny Llama LM, frozen dequantized float twin)."""
    float_model = tiny_model("llama", head=True)
    quantized = BACKENDS[request.param](copy.deepcopy(float_model)).requires_grad_(False)
    weight = quantized.model.layers[0].mlp.up_proj.weight
    assert type(weight.data) not in (Tensor, nn.Parameter), "the backend did not quantize"
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
        hand = got[0][:, -1:] if key == "block" else got[0][..., 8:12] if key == "query" else got[0]
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
        o[:, -2:, 4:8] = got[0][:, -2:, 4:8]
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
        return RotatedInterchange(c, Rotation(16, generator=torch.Generator().manual_seed(0)), (0, 8))

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
        assert p.grad is None and torch.equal(_plain(p), _plain(before[name])), name


def _plain(t: Tensor) -> Tensor:
    return t.dequantize() if type(t.data) not in (Tensor, nn.Parameter) else t


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
