"""TX-Ray: recording (hand counts), Hellinger (scipy), comparison, plots, Lightning callback."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from scipy.spatial.distance import euclidean
from torch import nn

from iit.attribution.txray import (
    NeuronDistributions,
    TXRayCallback,
    TXRayConfig,
    compare,
    hellinger_distance,
    plot_activation_mass,
    plot_hellinger_vs_length,
    plot_length_shift,
    plot_neuron_details,
    record_distributions,
)
from iit.errors import CoordinateError

# activation of token t at the 3 neurons is E[t]
E = torch.tensor(
    [
        [0.0, 0.0, 0.0],  # token 0: padding
        [0.9, 0.2, -0.5],  # token 1 -> neuron 0
        [0.1, 0.3, 0.8],  # token 2 -> neuron 2
        [0.4, 0.7, 0.6],  # token 3 -> neuron 1
    ]
)


class Lookup(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(4, 3)
        with torch.no_grad():
            self.emb.weight.copy_(E)
        self.head = nn.Linear(3, 2)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(input_ids).mean(1))


BATCHES = [
    {
        "input_ids": torch.tensor([[1, 2, 3], [1, 1, 0]]),
        "mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
    },
    {"input_ids": torch.tensor([[3, 3, 2]]), "mask": torch.tensor([[1, 1, 1]])},
]


def test_max1_counts_and_mass_equal_a_hand_count() -> None:
    config = TXRayConfig(module="emb", num_features=4, mask_key="mask")
    rec = record_distributions(Lookup(), BATCHES, config)
    # tokens counted: 1,2,3,1,1 | 3,3,2 -> token1 x3 to n0, token2 x2 to n2, token3 x3 to n1
    counts = torch.zeros(3, 4, dtype=torch.float64)
    counts[0, 1], counts[2, 2], counts[1, 3] = 3, 2, 3
    torch.testing.assert_close(rec.counts, counts)
    mass = torch.zeros(3, 4, dtype=torch.float64)
    mass[0, 1], mass[2, 2], mass[1, 3] = 3 * 0.9, 2 * 0.8, 3 * 0.7
    torch.testing.assert_close(rec.mass, mass)
    assert rec.length().tolist() == [1, 1, 1]
    torch.testing.assert_close(rec.activation_mass(), mass.sum(1) / mass.sum())


def test_all_mode_credits_every_positive_activation_and_padding_counts_without_mask() -> None:
    config = TXRayConfig(module="emb", num_features=4, mode="all")
    rec = record_distributions(Lookup(), BATCHES, config)
    occurrences = torch.tensor([1.0, 3, 2, 3], dtype=torch.float64)  # token 0 once (no mask)
    expected = (E.double().clamp_min(0) * occurrences[:, None]).T  # [neurons, features]
    torch.testing.assert_close(rec.mass, expected)
    torch.testing.assert_close(rec.counts, ((E > 0).double() * occurrences[:, None]).T)
    dist = rec.distributions()
    torch.testing.assert_close(dist.sum(1), torch.ones(3, dtype=torch.float64))


def test_hellinger_against_scipy_and_bounds() -> None:
    rng = np.random.default_rng(0)
    p = rng.random((5, 7))
    q = rng.random((5, 7))
    q[:, :2] = 0
    p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
    ours = hellinger_distance(torch.from_numpy(p), torch.from_numpy(q)).numpy()
    ref = [euclidean(np.sqrt(a), np.sqrt(b)) / np.sqrt(2) for a, b in zip(p, q)]
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    eye = torch.eye(3, dtype=torch.float64)
    assert hellinger_distance(eye, eye).tolist() == [0.0, 0.0, 0.0]
    torch.testing.assert_close(
        hellinger_distance(eye, eye.roll(1, 0)), torch.ones(3, dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="same shape"):
        hellinger_distance(eye, eye[:2])


def _dist(mass: list[list[float]]) -> NeuronDistributions:
    m = torch.tensor(mass, dtype=torch.float64)
    return NeuronDistributions(m, (m > 0).double(), "max1")


def test_compare_shared_neurons_lengths_and_ranking() -> None:
    a = _dist([[1, 1, 0, 0], [0, 0, 2, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    b = _dist([[1, 1, 0, 0], [0, 1, 1, 1], [0, 3, 0, 0], [1, 0, 0, 0]])
    comp = compare(a, b)
    assert comp.shared.tolist() == [True, True, True, False]
    assert comp.hellinger[0] == 0 and comp.hellinger[2] == pytest.approx(1.0)
    p, q = np.array([0, 0, 1, 0.0]), np.array([0, 1, 1, 1]) / 3
    assert comp.hellinger[1].item() == pytest.approx(euclidean(np.sqrt(p), np.sqrt(q)) / np.sqrt(2))
    assert torch.isnan(comp.hellinger[3])
    assert comp.hellinger_length.tolist() == [2, 3, 2, 1]
    assert comp.length_shift.tolist() == [0, 2, 0, 1]
    assert comp.ranked(2, "top") == [2, 1] and comp.ranked(1, "least") == [0]
    with pytest.raises(ValueError, match="shape"):
        compare(a, _dist([[1.0]]))


def test_plots_write_html(tmp_path) -> None:
    a = _dist([[1, 1, 0, 0], [0, 0, 2, 0], [1, 0, 0, 1]])
    b = _dist([[1, 2, 0, 0], [0, 1, 1, 1], [0, 3, 0, 0]])
    comp = compare(a, b)
    figs = {
        "overview": plot_hellinger_vs_length(comp),
        "shift": plot_length_shift(comp),
        "mass": plot_activation_mass({"before": a, "after": b}),
        "top": plot_neuron_details(a, b, comp, k=2, which="top", feature_names=list("wxyz")),
        "least": plot_neuron_details(a, b, comp, k=1, which="least"),
    }
    assert len(figs["overview"].data[0].x) == 3
    assert len(figs["top"].data) == 4  # 2 neurons x (a, b)
    assert figs["top"].layout.annotations[0].text.startswith("neuron 2")
    for name, fig in figs.items():
        path = tmp_path / f"{name}.html"
        fig.write_html(path, include_plotlyjs=False)
        assert path.stat().st_size > 1000


def test_errors_and_hook_removal() -> None:
    model = Lookup()
    with pytest.raises(CoordinateError, match="did you mean"):
        record_distributions(model, BATCHES, TXRayConfig(module="embb", num_features=4))
    with pytest.raises(ValueError, match="feature ids"):
        record_distributions(model, BATCHES, TXRayConfig(module="emb", num_features=3))
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="expected"):
        record_distributions(model, BATCHES, TXRayConfig(module="head", num_features=4))
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="mode"):
        TXRayConfig(module="emb", num_features=4, mode="max")  # type: ignore[arg-type]


class _LitLookup(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(4, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.emb(input_ids)).mean(1))

    def training_step(self, batch, _idx):
        return nn.functional.cross_entropy(self(batch["input_ids"]), batch["label"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def test_callback_records_at_the_chosen_epochs(tmp_path) -> None:
    ids = torch.randint(1, 4, (16, 3), generator=torch.Generator().manual_seed(0))
    rows = [{"input_ids": ids[i], "label": (ids[i, 0] == 1).long()} for i in range(16)]
    data = torch.utils.data.DataLoader(rows, batch_size=4)
    config = TXRayConfig(module="emb", num_features=4)
    cb = TXRayCallback(data, config, epochs=(0, 2), at_start=True)
    model = _LitLookup()
    trainer = pl.Trainer(
        max_epochs=3, callbacks=[cb], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=data)
    assert sorted(cb.records) == [-1, 0, 2]
    final = record_distributions(model, data, config)
    torch.testing.assert_close(cb.records[2].mass, final.mass)
    assert not torch.equal(cb.records[-1].mass, cb.records[2].mass)
    assert all(not m._forward_hooks for m in model.modules())
