"""The max-product kernels: every backend (and chunk size) == brute force, bit for bit, and the
custom op that compiled walks call."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from iit.semiring import tropical
from iit.semiring.kernels import max_product_matmul, signed_products

g = torch.Generator().manual_seed(0)


def _rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=g)


def _brute_matmul(mx: torch.Tensor, mn: torch.Tensor, w: torch.Tensor):
    """Signed max / min over j of every path product, by explicit loops."""
    *batch, i_n, j_n = mx.shape
    k_n = w.shape[-1]
    hi = torch.full((*batch, i_n, k_n), -torch.inf, dtype=w.dtype)
    lo = torch.full((*batch, i_n, k_n), torch.inf, dtype=w.dtype)
    for b in range(batch[0] if batch else 1):
        m1, m0 = (mx[b], mn[b]) if batch else (mx, mn)
        wb = w[b] if w.dim() == 3 else w
        for i in range(i_n):
            for k in range(k_n):
                for j in range(j_n):
                    if m1[i, j] == -torch.inf:  # unreached: no path
                        continue
                    a, c = float(wb[j, k] * m1[i, j]), float(wb[j, k] * m0[i, j])
                    h, low = (hi[b, i, k], lo[b, i, k]) if batch else (hi[i, k], lo[i, k])
                    (hi[b] if batch else hi)[i, k] = max(float(h), a, c)
                    (lo[b] if batch else lo)[i, k] = min(float(low), a, c)
    return hi, lo


@pytest.mark.parametrize("batched", [False, True])
def test_max_product_matmul_equals_brute_force(batched: bool, monkeypatch) -> None:
    shape = (2, 4, 5) if batched else (4, 5)
    mx = _rand(*shape)
    mn = mx - _rand(*shape).abs()
    w = _rand(*(shape[:-2] + (5, 3)))
    mx[..., 1, 2], mn[..., 1, 2] = -torch.inf, torch.inf  # an unreached element
    w[..., 2, 0] = 0.0  # a zero edge into it: no path
    mx[..., 3, :], mn[..., 3, :] = -torch.inf, torch.inf  # a row with no path at all
    ref = _brute_matmul(mx, mn, w)
    for ours, theirs in zip(max_product_matmul(mx, mn, w), ref):  # the default backend
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    for chunk in (1 << 20, 8):  # the torch ops: one shot, and one row per chunk
        monkeypatch.setattr(tropical, "_CHUNK_ELEMENTS", chunk)
        for ours, theirs in zip(
            tropical.signed_max_product_matmul(mx, mn, w, backend="torch"), ref
        ):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    reached = (mx[..., :3, :], mn[..., :3, :])
    mx2 = reached[0].clone()
    mx2[..., 1, 2] = 0.5
    mn2 = reached[1].clone()
    mn2[..., 1, 2] = -0.5
    for ours, theirs in zip(max_product_matmul(mx2, mn2, w), _brute_matmul(mx2, mn2, w)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)  # the all-reached fast path


def test_an_infinite_weight_on_a_zero_state_is_no_path() -> None:
    w = torch.tensor([[torch.inf, 2.0, -1.0]], dtype=torch.float64)  # [1, 3]
    mx = torch.tensor([[0.0, 3.0, 1.0]], dtype=torch.float64)
    mn = torch.tensor([[0.0, 3.0, -5.0]], dtype=torch.float64)
    hi, lo = max_product_matmul(mx, mn, w.T)  # state [1, 3] (x) weights [3, 1]
    # paths: inf·0 (no path), 2·3 = 6, -1·{1, -5} -> {-1, 5}
    assert hi.item() == 6.0 and lo.item() == -1.0
    same, _ = signed_products(w, mx, mn)  # nothing reduced: elementwise products
    assert same.shape == (1, 3) and same[0, 0] == -torch.inf


def _brute_signed(w: torch.Tensor, mx: torch.Tensor, mn: torch.Tensor):
    """Element by element: the extremes of ``w·p`` over the path products ``p ∈ {mx, mn}``
    (none where unreached), ``0·∞`` no path."""
    hi, lo = torch.empty_like(mx), torch.empty_like(mx)
    for i in range(mx.numel()):
        wi, a, b = w.reshape(-1)[i].item(), mx.reshape(-1)[i].item(), mn.reshape(-1)[i].item()
        products = [] if a == -torch.inf and b == torch.inf else [wi * a, wi * b]
        products = [p for p in products if p == p]  # NaN: 0·inf
        hi.reshape(-1)[i] = max(products, default=-torch.inf)
        lo.reshape(-1)[i] = min(products, default=torch.inf)
    return hi, lo


@pytest.mark.parametrize("unreached", [False, True])
def test_signed_products_fast_and_branch_free_forms_equal_brute_force(unreached: bool) -> None:
    """The fast form (taken when every product is finite) and the branch-free one (recorded
    into compiled walks) both equal an element-by-element reference."""
    a, b = _rand(4, 6), _rand(4, 6)
    mx, mn = torch.maximum(a, b), torch.minimum(a, b)
    w = _rand(4, 6)
    w[0, :3] = 0.0
    if unreached:
        mx[1:3, 2:] = -torch.inf
        mn[1:3, 2:] = torch.inf
        w[1, 4] = 0.0
    want = _brute_signed(w, mx, mn)
    for branch_free in (False, True):
        got = signed_products(w, mx, mn, branch_free=branch_free)
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_custom_op_equals_the_function_and_has_a_shape_rule() -> None:
    """``torch.ops.iit.signed_max_product_matmul`` (what compiled walks record) returns the
    kernel's result, and its fake implementation the broadcast output shape and dtype."""
    mx = _rand(3, 4, 5)
    mn = mx - _rand(3, 4, 5).abs()
    w = _rand(5, 2)
    want = max_product_matmul(mx, mn, w)
    got = max_product_matmul(mx, mn, w, compiled=True)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    with FakeTensorMode():
        hi, lo = torch.ops.iit.signed_max_product_matmul(
            torch.empty(2, 1, 4, 5),
            torch.empty(2, 1, 4, 5),
            torch.empty(3, 5, 2, dtype=torch.float64),
        )
    assert hi.shape == lo.shape == (2, 3, 4, 2) and hi.dtype == torch.float64
