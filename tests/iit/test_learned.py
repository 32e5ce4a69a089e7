"""Learned interventions against slow explicit references (rotate, swap, rotate back)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from iit import Coordinate
from iit.errors import InterventionError, InterventionShapeError
from iit.learned import (
    BoundlessRotatedInterchange,
    LowRankRotatedInterchange,
    RotatedInterchange,
    Rotation,
    TemperatureSchedule,
)

C = Coordinate("hidden")


def _reference_das(b: Tensor, s: Tensor, r: Tensor, mask: list[float]) -> Tensor:
    """R^T((1 - m) * R h_b + m * R h_s), one vector at a time, in float64 (row convention)."""
    out = torch.empty_like(b, dtype=torch.float64)
    r = r.double()
    for i in range(b.shape[0]):
        for t in range(b.shape[1]):
            rb = b[i, t].double() @ r
            rs = s[i, t].double() @ r
            mixed = torch.stack([(1 - mask[j]) * rb[j] + mask[j] * rs[j] for j in range(len(mask))])
            out[i, t] = mixed @ r.T
    return out


def _pair(d: int = 6, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 2, d, generator=g).to(dtype), torch.randn(3, 2, d, generator=g).to(dtype)


def test_rotated_interchange_matches_rotate_swap_rotate_back() -> None:
    b, s = _pair()
    iv = RotatedInterchange(C, 6, dims=(2, 5))
    r = iv.rotation.matrix().detach()
    torch.testing.assert_close(r @ r.T, torch.eye(6), atol=1e-5, rtol=0)
    want = _reference_das(b, s, r, [0, 0, 1, 1, 1, 0])
    torch.testing.assert_close(iv(b, s).double(), want, atol=1e-5, rtol=1e-5)


def test_shared_rotation_with_disjoint_ranges() -> None:
    b, s = _pair()
    rot = Rotation(6, generator=torch.Generator().manual_seed(1))
    first, second = RotatedInterchange(C, rot, dims=(0, 2)), RotatedInterchange(C, rot, dims=(2, 4))
    both = nn.ModuleList([first, second])
    assert sum(p.numel() for p in both.parameters()) == 36  # one rotation
    r = rot.matrix().detach()
    torch.testing.assert_close(
        second(first(b, s), s).double(), _reference_das(b, s, r, [1, 1, 1, 1, 0, 0]), atol=1e-5, rtol=1e-5
    )


def test_low_rank_matches_projection_reference() -> None:
    b, s = _pair()
    iv = LowRankRotatedInterchange(C, 6, 2)
    w = iv.rotation.matrix().detach()
    torch.testing.assert_close(w.T @ w, torch.eye(2), atol=1e-5, rtol=0)
    # the same map as a full rotation whose first two columns are w
    full = torch.linalg.qr(torch.cat([w, torch.randn(6, 4)], dim=1)).Q
    full[:, :2] = w
    torch.testing.assert_close(iv(b, s).double(), _reference_das(b, s, full, [1, 1, 0, 0, 0, 0]), atol=1e-5, rtol=1e-5)


def test_boundless_matches_sigmoid_mask_reference_and_schedule() -> None:
    b, s = _pair()
    iv = BoundlessRotatedInterchange(C, 6, boundary=0.4, temperature=0.7)
    r = iv.rotation.matrix().detach()
    mask = [1 / (1 + math.exp(-j / 0.7)) / (1 + math.exp(-(0.4 * 6 - j) / 0.7)) for j in range(6)]
    torch.testing.assert_close(iv(b, s).double(), _reference_das(b, s, r, mask), atol=1e-5, rtol=1e-5)
    out = iv(b, s).sum()
    out.backward()
    assert iv.boundary.grad is not None and iv.boundary.grad.abs() > 0
    sched = TemperatureSchedule(steps=5, start=50.0, end=0.1)
    assert [round(sched.value(i), 4) for i in range(5)] == [50.0, 37.525, 25.05, 12.575, 0.1]
    sched.apply([iv], 4)
    assert float(iv.temperature) == pytest.approx(0.1)
    with pytest.raises(InterventionError, match="positive"):
        TemperatureSchedule(steps=3, end=0.0)


def test_gradcheck_float64_through_the_rotation() -> None:
    b, s = _pair(4, torch.float64)
    b.requires_grad_(True)
    s.requires_grad_(True)
    iv = RotatedInterchange(C, Rotation(4, dtype=torch.float64), dims=(1, 3))
    name = "rotation.parametrizations.weight.original"
    original = dict(iv.named_parameters())[name].detach().clone().requires_grad_(True)

    def f(orig: Tensor, base: Tensor, source: Tensor) -> Tensor:
        return torch.func.functional_call(iv, {name: orig}, (base, source))

    assert torch.autograd.gradcheck(f, (original, b, s))
    low = LowRankRotatedInterchange(C, Rotation(4, 2, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda base, source: low(base, source), (b, s))


def test_matrix_materialised_once_per_forward() -> None:
    iv = RotatedInterchange(C, 6, dims=(0, 3))
    calls = [0]
    param = iv.rotation.parametrizations.weight[0]
    handle = param.register_forward_hook(lambda m, a, o: calls.__setitem__(0, calls[0] + 1))
    try:
        b, s = _pair()
        iv(b, s).sum().backward()
    finally:
        handle.remove()
    assert calls[0] == 1


def test_low_precision_computes_in_float32() -> None:
    b, s = _pair()
    iv = RotatedInterchange(C, 6, dims=(0, 3))
    want = iv(b, s)
    got = iv(b.bfloat16(), s.bfloat16())
    assert got.dtype == torch.bfloat16
    # error is that of rounding inputs / outputs to bf16, not of a bf16 matmul chain
    ref_from_rounded = iv(b.bfloat16().float(), s.bfloat16().float()).bfloat16()
    assert torch.equal(got, ref_from_rounded)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = iv(b, s)
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, want)


def test_bad_shapes_and_arguments() -> None:
    iv = RotatedInterchange(C, 6, dims=(0, 3))
    with pytest.raises(InterventionShapeError, match="d=6"):
        iv(torch.zeros(2, 5), torch.zeros(2, 5))
    with pytest.raises(InterventionError, match="dims"):
        RotatedInterchange(C, 6, dims=(4, 8))
    with pytest.raises(InterventionError, match="square"):
        RotatedInterchange(C, Rotation(6, 2), dims=(0, 1))
    with pytest.raises(InterventionError, match="needs k"):
        LowRankRotatedInterchange(C, 6)


def test_no_hook_remains_after_success_or_error() -> None:
    from iit import Interventionable

    model = nn.Sequential(nn.Linear(4, 6), nn.Identity(), nn.Linear(6, 2))
    net = Interventionable(model)
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    good = RotatedInterchange(Coordinate("1"), 6, dims=(0, 2))
    net.intervene(x, [good], [y]).sum().backward()
    assert good.rotation.parametrizations.weight.original.grad is not None
    bad = RotatedInterchange(Coordinate("0", io="input"), 6, dims=(0, 2))  # slot has width 4
    with pytest.raises(InterventionShapeError, match="d=6"):
        net.intervene(x, [bad], [y])
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
