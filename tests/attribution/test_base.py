"""Layer resolution, the hook helper, token reductions and the token wrapper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from iit.attribution import (
    AttentionRollout,
    InputXGradient,
    TokenAttribution,
    reduce_tokens,
    resolve_layer,
)
from iit.attribution._layers import replace_at
from iit.attribution.base import gradients_at
from iit.errors import CoordinateError, HookFiringError
from tests.attribution.conftest import tiny_bert


def test_resolve_layer_defaults_and_errors(bert: nn.Module) -> None:
    ref = resolve_layer(bert, None)
    assert ref.module is bert.bert.embeddings.word_embeddings
    assert ref.name == "bert.embeddings.word_embeddings" and ref.io == "output"
    assert resolve_layer(bert, "bert.pooler", layer_input=True).io == "input"
    assert resolve_layer(nn.Linear(2, 2), None).module is None
    with pytest.raises(CoordinateError, match="bert.encoder.layer.0.output"):
        resolve_layer(bert, "bert.encoder.layer.0.outptu")
    with pytest.raises(CoordinateError, match="nn.Module"):
        resolve_layer(lambda x: x, "layer")


def test_replace_at_detects_reused_and_silent_modules() -> None:
    shared = nn.Linear(3, 3)
    twice = nn.Sequential(shared, nn.ReLU(), shared)
    with pytest.raises(HookFiringError, match="ran 2 times"):
        gradients_at(resolve_layer(twice, "0"), twice, torch.randn(2, 3), 0)
    assert not shared._forward_hooks
    idle = nn.ModuleDict({"used": nn.Linear(3, 2), "unused": nn.Linear(3, 3)})
    with pytest.raises(HookFiringError, match="never ran"):
        gradients_at(resolve_layer(idle, "unused"), idle["used"], torch.randn(2, 3), 0)
    with pytest.raises(CoordinateError, match="shape"):
        with replace_at(resolve_layer(twice, "1"), lambda t: t[:1]):
            twice(torch.randn(2, 3))


def test_layer_input_equals_previous_output(bert: nn.Module, ids: torch.Tensor) -> None:
    into = InputXGradient(bert, layer="bert.encoder.layer.1", layer_input=True).attribute(ids, 0)
    out_of = InputXGradient(bert, layer="bert.encoder.layer.0").attribute(ids, 0)
    torch.testing.assert_close(into, out_of)


def test_reductions_against_numpy() -> None:
    torch.manual_seed(0)
    a = torch.randn(2, 5, 4, dtype=torch.float64)
    n = a.numpy()
    expected = {
        "sum": n.sum(-1),
        "abs_sum": np.abs(n).sum(-1),
        "abs_of_sum": np.abs(n.sum(-1)),
        "l2": np.sqrt((n**2).sum(-1)),
        "mean": n.mean(-1),
        "abs_mean": np.abs(n).mean(-1),
        "clip": np.maximum(n.sum(-1), 0),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(reduce_tokens(a, name).numpy(), value, atol=1e-12)
    normalized = reduce_tokens(a, "sum", normalize=True).numpy()
    np.testing.assert_allclose(normalized, n.sum(-1) / np.abs(n.sum(-1)).sum(-1, keepdims=True))
    with pytest.raises(ValueError, match="did you mean 'l2'"):
        reduce_tokens(a, "l3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch, seq, d"):
        reduce_tokens(a[0], "sum")


def test_token_attribution_wrapper(ids: torch.Tensor) -> None:
    model = tiny_bert()
    scores = TokenAttribution(InputXGradient(model), "sum")(ids, 0)
    torch.testing.assert_close(scores, InputXGradient(model).attribute(ids, 0).sum(-1))
    with pytest.raises(ValueError, match="pass a reduction"):
        TokenAttribution(InputXGradient(model))
    with pytest.raises(ValueError, match="reduction=None"):
        TokenAttribution(AttentionRollout(model), "sum")
    rollout = TokenAttribution(AttentionRollout(model), normalize=True)(ids, 0)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(ids.shape[0]))


def test_coordinates_name_attribution_places():
    from torch import nn

    from iit import Coordinate, CoordinateError, Index
    from iit.attribution import Saliency
    from iit.attribution._layers import resolve_layer

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    ref = resolve_layer(model, Coordinate("1"))
    assert ref.module is model[1] and ref.io == "output"
    assert resolve_layer(model, Coordinate("2", io="input")).io == "input"
    x = torch.randn(5, 3)
    by_path = Saliency(model, layer="1").attribute(x, 0)
    by_coordinate = Saliency(model, layer=Coordinate("1")).attribute(x, 0)
    assert torch.equal(by_path, by_coordinate)
    with pytest.raises(CoordinateError, match="read the slice"):
        resolve_layer(model, Coordinate("1", Index.dims(0, 2)))


def test_place_tensor_stops_the_forward_at_the_place(bert: nn.Module, ids: torch.Tensor) -> None:
    from iit.attribution._layers import default_forward, resolve_layer
    from iit.attribution.base import place_tensor, place_value

    ref = resolve_layer(bert, None)
    forward = default_forward(bert)
    ran: list[str] = []
    handle = bert.bert.encoder.layer[0].register_forward_hook(lambda *a: ran.append("layer0"))
    try:
        early = place_tensor(ref, forward, ids)
        assert ran == []  # nothing after the embeddings ran
        full, _ = place_value(ref, forward, ids)
        assert ran == ["layer0"]
    finally:
        handle.remove()
    torch.testing.assert_close(early, full, rtol=0, atol=0)
    assert not bert._forward_hooks and not bert.bert.embeddings.word_embeddings._forward_hooks
    silent = resolve_layer(bert, "classifier")
    with pytest.raises(HookFiringError):
        place_tensor(silent, lambda x: bert.bert.embeddings(x), ids)
