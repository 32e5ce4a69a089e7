"""Every method leaves no hook and no attention routing behind, after success and after an
exception raised in the middle of the forward."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from iit.attribution import (
    ALTI,
    LRP,
    AttentionRollout,
    AttentionTracing,
    InputXGradient,
    IntegratedGradients,
    Saliency,
)
from iit.attribution.base import Attribution
from iit.transformers.attention import HOOK_POINT
from tests.attribution.conftest import tiny_bert, tiny_gpt2

CASES: dict[str, Callable[..., Attribution]] = {
    "saliency": lambda m, f: Saliency(m, forward=f),
    "saliency_layer": lambda m, f: Saliency(m, layer=_layer(m), forward=f),
    "saliency_layer_input": lambda m, f: Saliency(m, layer=_layer(m), layer_input=True, forward=f),
    "input_x_gradient": lambda m, f: InputXGradient(m, forward=f),
    "integrated_gradients": lambda m, f: IntegratedGradients(m, n_steps=3, forward=f),
    "layer_integrated_gradients": lambda m, f: IntegratedGradients(
        m, layer=_layer(m), n_steps=3, internal_batch_size=3, forward=f
    ),
    "lrp": lambda m, f: LRP(m, forward=f),
    "rollout": lambda m, f: AttentionRollout(m, forward=f),
    "tracing": lambda m, f: AttentionTracing(m, forward=f),
    "alti": lambda m, f: ALTI(m, forward=f),
}


def _layer(model: nn.Module) -> str:
    return "bert.encoder.layer.0" if hasattr(model, "bert") else "transformer.h.0"


def _no_hook_points(model: nn.Module) -> bool:
    return not any(hasattr(m, HOOK_POINT) for m in model.modules())


def _hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def _raising_forward(model: nn.Module) -> Callable[[torch.Tensor], object]:
    """A forward that fails as the last block's attention starts (after earlier hooks have
    fired, before every method's last read)."""
    block = model.bert.encoder.layer[-1].attention if hasattr(model, "bert") else model.transformer.h[-1].attn

    def forward(inputs: torch.Tensor) -> object:
        def boom(module: nn.Module, args: object) -> None:
            raise RuntimeError("boom mid-forward")

        handle = block.register_forward_pre_hook(boom)
        try:
            return model(inputs)
        finally:
            handle.remove()

    return forward


@pytest.mark.parametrize("factory", [tiny_bert, tiny_gpt2])
@pytest.mark.parametrize("case", list(CASES))
def test_no_hooks_left(case: str, factory, ids: torch.Tensor) -> None:
    model = factory()
    hooks, impl = _hook_count(model), model.config._attn_implementation
    result = CASES[case](model, None).attribute(ids, 1)
    assert result.shape[:2] == ids.shape and torch.isfinite(result).all()
    assert _hook_count(model) == hooks
    assert model.config._attn_implementation == impl and _no_hook_points(model)
    with pytest.raises(RuntimeError, match="boom mid-forward"):
        CASES[case](model, _raising_forward(model)).attribute(ids, 1)
    assert _hook_count(model) == hooks
    assert model.config._attn_implementation == impl and _no_hook_points(model)


@pytest.mark.parametrize("method", [Saliency, InputXGradient, IntegratedGradients, LRP])
def test_no_hooks_left_on_plain_mlp(method, mlp) -> None:
    x = torch.randn(2, 4)
    before = _hook_count(mlp)
    method(mlp).attribute(x, 0)

    def broken(inputs: torch.Tensor) -> torch.Tensor:
        mlp(inputs)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        method(mlp, forward=broken).attribute(x, 0)
    assert _hook_count(mlp) == before
