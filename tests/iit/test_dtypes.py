"""Every dtype (float64, float32, bfloat16, float16): each feature against hand-written hooks or
hand-written math, with tolerances that fit the dtype (float64 to 1e-12).

Nothing may compute in float32 behind a float64 model's back: collection and interventions are
exact; learned rotations compute in ``promote_types(rotation, hidden)``; attention probabilities
are computed in the model's dtype (float32 only for half types); gradients flow in the model's
dtype.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from iit import (
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
from iit.precision import compute_dtype, upcast
from iit.transformers import Tokens, TransformerCoordinate, TransformerInterventionable
from tests.iit.transformers._models import VOCAB, tiny_model

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
# Tolerance of a value that went through a few roundings in the dtype (relative to O(1) values).
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 4e-3}
IDS = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])


def _inputs(seed: int, batch: int = 2, seq: int = 5) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


BASE, SOURCE = _inputs(1), _inputs(2)


def _model(family: str, dtype: torch.dtype) -> nn.Module:
    return tiny_model(family, head=True).to(dtype)


def _block(model: nn.Module, layer: int) -> nn.Module:
    return model.model.layers[layer] if hasattr(model, "model") else model.transformer.h[layer]


def _capture(model: nn.Module, module: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
    got: list[Tensor] = []
    handle = module.register_forward_hook(lambda m, a, o: got.append(o))
    try:
        model(**inputs)
    finally:
        handle.remove()
    return got[0]


def _run_writing(model: nn.Module, module: nn.Module, write, inputs: dict[str, Tensor]) -> Tensor:
    """Logits of a run whose ``module`` output goes through ``write(output) -> output``."""
    handle = module.register_forward_hook(lambda m, a, o: write(o))
    try:
        return model(**inputs).logits
    finally:
        handle.remove()


def test_compute_dtype() -> None:
    assert compute_dtype(torch.float64) is torch.float64 and compute_dtype(torch.float32) is torch.float32
    assert compute_dtype(torch.bfloat16) is torch.float32 and compute_dtype(torch.float16) is torch.float32
    x = torch.ones(2, dtype=torch.float64)
    assert upcast(x) is x


@IDS
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_collect_and_interchange_match_hand_hooks(family: str, dtype: torch.dtype) -> None:
    model = _model(family, dtype)
    net = TransformerInterventionable(model)
    c = TransformerCoordinate(1, "block_output", position=Tokens.last())
    collected = net.collect(BASE, [c])[c]
    hand = _capture(model, _block(model, 1), BASE)[:, -1:]
    assert collected.dtype == dtype and torch.equal(collected, hand)

    src = _capture(model, _block(model, 1), SOURCE)

    def write(o: Tensor) -> Tensor:
        o = o.clone()
        o[:, -1] = src[:, -1]
        return o

    out = net.intervene(BASE, [Interchange(c)], [SOURCE]).logits
    assert out.dtype == dtype and torch.equal(out, _run_writing(model, _block(model, 1), write, BASE))


@IDS
def test_ablations_match_hand_hooks(dtype: torch.dtype) -> None:
    model = _model("llama", dtype)
    net = TransformerInterventionable(model)
    c = TransformerCoordinate(2, "mlp_output", position=(1, 3))
    mlp = model.model.layers[2].mlp
    batches = [BASE, SOURCE, _inputs(3)]

    def at_positions(value_fn):
        def write(o: Tensor) -> Tensor:
            o = o.clone()
            o[:, [1, 3]] = value_fn(o[:, [1, 3]])
            return o

        return write

    zero = net.intervene(BASE, [ZeroAblation(c)]).logits
    assert torch.equal(zero, _run_writing(model, mlp, at_positions(torch.zeros_like), BASE))

    # Mean: accumulated in float32 (half) / float64, stored in the model's dtype.
    ablation = MeanAblation.fit(net, batches, c)
    values = torch.cat([_capture(model, mlp, b)[:, [1, 3]] for b in batches]).double()
    mean = values.mean(0)
    assert ablation.value.dtype == dtype
    torch.testing.assert_close(ablation.value.double(), mean, rtol=TOL[dtype], atol=TOL[dtype])
    ours = net.intervene(BASE, [ablation]).logits
    hand = _run_writing(model, mlp, at_positions(lambda v: ablation.value.expand_as(v)), BASE)
    assert torch.equal(ours, hand)

    constant = values[0].to(dtype)
    ours = net.intervene(BASE, [ConstantAblation(c, constant)]).logits
    assert torch.equal(ours, _run_writing(model, mlp, at_positions(lambda v: constant.expand_as(v)), BASE))

    pool = values[:4].to(dtype)
    rows = torch.randint(0, 4, (2,), generator=torch.Generator().manual_seed(7))
    ours = net.intervene(BASE, [ResampleAblation(c, pool, seed=7)]).logits
    assert torch.equal(ours, _run_writing(model, mlp, at_positions(lambda v: pool[rows]), BASE))
    with pytest.raises(Exception, match="dtype|is torch"):
        net.intervene(BASE, [ConstantAblation(c, values[0].to(torch.float32 if dtype != torch.float32 else torch.float64))])


def _rotation_reference(iv: nn.Module, base: Tensor, source: Tensor) -> Tensor:
    """Hand-written DAS in float64: ``b + (((s - b) @ W[:, cols]) * mask) @ W[:, cols]^T``."""
    w = iv.rotation.weight.detach().double()
    b, s = base.double(), source.double()
    if isinstance(iv, RotatedInterchange):
        cols = w[:, iv.dims[0] : iv.dims[1]]
        return b + ((s - b) @ cols) @ cols.T
    if isinstance(iv, LowRankRotatedInterchange):
        return b + ((s - b) @ w) @ w.T
    d = w.shape[0]
    j = torch.arange(d, dtype=torch.float64)
    t, edge = float(iv.temperature), float(iv.boundary) * d
    mask = torch.sigmoid(j / t) * torch.sigmoid((edge - j) / t)
    return b + (((s - b) @ w) * mask) @ w.T


@IDS
@pytest.mark.parametrize("kind", ["rotated", "low_rank", "boundless"])
@pytest.mark.parametrize("rotation_dtype", [torch.float32, torch.float64], ids=["rot32", "rot64"])
def test_rotation_forward_matches_float64_math(kind: str, dtype: torch.dtype, rotation_dtype: torch.dtype) -> None:
    """The written values equal float64 math rounded once to the model's dtype (half types: up
    to one ulp, since the rotation computes in float32); float64 models to 1e-12 even with the
    default float32 rotation (its entries are widened exactly, nothing runs in float32)."""
    g = torch.Generator().manual_seed(0)
    rotation = Rotation(16, 16 if kind != "low_rank" else 5, dtype=rotation_dtype, generator=g)
    c = TransformerCoordinate(0, "block_output")
    iv = {
        "rotated": lambda: RotatedInterchange(c, rotation, (3, 9)),
        "low_rank": lambda: LowRankRotatedInterchange(c, rotation),
        "boundless": lambda: BoundlessRotatedInterchange(c, rotation, boundary=0.4, temperature=1.5),
    }[kind]()
    base = torch.randn(3, 4, 16, generator=g, dtype=torch.float64).to(dtype)
    source = torch.randn(3, 4, 16, generator=g, dtype=torch.float64).to(dtype)
    out = iv(base, source)
    assert out.dtype == dtype
    expected = _rotation_reference(iv, base, source)
    if dtype == torch.float64:
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    elif rotation_dtype == torch.float64 or dtype == torch.float32:
        torch.testing.assert_close(out.double(), expected, rtol=0, atol=TOL[dtype])
    else:  # one rounding of a float32 result: at most one ulp of the half type from float64 math
        ulp = torch.finfo(dtype).eps * expected.abs().clamp(min=torch.finfo(dtype).tiny)
        assert ((out.double() - expected).abs() <= ulp * 2.0).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=["float64", "bfloat16"])
def test_rotation_gradient_matches_float64_autograd(dtype: torch.dtype) -> None:
    """The DAS gradient on the rotation's parameter through a model of each dtype, against the
    same loss computed by hand in float64 (exact for float64, dtype tolerance for bfloat16)."""
    model = _model("llama", dtype)
    net = TransformerInterventionable(model)
    c = TransformerCoordinate(1, "block_output", position=Tokens.last())
    torch.manual_seed(3)
    iv = RotatedInterchange(c, Rotation(16, dtype=torch.float64), (0, 6))
    out = net.intervene(BASE, [iv], [SOURCE]).logits
    loss = out[:, -1].double().logsumexp(-1).sum()
    (grad,) = torch.autograd.grad(loss, [iv.rotation.parametrizations.weight.original])

    src = _capture(model, _block(model, 1), SOURCE)
    holder = copy.deepcopy(iv.rotation)  # the same parametrisation (and its base), written by hand
    wmat = holder.weight[:, 0:6]

    def write_rotated(o: Tensor) -> Tensor:
        o = o.clone()
        b, s = o[:, -1].double(), src[:, -1].double()
        o[:, -1] = (b + ((s - b) @ wmat) @ wmat.T).to(o.dtype)
        return o

    hand = _run_writing(model, _block(model, 1), write_rotated, BASE)[:, -1].double().logsumexp(-1).sum()
    (hand_grad,) = torch.autograd.grad(hand, [holder.parametrizations.weight.original])
    tol = 1e-12 if dtype == torch.float64 else 0.0
    torch.testing.assert_close(grad, hand_grad, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------- attention probs


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _hand_attention_probs(model: nn.Module, family: str, layer: int, inputs: dict[str, Tensor]) -> Tensor:
    """Attention probabilities ``[batch, heads, q, k]`` computed in float64 from the query / key
    projections read by plain hooks (causal mask; Llama: rotary with the model's cos / sin)."""
    got: dict[str, object] = {}
    handles = []
    if family == "gpt2":
        attn = model.transformer.h[layer].attn
        handles.append(attn.c_attn.register_forward_hook(lambda m, a, o: got.update(qkv=o)))
    else:
        attn = model.model.layers[layer].self_attn
        handles.append(attn.q_proj.register_forward_hook(lambda m, a, o: got.update(q=o)))
        handles.append(attn.k_proj.register_forward_hook(lambda m, a, o: got.update(k=o)))
        handles.append(
            attn.register_forward_pre_hook(lambda m, a, k: got.update(pe=k["position_embeddings"]), with_kwargs=True)
        )
    try:
        model(**inputs)
    finally:
        for h in handles:
            h.remove()
    heads, d_head = 4, 4
    if family == "gpt2":
        q, k, _ = got["qkv"].double().split(16, dim=-1)  # type: ignore[union-attr]
    else:
        q, k = got["q"].double(), got["k"].double()  # type: ignore[union-attr]
    batch, seq = q.shape[:2]
    q = q.view(batch, seq, -1, d_head).transpose(1, 2)
    k = k.view(batch, seq, -1, d_head).transpose(1, 2)
    if family == "llama":
        cos, sin = (t.double()[:, None] for t in got["pe"])  # type: ignore[union-attr]
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        k = k.repeat_interleave(heads // k.shape[1], dim=1)
    scores = q @ k.transpose(-1, -2) / d_head**0.5
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()
    return scores.masked_fill(~causal, float("-inf")).softmax(-1)


@IDS
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_attention_probs_match_hand_math(family: str, dtype: torch.dtype) -> None:
    model = _model(family, dtype)
    net = TransformerInterventionable(model)
    c = TransformerCoordinate(1, "attention_probs")
    probs = net.collect(BASE, [c])[c]
    assert probs.dtype == dtype
    expected = _hand_attention_probs(model, family, 1, BASE)
    tol = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(probs.double(), expected, rtol=0, atol=tol)


@IDS
def test_attribution_probe_probs_keep_dtype(dtype: torch.dtype) -> None:
    """The attribution probe (AttentionRollout's capture) computes like the interventions."""
    from iit.attribution import capture_attentions

    model = _model("gpt2", dtype)
    probs, _ = capture_attentions(model, lambda x: model(**x), BASE)
    expected = _hand_attention_probs(model, "gpt2", 1, BASE)
    tol = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
    assert probs.dtype == dtype
    torch.testing.assert_close(probs[1].double(), expected, rtol=0, atol=tol)


# ---------------------------------------------------------------------------- gradients


@IDS
def test_gradient_attributions_match_hand_autograd(dtype: torch.dtype) -> None:
    """Saliency and input x gradient at the input embeddings equal a hand-written autograd pass
    in the same dtype (a sequence classifier; target class 2)."""
    from iit.attribution import InputXGradient, Saliency
    from tests.attribution.conftest import tiny_gpt2

    model = tiny_gpt2().to(dtype)
    ids = BASE["input_ids"] % 39 + 1  # no pad token (0), vocabulary 40
    ours = Saliency(model).attribute(ids, 2)
    xgrad = InputXGradient(model).attribute(ids, 2)
    emb = model.get_input_embeddings()(ids).detach().requires_grad_()
    logits = model(inputs_embeds=emb).logits[:, 2]
    (grad,) = torch.autograd.grad(logits.sum(), [emb])
    assert ours.dtype == dtype and grad.dtype == dtype
    torch.testing.assert_close(ours, grad.abs(), rtol=0, atol=0)
    torch.testing.assert_close(xgrad, grad * emb.detach(), rtol=0, atol=0)


def test_aupc_curve_keeps_float64() -> None:
    """AUPC ranks float64 scores and computes float64 probabilities: a 1e-12 score gap and a
    1e-9 logit gap (both invisible in float32) are honoured."""
    from iit.attribution.faithfulness import AUPCConfig, perturbation_curve

    seen: list[list[int]] = []

    def forward(ids: Tensor) -> Tensor:  # [1, seq] -> logits [1, 2]
        seen.append(ids[0].tolist())
        return torch.tensor([[0.0, 1e-9 * len(seen)]], dtype=torch.float64)

    ids = torch.tensor([5, 6, 7])
    scores = torch.tensor([1.0, 1.0 + 1e-12, 0.5], dtype=torch.float64)
    config = AUPCConfig(schedules=("one_by_one",), max_skip=1, prefix_specials=0, suffix_specials=0)
    curve = perturbation_curve(forward, ids, scores, 1, "sufficiency", "one_by_one", config)
    assert seen[1] == [6]  # the token with the (barely) larger score is kept first
    expected = [torch.tensor([0.0, 1e-9 * k], dtype=torch.float64).softmax(-1)[1].item() for k in (1, 2)]
    assert curve == pytest.approx(expected, abs=1e-15) and curve[0] != 0.5
