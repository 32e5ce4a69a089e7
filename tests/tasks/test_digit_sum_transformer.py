"""Digit sum with a transformer: token encoding, and the aligned residual-stream slice checked
against a manual forward that patches the residual stream by hand."""

from __future__ import annotations

import pytest
import torch

from causal_models import CounterfactualConfig, CounterfactualGenerator
from iit import Interchange, Interventionable
from tasks.digit_sum_transformer import DigitSumTransformer
from tasks.networks import TinyTransformer


def _manual(net: TinyTransformer, tokens: torch.Tensor, layer: int, patch=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward by hand; ``patch(residual)`` may replace the residual after block ``layer``.
    Returns (logits, residual after block ``layer``)."""
    x = net.embed(tokens) + net.pos
    kept = None
    for i, block in enumerate(net.blocks):
        x = block(x)
        if i == layer:
            kept = x
            if patch is not None:
                x = patch(x)
    return net.head(net.ln_f(x[:, -1])), kept


def test_encoding_appends_the_read_out_token() -> None:
    task = DigitSumTransformer(max_digit=5)
    values = {"x": torch.tensor([1, 5]), "y": torch.tensor([0, 2]), "z": torch.tensor([3, 4])}
    assert task.encode_inputs(values).tolist() == [[1, 0, 3, 6], [5, 2, 4, 6]]


def test_aligned_slice_is_the_residual_stream_at_the_read_out_position() -> None:
    torch.manual_seed(0)
    task = DigitSumTransformer(d_model=32, n_heads=4, s_width=8)
    net = task.build_network().eval()
    wrapped = Interventionable(net)
    model = task.causal_model()
    batch = CounterfactualGenerator(model, CounterfactualConfig(variables=("S",)), seed=0).generate(16)
    base, source = task.encode_inputs(batch.base), task.encode_inputs(batch.sources[0])
    coordinate = task.alignments()["default"]["S"]
    with torch.no_grad():
        collected = wrapped.collect(base, [coordinate])[coordinate]
        _, residual = _manual(net, base, 0)
        torch.testing.assert_close(collected, residual[:, 3:4, 0:8])
        _, source_residual = _manual(net, source, 0)

        def patch(x: torch.Tensor) -> torch.Tensor:
            x = x.clone()
            x[:, 3, 0:8] = source_residual[:, 3, 0:8]
            return x

        expected, _ = _manual(net, base, 0, patch)
        got = wrapped.intervene(base, [Interchange(coordinate)], [source])
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, net(base))


def test_every_alignment_resolves() -> None:
    task = DigitSumTransformer(d_model=32, n_heads=4, s_width=16)
    model, net = task.causal_model(), Interventionable(task.build_network())
    assert set(task.alignments()) == {"default", "S_at_y", "S_other_dims"}
    for name in task.alignments():
        task.check(net, model, task.alignment(model, name))


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match=r"s_layer must be in \[0, 1\)"):
        DigitSumTransformer(n_layers=2, s_layer=1)
    with pytest.raises(ValueError, match="s_width"):
        DigitSumTransformer(d_model=16, s_width=32)
