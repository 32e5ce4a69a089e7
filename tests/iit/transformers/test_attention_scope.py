"""``attention_probs`` coordinates are call-scoped: while one thread collects or intervenes at
attention probabilities, plain calls and other calls on the same model from other threads give
bit-identical results to the unwrapped model (and to the same calls run one after another), the
hook points never vanish under a user, and the model is restored when the last user leaves.
Under gradient checkpointing a recomputed attention takes the path its first pass took."""

from __future__ import annotations

import gc
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from iit import Interchange, ZeroAblation
from iit._dispatch import active_dispatchers
from iit.transformers import TransformerCoordinate, TransformerInterventionable
from iit.transformers.attention import HOOK_POINT
from tests.iit.test_checkpointing import assert_same, run_and_grads, tiny
from tests.iit.test_concurrency import hook_count
from tests.iit.transformers._models import VOCAB, tiny_model


def _inputs(seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (2, 7), generator=g)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _operations(model: nn.Module, net: TransformerInterventionable) -> list[Callable[[], list[Tensor]]]:
    """Deterministic calls: plain forwards, collections and interventions at attention probs."""
    probs = [TransformerCoordinate(layer, "attention_probs") for layer in (0, 2)]
    head = TransformerCoordinate(1, "attention_probs", head=1)
    base, source = _inputs(1), _inputs(2)

    def plain(seed: int) -> Callable[[], list[Tensor]]:
        return lambda: [model(**_inputs(seed)).last_hidden_state]

    def collect() -> list[Tensor]:
        out, acts = net.collect(base, probs, return_output=True)
        return [out.last_hidden_state] + [acts[c] for c in probs]

    def interchange() -> list[Tensor]:
        return [net.intervene(base, [Interchange(probs[0]), Interchange(head)], [source]).last_hidden_state]

    def ablate() -> list[Tensor]:
        return [net.intervene(source, [ZeroAblation(head)], []).last_hidden_state]

    return [plain(1), plain(2), plain(3), collect, interchange, ablate]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_threads_mixing_plain_calls_and_attention_probs_are_bit_identical_to_sequential(family: str) -> None:
    model = tiny_model(family, attn="sdpa")
    net = TransformerInterventionable(model)
    impl = model.config._attn_implementation
    names = [n for n, _ in model.named_modules()]
    hooks = hook_count(model)
    ops = _operations(model, net)
    # plain calls before anything was wrapped: the unwrapped model's own results
    with torch.no_grad():
        reference = [op() for op in ops]
    assert not any(HOOK_POINT in n for n in names)

    n_threads, per_thread = 4, 60
    errors: list[BaseException] = []
    mismatches: list[tuple[int, int]] = []
    barrier = threading.Barrier(n_threads)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            barrier.wait()
            with torch.no_grad():
                for _ in range(per_thread):
                    k = rng.randrange(len(ops))
                    got = ops[k]()
                    if not all(torch.equal(a, b) for a, b in zip(got, reference[k], strict=True)):
                        mismatches.append((seed, k))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert not mismatches, mismatches[:10]
    # the same calls once more, one after another, still equal (sequential reference)
    with torch.no_grad():
        again = [op() for op in ops]
    assert all(torch.equal(a, b) for r, g in zip(reference, again) for a, b in zip(r, g))
    # the model is as it was found
    assert model.config._attn_implementation == impl
    assert [n for n, _ in model.named_modules()] == names
    assert hook_count(model) == hooks and active_dispatchers() == 0


def test_plain_call_during_an_attention_probs_call_runs_the_models_own_attention() -> None:
    """Deterministic interleaving: a plain call made (in another thread) while a collection at
    attention_probs is in the middle of its forward is bit-identical to the unwrapped model."""
    model = tiny_model("gpt2", attn="sdpa")
    net = TransformerInterventionable(model)
    inputs = _inputs(3)
    with torch.no_grad():
        want = model(**inputs).last_hidden_state
    got: list[Any] = []
    started: list[bool] = []

    def plain() -> None:
        with torch.no_grad():
            got.append(model(**inputs).last_hidden_state)

    def inside(module: nn.Module, args: tuple) -> None:  # the switch is in force here
        if not started:
            started.append(True)
            t = threading.Thread(target=plain)
            t.start()
            t.join()

    handle = model.h[0].register_forward_pre_hook(inside)
    try:
        c = TransformerCoordinate(0, "attention_probs")
        with torch.no_grad():
            acts = net.collect(inputs, [c])
    finally:
        handle.remove()
    assert acts[c].shape == (2, 4, 7, 7)
    assert len(got) == 1 and torch.equal(got[0], want)
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_attention_probs_intervention_under_hf_gradient_checkpointing(family: str, reentrant: bool) -> None:
    """Outputs and gradients equal those without checkpointing (the recomputed attention takes
    the probability path again and the intervention is replayed)."""
    model = tiny(family)
    wrapped = TransformerInterventionable(model)
    gen = torch.Generator().manual_seed(4)
    mask = torch.ones(3, 7, dtype=torch.long)
    base = torch.randn(3, 7, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    source = torch.randn(3, 7, 16, generator=gen, dtype=torch.float64, requires_grad=True)

    def make() -> list[Any]:
        return [Interchange(TransformerCoordinate(0, "attention_probs", head=1)),
                Interchange(TransformerCoordinate(1, "attention_probs", position=(2, 5)))]

    def call(ivs: list[Any]) -> Any:
        return wrapped.intervene(
            {"inputs_embeds": base, "attention_mask": mask}, ivs, [{"inputs_embeds": source, "attention_mask": mask}],
            detach_sources=reentrant,
        )

    reference = run_and_grads(wrapped, [base, source], make, call)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    hooks = hook_count(model)
    got = run_and_grads(wrapped, [base, source], make, call)
    assert_same(got, reference, atol=1e-10)
    gc.collect()
    assert hook_count(model) == hooks and active_dispatchers() == 0
    assert model.config._attn_implementation == "sdpa"
    assert not any(HOOK_POINT in n for n, _ in model.named_modules())
