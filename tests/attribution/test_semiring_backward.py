"""Real semiring == autograd; config/source validation; hook hygiene; device."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from iit.attribution.semiring import (
    SemiringBackprop,
    SemiringConfig,
    gradient_graph_entropy,
    semiring_backward,
)
from iit.errors import CoordinateError, TargetError, UnsupportedOpError
from tests.attribution.conftest import mlp64, tiny_bert, tiny_gpt2


def _module_grad(model: nn.Module, name: str, inputs: dict, score) -> torch.Tensor:
    """Autograd gradient of ``score(model(**inputs)).sum()`` w.r.t. a module's output."""
    captured = []

    def hook(_m, _a, out):
        out.retain_grad()
        captured.append(out)

    handle = dict(model.named_modules())[name].register_forward_hook(hook)
    try:
        score(model(**inputs)).sum().backward()
    finally:
        handle.remove()
    return captured[0].grad


def test_real_equals_autograd_on_mlp() -> None:
    model = mlp64()
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    ours = SemiringBackprop(model, SemiringConfig(semiring="real")).attribute(x, target)
    xr = x.clone().requires_grad_()
    (ref,) = torch.autograd.grad(model(xr).gather(1, target[:, None]).sum(), xr)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_real_equals_autograd_on_gelu_layernorm_mlp_float32() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Linear(4, 8), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)
    ).eval()
    x = torch.randn(3, 4)
    ours = semiring_backward(model, x, 2, SemiringConfig(semiring="real")).values["input"]
    xr = x.clone().requires_grad_()
    (ref,) = torch.autograd.grad(model(xr)[:, 2].sum(), xr)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("make", "source"),
    [(tiny_bert, "bert.embeddings.word_embeddings"), (tiny_gpt2, "transformer.wte")],
    ids=["bert", "gpt2"],
)
def test_real_equals_autograd_on_tiny_transformers(make, source: str) -> None:
    model = make().double()
    ids = torch.randint(2, 40, (2, 6), generator=torch.Generator().manual_seed(2))
    config = SemiringConfig(semiring="real", sources=(source,))
    ours = semiring_backward(model, {"input_ids": ids}, 1, config).values[source]
    ref = _module_grad(model, source, {"input_ids": ids}, lambda out: out.logits[:, 1])
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_eager_bert_with_attention_mask_and_callable_target() -> None:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        vocab_size=50, attn_implementation="eager",
    )  # fmt: skip
    model = BertModel(cfg).eval().double()
    ids = torch.randint(1, 50, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    inputs = {"input_ids": ids, "attention_mask": mask}
    score = lambda out: out.last_hidden_state[:, 0, :4].sum(-1)  # noqa: E731
    src = "embeddings.word_embeddings"
    ours = semiring_backward(model, inputs, score, SemiringConfig("real", sources=(src,)))
    ref = _module_grad(model, src, inputs, score)
    torch.testing.assert_close(ours.values[src], ref, rtol=0, atol=1e-6)
    ent = gradient_graph_entropy(model, inputs, score, sources=(src,))[src]
    assert ent.shape == (2, 5, 32) and torch.isfinite(ent).all() and (ent >= 0).all()
    # masked positions have only zero-weight paths (attention prob exactly 0) ...
    mp = semiring_backward(model, inputs, score, SemiringConfig(sources=(src,))).values[src]
    # ... except through their own residual stream, which never reaches token 0's output.
    assert (mp[1, 3:] == 0).all() and (mp[0, 3:] != 0).any()


def test_multiple_sources_inputs_and_modules() -> None:
    class TwoIn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(2, 2)

        def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return self.b(torch.tanh(self.a(x))) * z

    torch.manual_seed(0)
    model = TwoIn().double()
    x, z = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    res = semiring_backward(model, {"x": x, "z": z}, 0, SemiringConfig("real"))
    xr, zr = x.clone().requires_grad_(), z.clone().requires_grad_()
    gx, gz = torch.autograd.grad(model(xr, zr)[:, 0].sum(), (xr, zr))
    torch.testing.assert_close(res.values["x"], gx)
    torch.testing.assert_close(res.values["z"], gz)
    res = semiring_backward(model, {"x": x, "z": z}, 0, SemiringConfig("real", sources=("a",)))
    assert res.values["a"].shape == (4, 2)


class _Cumsum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(self.lin(x), dim=-1)


def _hooks_left(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_unsupported_op_names_the_op_and_module_and_removes_hooks() -> None:
    model = _Cumsum()
    with pytest.raises(UnsupportedOpError, match=r"cumsum.*module ''|cumsum"):
        semiring_backward(model, torch.randn(2, 3), 0, SemiringConfig("entropy"))
    assert _hooks_left(model) == 0
    with pytest.raises(UnsupportedOpError, match="cumsum"):
        semiring_backward(model, torch.randn(2, 3), 0, SemiringConfig("real", sources=("lin",)))
    assert _hooks_left(model) == 0


def test_no_hook_remains_after_success() -> None:
    model = tiny_bert()
    ids = torch.randint(2, 40, (1, 4))
    semiring_backward(
        model, {"input_ids": ids}, 0, SemiringConfig(sources=("bert.embeddings.word_embeddings",))
    )
    assert _hooks_left(model) == 0


def test_config_and_source_errors() -> None:
    with pytest.raises(ValueError, match="did you mean 'max_product'"):
        SemiringConfig(semiring="max_prodct")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="granularity"):
        SemiringConfig(semiring="entropy", granularity="op")
    with pytest.raises(TypeError, match="tuple"):
        SemiringConfig(sources=["x"])  # type: ignore[arg-type]
    model = mlp64()
    with pytest.raises(CoordinateError, match="did you mean"):
        semiring_backward(model, torch.randn(1, 5).double(), 0, SemiringConfig(sources=("01",)))
    with pytest.raises(TargetError):
        semiring_backward(model, torch.randn(1, 5).double(), 7, SemiringConfig())
    bert = tiny_bert()
    with pytest.raises(ValueError, match="floating point"):
        semiring_backward(bert, {"input_ids": torch.ones(1, 3).long()}, 0,
                          SemiringConfig(sources=("input_ids",)))  # fmt: skip


def test_target_independent_of_sources_raises() -> None:
    class Const(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(x.shape[0], 2) + x.detach().sum()

    with pytest.raises(TargetError, match="does not depend"):
        semiring_backward(Const(), torch.randn(2, 3), 0, SemiringConfig())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_runs_on_the_inputs_device() -> None:
    model = mlp64().cuda()
    x = torch.randn(3, 5, dtype=torch.float64, device="cuda")
    for name in ("real", "max_product", "entropy"):
        res = semiring_backward(model, x, 1, SemiringConfig(semiring=name))
        assert res.values["input"].device.type == "cuda"
    cpu = semiring_backward(model.cpu(), x.cpu(), 1, SemiringConfig("entropy")).values["input"]
    torch.testing.assert_close(res.values["input"].cpu(), cpu)
