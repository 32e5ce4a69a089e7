"""The heavy semiring kernels: Jacobians against autograd, chunked == unchunked, and the
``torch.compile`` path against the eager one on a tiny BERT."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from iit.attribution.semiring import SemiringConfig, kernels, semiring_backward
from iit.attribution.semiring.kernels import (
    dense_jacobian,
    dense_semiring_vjp,
    max_product_reduce,
)
from tests.attribution.conftest import tiny_bert

g = torch.Generator().manual_seed(0)


def _rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=g)


@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "layer_norm"])
def test_dense_jacobian_is_the_transposed_autograd_jacobian(kind: str) -> None:
    x, gamma = _rand(3, 5), _rand(5)
    if kind == "layer_norm":
        fn = lambda r: F.layer_norm(r, (5,), gamma, None, 1e-5)  # noqa: E731
        mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        rstd = torch.rsqrt(var + 1e-5)
        tensors = ((x - mean) * rstd, rstd, gamma)
    else:
        fn = (lambda r: r.softmax(-1)) if kind == "softmax" else (lambda r: r.log_softmax(-1))
        tensors = (x.softmax(-1),)
    jt = dense_jacobian(kind, *tensors)  # [rows, j, i]
    for r in range(3):
        ref = torch.autograd.functional.jacobian(fn, x[r])  # [i, j]
        torch.testing.assert_close(jt[r], ref.t(), rtol=0, atol=1e-12)


def test_chunked_eager_kernels_equal_one_shot(monkeypatch: pytest.MonkeyPatch) -> None:
    w, mx = _rand(1, 6, 7), _rand(4, 1, 7)
    mn = mx - _rand(4, 1, 7).abs()
    mx[0, 0, 2], mn[0, 0, 2] = -torch.inf, torch.inf  # an unreached element
    w[0, 1, 2] = 0.0  # a zero edge into it: no path
    one_shot = max_product_reduce(w, mx, mn, (2,))
    xh, rstd, gamma = _rand(6, 5), _rand(6, 1).abs(), _rand(5)
    state = (_rand(6, 5).abs(), _rand(6, 5).abs())
    dense = dense_semiring_vjp("entropy", "layer_norm", (xh, rstd, gamma), state)
    monkeypatch.setattr(kernels, "_CHUNK_ELEMENTS", 8)  # forces one row per chunk
    for a, b in zip(max_product_reduce(w, mx, mn, (2,)), one_shot):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(dense_semiring_vjp("entropy", "layer_norm", (xh, rstd, gamma), state), dense):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-15)
    # brute force: signed max / min over the reduced dim of the reached elements only
    reached = mx.isfinite().expand_as(w * mx)
    inf = torch.inf
    prod_hi = torch.where(reached, torch.maximum(w * mx, w * mn), -inf)
    prod_lo = torch.where(reached, torch.minimum(w * mx, w * mn), inf)
    torch.testing.assert_close(one_shot[0], prod_hi.amax(2), rtol=0, atol=0)
    torch.testing.assert_close(one_shot[1], prod_lo.amin(2), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("semiring", "granularity"),
    [("real", "scalar"), ("max_product", "scalar"), ("max_product", "op"), ("entropy", "scalar")],
)
def test_compiled_kernels_equal_eager_on_tiny_bert(semiring: str, granularity: str) -> None:
    model = tiny_bert(seed=4)
    ids = torch.randint(2, 40, (2, 6), generator=torch.Generator().manual_seed(5))
    src = "bert.embeddings.word_embeddings"
    results = {}
    for compiled in (False, True):
        config = SemiringConfig(
            semiring, granularity=granularity, sources=(src,), record_path=False, compile=compiled
        )
        results[compiled] = semiring_backward(model, {"input_ids": ids}, 1, config).values[src]
    eager, fused = results[False], results[True]
    scale = eager.abs().max()
    torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-6 * float(scale))


def test_an_infinite_weight_on_a_zero_state_is_no_path() -> None:
    w = torch.tensor([[torch.inf, 2.0, -1.0]], dtype=torch.float64)  # [1, 3]
    mx = torch.tensor([[0.0, 3.0, 1.0]], dtype=torch.float64)
    mn = torch.tensor([[0.0, 3.0, -5.0]], dtype=torch.float64)
    hi, lo = max_product_reduce(w, mx, mn, (1,))
    # paths: inf·0 (no path), 2·3 = 6, -1·{1, -5} -> {-1, 5}
    assert hi.item() == 6.0 and lo.item() == -1.0
    same, _ = max_product_reduce(w, mx, mn, ())  # nothing reduced: elementwise products
    assert same.shape == (1, 3) and same[0, 0] == -torch.inf


@pytest.mark.parametrize("semiring", ["real", "max_product_op"])
@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "layer_norm"])
def test_closed_form_dense_vjps_equal_the_dense_jacobian(semiring: str, kind: str) -> None:
    from iit.attribution.semiring.kernels import _dense_vjp, _structured_vjp

    rows, d = 7, 9
    x = _rand(rows, d)
    x[0, 3] = x[0, 0]  # a tie in the sort
    if kind == "layer_norm":
        x[1] = torch.linspace(-2, 2, d, dtype=torch.float64)  # x̂ = 0 at the middle element
        mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        rstd = torch.rsqrt(var + 1e-5)
        tensors: tuple[torch.Tensor, ...] = ((x - mean) * rstd, rstd, _rand(d))  # gamma < 0 too
    else:
        tensors = (x.softmax(-1),)
    state = (_rand(rows, d).abs() if semiring == "max_product_op" else _rand(rows, d),)
    fast = _structured_vjp(semiring, kind, tensors, state)
    assert fast is not None
    torch.testing.assert_close(fast[0], _dense_vjp(semiring, kind, tensors, state)[0])
    if kind == "layer_norm":  # and without an affine weight
        no_affine = (tensors[0], tensors[1], torch.ones(1, dtype=torch.float64))
        torch.testing.assert_close(
            _structured_vjp(semiring, kind, no_affine, state)[0],
            _dense_vjp(semiring, kind, no_affine, state)[0],
        )
