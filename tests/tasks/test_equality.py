"""Hierarchical equality on unseen entities: pools, samplers, pairs, and the handcrafted network
of reference §2.1 (IIA exactly 1 under the published alignment, below 1 when swapped)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from iit.training import CounterfactualDataModule, IITModule, evaluate_alignment
from tasks.equality import HierarchicalEqualityMLP
from tasks.networks import VectorMLP


def _rows_in(vectors: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    return (vectors.unsqueeze(1) == pool.unsqueeze(0)).all(-1).any(1)


def test_pools_are_disjoint_and_samplers_use_them() -> None:
    task = HierarchicalEqualityMLP(train_entities=200, test_entities=50)
    train, test = task.pools()
    assert task.pools() is task.pools()  # cached
    assert (train.size, test.size) == (200, 50)
    assert not _rows_in(test.vectors, train.vectors).any()
    model = task.causal_model()
    g = torch.Generator().manual_seed(0)
    for sampler, pool, other in ((task.train_sampler(model), train, test), (task.eval_sampler(model), test, train)):
        values = sampler(500, g)
        for k in "WXYZ":
            assert _rows_in(values[k], pool.vectors).all()
            assert not _rows_in(values[k], other.vectors).any()
        # the four patterns are balanced
        out = model.run(values)
        pattern = out["WX"].long() * 2 + out["YZ"].long()
        counts = torch.bincount(pattern, minlength=4)
        assert counts.min() > 90


def test_pairs_intervene_on_wx_yz_or_both() -> None:
    task = HierarchicalEqualityMLP(train_entities=200, test_entities=50)
    data = CounterfactualDataModule(task, train_size=3_000, val_size=64, batch_size=64)
    data.setup("fit")
    batch = data.train_data
    assert batch.variables == ("WX", "YZ")
    kinds = batch.intervened.long() @ torch.tensor([1, 2])  # 1: WX, 2: YZ, 3: both
    counts = torch.bincount(kinds, minlength=4)
    assert counts[0] == 0 and all(800 < int(c) < 1_200 for c in counts[1:])


def test_bad_hidden_width() -> None:
    with pytest.raises(ValueError, match="hidden must be even"):
        HierarchicalEqualityMLP(hidden=7)


def _handcrafted(eps: float) -> nn.Module:
    """Reference §2.1's handcrafted MLP for emb_dim 2, hidden 8, 3 layers.

    layers.0: ReLU(w-x), ReLU(x-w) per coordinate in units 0..3, the same for y, z in 4..7 (so
    WX lives in [0, 4) and YZ in [4, 8)); layers.1: a = |w-x|/eps and a - 1, b likewise; layers.2:
    ReLU(s_a - s_b), ReLU(s_b - s_a) with s = min(1, .) the "different" indicator; the head says
    True (class 1) when both are 0.
    """
    net = VectorMLP(8, 8, 3, 2)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        w0 = net.layers[0][0].weight  # [8, 8]; inputs W(0,1) X(2,3) Y(4,5) Z(6,7)
        for pair, (first, second) in enumerate(((0, 2), (4, 6))):
            for c in range(2):
                w0[4 * pair + c, first + c], w0[4 * pair + c, second + c] = 1.0, -1.0
                w0[4 * pair + 2 + c, first + c], w0[4 * pair + 2 + c, second + c] = -1.0, 1.0
        w1, b1 = net.layers[1][0].weight, net.layers[1][0].bias
        for pair in range(2):
            w1[2 * pair, 4 * pair : 4 * pair + 4] = 1.0 / eps
            w1[2 * pair + 1, 4 * pair : 4 * pair + 4] = 1.0 / eps
            b1[2 * pair + 1] = -1.0
        w2 = net.layers[2][0].weight  # s_a = u0 - u1, s_b = u2 - u3
        w2[0] = torch.tensor([1.0, -1.0, -1.0, 1.0, 0, 0, 0, 0])
        w2[1] = -w2[0]
        net.head.weight[1, :2] = -2.0
        net.head.bias[1] = 1.0
    return net


def test_handcrafted_network_has_iia_one_under_the_published_alignment() -> None:
    task = HierarchicalEqualityMLP(train_entities=200, test_entities=50)
    vectors = torch.cat([p.vectors for p in task.pools()])
    distance = (vectors.unsqueeze(0) - vectors.unsqueeze(1)).abs().sum(-1)
    eps = float(distance[distance > 0].min()) / 2
    module = IITModule(task, network=_handcrafted(eps))
    data = CounterfactualDataModule(task, train_size=64, val_size=2_048, batch_size=64)
    result = evaluate_alignment(module, data)
    assert result["task_acc"] == 1.0
    assert result["iia"] == result["iia/WX"] == result["iia/YZ"] == 1.0
    swapped = evaluate_alignment(module, data, "swapped")
    assert swapped["task_acc"] == 1.0 and max(swapped["iia/WX"], swapped["iia/YZ"]) < 0.8
