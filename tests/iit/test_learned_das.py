"""DAS recovers a planted subspace; training refuses an unfrozen model and caches sources."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from iit import Coordinate, Interventionable
from iit.das import DASBatch, DASConfig, SourceCache, check_frozen, train_das
from iit.errors import InterventionError
from iit.learned import BoundlessRotatedInterchange, LowRankRotatedInterchange, RotatedInterchange

K = 6  # values of each variable
D = 6  # hidden width


class Planted(nn.Module):
    """Inputs ``[batch, 3]`` of ints in ``[0, K)`` (variables A, B, C). The hidden state is
    ``U e(A) + V e(B) + W e(C)`` with ``e(v) = (cos, sin)(2 pi v / K)`` and orthonormal
    ``[U V W]``; the output reads A from the U plane only: ``logits_c = 8 <U^T h, e(c)>``."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64)).Q.float()
        self.register_buffer("basis", q)  # columns 0:2 = U, 2:4 = V, 4:6 = W
        angles = 2 * math.pi * torch.arange(K) / K
        self.register_buffer("codes", torch.stack([angles.cos(), angles.sin()], dim=1))  # [K, 2]
        self.hidden = nn.Identity()

    @property
    def planted(self) -> Tensor:
        return self.basis[:, :2]

    def forward(self, x: Tensor) -> Tensor:
        parts = [self.codes[x[:, i]] @ self.basis[:, 2 * i : 2 * i + 2].T for i in range(3)]
        h = self.hidden(sum(parts))  # [batch, D]
        return 8 * (h @ self.planted) @ self.codes.T  # [batch, K]


def _batches(n: int, size: int, seed: int) -> list[DASBatch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        base = torch.randint(0, K, (size, 3), generator=g)
        source = torch.randint(0, K, (size, 3), generator=g)
        out.append(DASBatch(base, [source], source[:, 0]))  # counterfactual label: A of the source
    return out


def _accuracy(net: Interventionable, iv: nn.Module, batches: list[DASBatch]) -> float:
    hits = total = 0
    with torch.no_grad():
        for b in batches:
            pred = net.intervene(b.base, [iv], b.sources).argmax(-1)
            hits += int((pred == b.labels).sum())
            total += len(b.labels)
    return hits / total


def _cos_principal_angles(a: Tensor, b: Tensor) -> Tensor:
    return torch.linalg.svdvals(a.T @ b)


@pytest.mark.parametrize("kind", ["full", "low_rank"])
def test_das_recovers_planted_subspace(kind: str) -> None:
    torch.manual_seed(0)
    model = Planted().requires_grad_(False)
    net = Interventionable(model)
    c = Coordinate("hidden")
    iv = RotatedInterchange(c, D, dims=(0, 2)) if kind == "full" else LowRankRotatedInterchange(c, D, 2)
    train = _batches(8, 64, seed=1)
    before = _accuracy(net, iv, _batches(4, 64, seed=2))
    losses = train_das(net, [iv], train, nn.functional.cross_entropy, DASConfig(epochs=40, lr=0.05))
    assert losses[-1] < losses[0] / 10
    acc = _accuracy(net, iv, _batches(4, 64, seed=2))
    assert before < 0.8 and acc >= 0.99
    w = iv.rotation.matrix().detach()[:, :2]
    cosines = _cos_principal_angles(w, model.planted)
    assert torch.all(cosines > 0.999), cosines  # principal angles ~ 0


def test_boundless_das_finds_a_small_subspace_holding_the_plane() -> None:
    torch.manual_seed(0)
    model = Planted().requires_grad_(False)
    net = Interventionable(model)
    iv = BoundlessRotatedInterchange(Coordinate("hidden"), D, boundary=0.5)
    train_das(
        net, [iv], _batches(8, 64, seed=1), nn.functional.cross_entropy,
        DASConfig(epochs=60, lr=0.05, boundary_lr=0.005, boundary_penalty=1.0),
    )
    assert float(iv.temperature) == pytest.approx(0.1)  # annealed to the end of the schedule
    assert _accuracy(net, iv, _batches(4, 64, seed=2)) >= 0.95
    mask = iv.mask().detach()
    kept = mask > 0.4
    assert 2 <= int(kept.sum()) < D  # not the trivial whole-space interchange
    cols = iv.rotation.matrix().detach()[:, kept]
    assert torch.all(_cos_principal_angles(cols, model.planted) > 0.99)


def test_training_refuses_a_model_that_requires_grad() -> None:
    net = Interventionable(Planted())
    nn.Module.register_parameter(net.model, "extra", nn.Parameter(torch.zeros(1)))
    with pytest.raises(InterventionError, match="requires_grad_\\(False\\)") as info:
        check_frozen(net)
    assert "extra" in str(info.value)
    iv = RotatedInterchange(Coordinate("hidden"), D, dims=(0, 2))
    with pytest.raises(InterventionError, match="frozen"):
        train_das(net, [iv], _batches(1, 4, 0), nn.functional.cross_entropy)


def test_source_activations_are_collected_once_across_epochs() -> None:
    model = Planted().requires_grad_(False)
    calls = [0]
    model.register_forward_pre_hook(lambda m, a: calls.__setitem__(0, calls[0] + 1))
    net = Interventionable(model)
    iv = RotatedInterchange(Coordinate("hidden"), D, dims=(0, 2))
    batches = _batches(3, 8, 0)
    train_das(net, [iv], batches, nn.functional.cross_entropy, DASConfig(epochs=4))
    assert calls[0] == 1 + 3 + 3 * 4  # one check probe, 3 source runs (first epoch), one base run per step
    calls[0] = 0
    train_das(net, [iv], batches, nn.functional.cross_entropy, DASConfig(epochs=4, cache_sources=False))
    assert calls[0] == 1 + 2 * 3 * 4
    cache = SourceCache(net, [iv])
    first = cache.sources(0, batches[0])
    assert cache.sources(0, batches[0]) is first and len(cache) == 1
    torch.testing.assert_close(first[0][iv.source_coordinate], net.collect(batches[0].sources[0], [iv.source_coordinate])[iv.source_coordinate])


def test_das_step_gradient_equals_hand_written_hooks_on_gpt2() -> None:
    from iit.das import das_step
    from iit.transformers import Tokens, TransformerCoordinate, TransformerInterventionable
    from tests.iit.transformers._models import tiny_model

    model = tiny_model("gpt2", head=True).requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    base = {"input_ids": torch.randint(2, 60, (4, 5), generator=g)}
    source = {"input_ids": torch.randint(2, 60, (4, 5), generator=g)}
    labels = torch.randint(0, 60, (4,), generator=g)
    c = TransformerCoordinate(1, "block_output", position=Tokens.last())
    iv = LowRankRotatedInterchange(c, 16, 3)
    w = iv.rotation.matrix().detach().clone().requires_grad_(True)

    def loss_fn(out: object, y: Tensor) -> Tensor:
        return nn.functional.cross_entropy(out.logits[:, -1], y)  # type: ignore[attr-defined]

    # hand-written: hooks on transformer.h.1, the last position, the same W as a leaf
    saved: list[Tensor] = []
    h = model.transformer.h[1].register_forward_hook(lambda m, a, o: saved.append(o[:, -1].detach()))
    try:
        model(**source)
    finally:
        h.remove()

    def patch(m: nn.Module, a: tuple, o: Tensor) -> Tensor:
        last = o[:, -1] + ((saved[0] - o[:, -1]) @ w) @ w.T
        return torch.cat([o[:, :-1], last[:, None]], dim=1)

    h = model.transformer.h[1].register_forward_hook(patch)
    try:
        want_loss = loss_fn(model(**base), labels)
    finally:
        h.remove()
    want_loss.backward()

    net = TransformerInterventionable(model)
    opt = torch.optim.SGD(iv.parameters(), lr=0.0)
    loss = das_step(net, [iv], DASBatch(base, [source], labels), loss_fn, opt)
    assert loss == pytest.approx(float(want_loss.detach()), abs=1e-6)
    # chain rule through the parametrisation: compare dL/dW via the materialised matrix
    w_ours = iv.rotation.matrix()
    (grad_orig,) = torch.autograd.grad(w_ours, iv.rotation.parametrizations.weight.original, w.grad)
    torch.testing.assert_close(iv.rotation.parametrizations.weight.original.grad, grad_orig, atol=1e-6, rtol=1e-5)
