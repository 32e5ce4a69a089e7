"""Gradient family against captum (the oracle), closed forms and the completeness axiom."""

from __future__ import annotations

import pytest
import torch
from captum.attr import InputXGradient as CaptumIxG
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import LayerIntegratedGradients as CaptumLayerIG
from captum.attr import Saliency as CaptumSaliency
from torch import nn

from iit.attribution import InputXGradient, IntegratedGradients, Saliency, reduce_tokens
from iit.errors import CoordinateError, TargetError
from tests.attribution.conftest import mlp64, tiny_bert

METHODS = ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(5)
    return torch.randn(4, 5, dtype=torch.float64)


@pytest.mark.parametrize("absolute", [True, False])
def test_saliency_matches_captum_on_mlp(x: torch.Tensor, absolute: bool) -> None:
    model = mlp64()
    ours = Saliency(model, abs=absolute).attribute(x, 2)
    theirs = CaptumSaliency(model).attribute(x.clone().requires_grad_(), target=2, abs=absolute)
    torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=0)


def test_input_x_gradient_matches_captum_with_tensor_target(x: torch.Tensor) -> None:
    model = mlp64()
    target = torch.tensor([0, 1, 2, 1])
    ours = InputXGradient(model).attribute(x, target)
    theirs = CaptumIxG(model).attribute(x.clone().requires_grad_(), target=target)
    torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_integrated_gradients_match_captum_on_mlp(x: torch.Tensor, method: str) -> None:
    model = mlp64()
    base = torch.randn_like(x)
    ours, delta = IntegratedGradients(
        model, n_steps=17, method=method, internal_batch_size=12
    ).attribute(x, 1, baselines=base, return_convergence_delta=True)
    theirs, their_delta = CaptumIG(model).attribute(
        x, baselines=base, target=1, n_steps=17, method=method, return_convergence_delta=True
    )
    torch.testing.assert_close(ours, theirs, atol=1e-8, rtol=0)
    torch.testing.assert_close(delta, their_delta, atol=1e-8, rtol=0)


def test_ig_chunking_does_not_change_the_result(x: torch.Tensor) -> None:
    model = mlp64()
    whole = IntegratedGradients(model, n_steps=10).attribute(x, 0)
    chunked = IntegratedGradients(model, n_steps=10, internal_batch_size=4).attribute(x, 0)
    torch.testing.assert_close(whole, chunked, atol=1e-12, rtol=0)


def test_ig_on_linear_model_is_exact_closed_form() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(6, 3).double()
    x, base = torch.randn(2, 6, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    for method in METHODS[:4] + ["trapezoid"]:
        attributions = IntegratedGradients(linear, n_steps=3, method=method).attribute(
            x, 2, baselines=base
        )
        expected = linear.weight[2].detach() * (x - base)
        torch.testing.assert_close(attributions, expected, atol=1e-12, rtol=0)


def test_ig_completeness_gap_is_reported_and_shrinks() -> None:
    model = mlp64()
    model[1], model[3] = nn.Softplus(), nn.Softplus()  # smooth: quadrature error shrinks
    x = torch.randn(3, 5, dtype=torch.float64)
    gaps = []
    for n in (2, 8, 64):
        attributions, delta = IntegratedGradients(model, n_steps=n).attribute(
            x, 0, return_convergence_delta=True
        )
        with torch.no_grad():
            exact = model(x)[:, 0] - model(torch.zeros_like(x))[:, 0]
        torch.testing.assert_close(delta, attributions.sum(1) - exact, atol=1e-12, rtol=0)
        gaps.append(delta.abs().max().item())
    assert gaps[2] < gaps[0] and gaps[2] < 1e-8


def test_captum_trapezoid_quirk_vs_exact_trapezoid() -> None:
    linear = nn.Linear(4, 2).double()
    x = torch.randn(1, 4, dtype=torch.float64)
    n = 5
    quirk = IntegratedGradients(linear, n_steps=n, method="riemann_trapezoid").attribute(x, 0)
    exact = IntegratedGradients(linear, n_steps=n, method="trapezoid").attribute(x, 0)
    torch.testing.assert_close(quirk, exact * (1 - 1 / n), atol=1e-12, rtol=0)


def _embedding_forward(model: nn.Module):
    return lambda embeds: model(inputs_embeds=embeds).logits


def test_bert_gradient_methods_match_captum_on_embeddings(ids: torch.Tensor) -> None:
    model = tiny_bert()
    embeds = model.get_input_embeddings()(ids).detach()
    forward = _embedding_forward(model)
    sal = Saliency(model, abs=False).attribute(ids, 1)
    torch.testing.assert_close(
        sal, CaptumSaliency(forward).attribute(embeds, target=1, abs=False), atol=1e-5, rtol=0
    )
    ixg = InputXGradient(model).attribute(ids, 1)
    torch.testing.assert_close(
        ixg, CaptumIxG(forward).attribute(embeds.clone(), target=1), atol=1e-5, rtol=0
    )
    for method in METHODS:
        ig = IntegratedGradients(model, n_steps=8, method=method).attribute(ids, 0)
        theirs = CaptumIG(forward).attribute(embeds, target=0, n_steps=8, method=method)
        torch.testing.assert_close(ig, theirs, atol=1e-5, rtol=0)


def test_bert_layer_ig_matches_captum_layer_integrated_gradients(ids: torch.Tensor) -> None:
    model = tiny_bert()
    baseline_ids = torch.zeros_like(ids)
    for layer in ("bert.embeddings", "bert.encoder.layer.0"):
        module = model.get_submodule(layer)
        ours, delta = IntegratedGradients(model, layer=layer, n_steps=12).attribute(
            ids, 2, baseline_inputs=baseline_ids, return_convergence_delta=True
        )
        theirs, their_delta = CaptumLayerIG(lambda i: model(i).logits, module).attribute(
            ids, baselines=baseline_ids, target=2, n_steps=12, return_convergence_delta=True
        )
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
        torch.testing.assert_close(delta, their_delta, atol=1e-5, rtol=0)


def test_mapping_inputs_with_attention_mask_and_chunks(ids: torch.Tensor) -> None:
    model = tiny_bert()
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    ours = IntegratedGradients(model, n_steps=6, internal_batch_size=7).attribute(inputs, 1)
    embeds = model.get_input_embeddings()(ids).detach()
    theirs = CaptumIG(lambda e, m: model(inputs_embeds=e, attention_mask=m).logits).attribute(
        embeds, target=1, n_steps=6, internal_batch_size=7, additional_forward_args=(mask,)
    )
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_custom_forward_explains_an_intervened_run(ids: torch.Tensor) -> None:
    model = tiny_bert()
    embeds = model.get_input_embeddings()(ids).detach()
    patch = torch.randn(16)

    def intervened(inputs: torch.Tensor):
        # stand-in for Interventionable.intervene: overwrite layer 0's output at position 1
        def hook(module, args, output):
            output = output.clone()
            output[:, 1] = patch
            return output

        handle = model.bert.encoder.layer[0].register_forward_hook(hook)
        try:
            return model(inputs)
        finally:
            handle.remove()

    ours = InputXGradient(model, forward=intervened).attribute(ids, 0)

    def reference(e: torch.Tensor) -> torch.Tensor:
        handle = model.bert.encoder.layer[0].register_forward_hook(
            lambda m, a, o: torch.cat([o[:, :1], patch.expand(o.shape[0], 1, 16), o[:, 2:]], 1)
        )
        try:
            return model(inputs_embeds=e).logits
        finally:
            handle.remove()

    theirs = CaptumIxG(reference).attribute(embeds.clone(), target=0)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    # the patched position no longer reaches the output through layer 0's residual stream
    assert not torch.allclose(ours, InputXGradient(model).attribute(ids, 0))


def test_token_reduction_of_gradients_matches_manual_l2(ids: torch.Tensor) -> None:
    model = tiny_bert()
    grads = Saliency(model, abs=False).attribute(ids, 0)
    torch.testing.assert_close(reduce_tokens(grads, "l2"), grads.pow(2).sum(-1).sqrt())


def test_errors_name_the_problem(ids: torch.Tensor) -> None:
    model = tiny_bert()
    with pytest.raises(CoordinateError, match="did you mean"):
        Saliency(model, layer="bert.encoder.layers.0")
    with pytest.raises(TargetError, match="out of range"):
        Saliency(model).attribute(ids, 7)
    with pytest.raises(CoordinateError, match="baseline"):
        IntegratedGradients(model).attribute(ids, 0, baselines=torch.zeros(16))
    with pytest.raises(ValueError, match="gausslegendre"):
        IntegratedGradients(model, method="gauss_legendre")  # type: ignore[arg-type]
    plain = nn.Linear(3, 2)
    with pytest.raises(CoordinateError, match="layer="):
        Saliency(plain).attribute(torch.tensor([[1, 2, 3]]), 0)
