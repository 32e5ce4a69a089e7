"""Activation checkpointing: a recomputation in backward is not a second call. Interventions apply
the same values when a checkpointed region is recomputed, so outputs and gradients (base and
source inputs, model parameters, learned intervention parameters) equal those without
checkpointing, for ``torch.utils.checkpoint`` (reentrant and not) and Hugging Face
``gradient_checkpointing_enable`` (GPT-2, Llama; train mode, dropout 0)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest
import torch
import transformers as tf
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from iit import (
    Coordinate,
    HookFiringError,
    Index,
    Interchange,
    Interventionable,
    InterventionError,
    ZeroAblation,
)
from iit._dispatch import active_dispatchers
from iit.learned import LowRankRotatedInterchange, RotatedInterchange
from iit.transformers import TransformerCoordinate, TransformerInterventionable
from tests.iit.test_concurrency import hook_count


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(d, 2 * d), nn.Tanh(), nn.Linear(2 * d, d))
        self.anchor = nn.Identity()

    def forward(self, h: Tensor) -> Tensor:
        return self.anchor(torch.tanh(self.inner(h)))


class Blocks(nn.Module):
    """x [batch, 6] -> 3 residual blocks (each optionally checkpointed) -> 2 logits.
    ``resid.i`` is the residual stream after block i (outside the checkpointed region),
    ``blocks.i`` the block's output (the checkpointed call itself), ``blocks.i.inner.*`` inside."""

    def __init__(self, d: int = 6, n: int = 3) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(d) for _ in range(n)])
        self.resid = nn.ModuleList([nn.Identity() for _ in range(n)])
        self.head = nn.Linear(d, 2)
        self.reentrant: bool | None = None  # None: no checkpointing

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for block, resid in zip(self.blocks, self.resid):
            y = block(h) if self.reentrant is None else checkpoint(block, h, use_reentrant=self.reentrant)
            h = resid(h + y)
        return self.head(h)


def run_and_grads(
    wrapped: Interventionable, leaves: list[Tensor], make: Callable[[], list[Any]], call: Callable[[list[Any]], Any]
) -> list[Tensor | None]:
    """Output and gradients of every leaf, model parameter and intervention parameter after
    ``call(interventions).pow(2).sum().backward()``."""
    torch.manual_seed(5)
    ivs = make()
    params = [p for p in wrapped.model.parameters()] + [p for iv in ivs for p in iv.parameters()]
    for t in leaves + params:
        t.grad = None
    out = call(ivs)
    logits = out if isinstance(out, Tensor) else out.logits
    logits.pow(2).sum().backward()
    return [logits.detach()] + [t.grad for t in leaves + params]


def assert_same(got: list[Tensor | None], ref: list[Tensor | None], atol: float = 1e-12) -> None:
    assert len(got) == len(ref)
    for i, (g, r) in enumerate(zip(got, ref)):
        assert (g is None) == (r is None), f"entry {i}: gradient missing on one side"
        if r is not None:
            assert torch.allclose(g, r, atol=atol, rtol=0), f"entry {i}: max diff {(g - r).abs().max():.2e}"


COORDS = {
    "inside": Coordinate("blocks.1.inner.1", Index.dims(0, 6)),
    "checkpointed call": Coordinate("blocks.1"),
    "boundary": Coordinate("resid.1"),
}
KINDS: dict[str, Callable[[Coordinate], Any]] = {
    "interchange": lambda c: Interchange(c),
    "rotation": lambda c: RotatedInterchange(c, 6, (0, 3)).double(),
    "low-rank rotation": lambda c: LowRankRotatedInterchange(c, 6, 2).double(),
}


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
@pytest.mark.parametrize("where", list(COORDS))
@pytest.mark.parametrize("kind", list(KINDS))
def test_torch_checkpoint_gives_the_outputs_and_gradients_of_no_checkpointing(reentrant, where, kind):
    torch.manual_seed(0)
    net = Blocks().double()
    wrapped = Interventionable(net)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    s = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    make = lambda: [KINDS[kind](COORDS[where]), ZeroAblation(Coordinate("blocks.2.inner.1", Index.dims(1, 3)))]  # noqa: E731
    # a reentrant checkpoint re-runs its region in a separate backward pass: gradients cannot
    # reach a source run from inside it (a clear error); everything else is exact
    detach = reentrant and where != "boundary"
    call = lambda ivs: wrapped.intervene(x, ivs, [s], detach_sources=detach)  # noqa: E731
    reference = run_and_grads(wrapped, [x, s], make, call)
    net.reentrant = reentrant
    got = run_and_grads(wrapped, [x, s], make, call)
    assert_same(got, reference)
    assert (got[2] is None) == detach  # the source gets a gradient unless detached
    assert got[-1] is not None or kind == "interchange"  # and so do learned parameters
    if detach:
        with pytest.raises(InterventionError, match=r"reentrant activation checkpoint.*use_reentrant=False"):
            wrapped.intervene(x, make(), [s])
    gc.collect()
    assert hook_count(net) == 0 and active_dispatchers() == 0


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_collected_sources_carry_gradients_under_checkpointing(reentrant):
    """In-batch sources as in IIT training: collect with the output (values read inside and
    outside checkpointed regions), then intervene with the collected, permuted values;
    gradients reach the model through both runs."""
    torch.manual_seed(0)
    net = Blocks().double()
    wrapped = Interventionable(net)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    inside = Coordinate("blocks.1.inner.1", Index.dims(0, 6))
    inside_half = Coordinate("blocks.1.inner.1", Index.dims(3, 6))
    between = Coordinate("resid.0", Index.dims(2, 5))
    perm = torch.tensor([2, 0, 3, 1])

    def call(ivs: list[Any]) -> Tensor:
        out, acts = wrapped.collect(x, [inside, inside_half, between], return_output=True)
        writes = [  # read inside a region, written outside:
            Interchange(Coordinate("resid.1", Index.dims(0, 3)), source_coordinate=inside_half),
            Interchange(between),
        ]
        if not reentrant:
            writes.append(Interchange(inside))  # written inside a region
        return out + wrapped.intervene(x, writes, [acts.rows(perm)])

    reference = run_and_grads(wrapped, [x], list, call)
    net.reentrant = reentrant
    got = run_and_grads(wrapped, [x], list, call)
    assert_same(got, reference)
    gc.collect()
    assert hook_count(net) == 0 and active_dispatchers() == 0


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_hooks_live_while_the_graph_can_recompute_and_leave_with_it(reentrant):
    torch.manual_seed(0)
    net = Blocks().double()
    net.reentrant = reentrant
    wrapped = Interventionable(net)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    out = wrapped.intervene(x, [ZeroAblation(Coordinate("blocks.0.inner.1"))])
    assert active_dispatchers() == 1  # kept for the recomputation in backward
    plain = net(x)  # a plain call meanwhile, recomputed in backward too, stays untouched
    net.reentrant = None
    reference_plain = net(x)
    assert torch.equal(plain, reference_plain)
    (grad,) = torch.autograd.grad(reference_plain.sum(), x)
    x.grad = None
    plain.sum().backward()
    assert torch.allclose(x.grad, grad, atol=1e-12, rtol=0)
    del out
    gc.collect()
    assert hook_count(net) == 0 and active_dispatchers() == 0


def test_a_real_second_call_inside_a_checkpointed_region_is_still_reported():
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared = nn.Linear(4, 4)

        def forward(self, x: Tensor) -> Tensor:
            return checkpoint(lambda h: self.shared(torch.relu(self.shared(h))), x, use_reentrant=False)

    wrapped = Interventionable(Tied())
    x = torch.randn(2, 4, requires_grad=True)
    with pytest.raises(HookFiringError, match="'shared' ran more than once"):
        wrapped.intervene(x, [ZeroAblation(Coordinate("shared"))])
    gc.collect()
    assert hook_count(wrapped) == 0 and active_dispatchers() == 0


# ----------------------------------------------------------------------------- Hugging Face
def tiny(family: str) -> nn.Module:
    torch.manual_seed(3)
    if family == "gpt2":
        config = tf.GPT2Config(
            n_layer=2, n_embd=16, n_head=4, n_inner=24, vocab_size=40, n_positions=32,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
        )
    else:
        config = tf.LlamaConfig(
            num_hidden_layers=2, hidden_size=16, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=24, vocab_size=40, max_position_embeddings=32, attention_dropout=0.0,
        )
    return tf.AutoModelForCausalLM.from_config(config).double().train()


def hf_interventions() -> list[Any]:
    return [
        Interchange(TransformerCoordinate(0, "attention_output", dims=(0, 8))),  # inside the layer
        RotatedInterchange(TransformerCoordinate(0, "block_output"), 16, (2, 9)).double(),  # boundary
        LowRankRotatedInterchange(TransformerCoordinate(1, "mlp_output"), 16, 4).double(),  # inside
        Interchange(TransformerCoordinate(1, "head_attention_output", head=2)),  # inside, an input
    ]


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_hf_gradient_checkpointing_gives_the_outputs_and_gradients_of_no_checkpointing(family, reentrant):
    model = tiny(family)
    wrapped = TransformerInterventionable(model)
    gen = torch.Generator().manual_seed(4)
    mask = torch.ones(3, 7, dtype=torch.long)
    base = torch.randn(3, 7, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    source = torch.randn(3, 7, 16, generator=gen, dtype=torch.float64, requires_grad=True)

    def call(ivs: list[Any], detach: bool) -> Any:
        return wrapped.intervene(
            {"inputs_embeds": base, "attention_mask": mask}, ivs, [{"inputs_embeds": source, "attention_mask": mask}],
            detach_sources=detach,
        )

    # every site inside the checkpointed layers (reentrant: sources detached, see above) ...
    everywhere = lambda ivs: call(ivs, detach=reentrant)  # noqa: E731
    # ... and only at the layer boundary (the layer's own hooks are outside the checkpoint)
    boundary = lambda ivs: call(ivs, detach=False)  # noqa: E731
    at_boundary = lambda: [RotatedInterchange(TransformerCoordinate(1, "block_output"), 16, (0, 5)).double()]  # noqa: E731
    reference = run_and_grads(wrapped, [base, source], hf_interventions, everywhere)
    reference_boundary = run_and_grads(wrapped, [base, source], at_boundary, boundary)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    hooks = hook_count(model)  # Hugging Face adds one of its own (inputs require grad)
    flags = [(m.training, getattr(m, "gradient_checkpointing", None)) for m in model.modules()]
    got = run_and_grads(wrapped, [base, source], hf_interventions, everywhere)
    assert_same(got, reference, atol=1e-10)
    assert (got[2] is None) == reentrant
    assert_same(run_and_grads(wrapped, [base, source], at_boundary, boundary), reference_boundary, atol=1e-10)
    if reentrant:
        with pytest.raises(InterventionError, match="reentrant activation checkpoint"):
            call(hf_interventions(), detach=False)
    assert flags == [(m.training, getattr(m, "gradient_checkpointing", None)) for m in model.modules()]
    layer = model.model.layers[0] if family == "llama" else model.transformer.h[0]
    assert layer.gradient_checkpointing
    gc.collect()
    assert hook_count(model) == hooks and active_dispatchers() == 0
