"""DAS on the equality MLP: alignment structure, the base network cache, the one-neuron baseline
against a brute-force reference, an identity rotation against the identity-basis alignment, and
the table / heatmap."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from iit.learned import RotatedInterchange
from iit.training import CounterfactualDataModule, IITModule, evaluate_alignment
from tasks.das_equality import (
    BaseNetwork,
    DASEquality,
    SweepRow,
    behaviour_trained_network,
    format_sweep,
    localist_baseline,
    plot_heatmap,
)

BASE = BaseNetwork(epochs=1, train_size=2_048, batch_size=128, train_entities=500, test_entities=100)


@pytest.fixture(scope="module")
def setup() -> tuple[IITModule, CounterfactualDataModule]:
    task = DASEquality(layer=0, k=4, base=BASE)
    module = IITModule(task)
    data = CounterfactualDataModule(task, train_size=64, val_size=512, batch_size=64, seed=3)
    data.setup("fit")
    return module, data


def test_default_alignment_shares_one_rotation() -> None:
    task = DASEquality(layer=2, k=3, base=BASE)
    alignments = task.alignments()
    wx, yz = alignments["default"]["WX"], alignments["default"]["YZ"]
    assert isinstance(wx, RotatedInterchange) and isinstance(yz, RotatedInterchange)
    assert wx.rotation is yz.rotation and (wx.dims, yz.dims) == ((0, 3), (3, 6))
    assert wx.coordinate.module == "layers.2"
    assert alignments["identity"]["YZ"].module == "layers.2"


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match=r"layer must be in \[0, 3\)"):
        DASEquality(layer=3, base=BASE)
    with pytest.raises(ValueError, match=r"k must be in \[1, 8\]"):
        DASEquality(k=9, base=BASE)


def test_base_network_is_trained_once_and_copied() -> None:
    first, second = DASEquality(base=BASE).build_network(), DASEquality(base=BASE).build_network()
    cached, accuracy = behaviour_trained_network(BASE)
    assert first is not cached and second is not first
    for a, b in zip(first.parameters(), cached.parameters()):
        assert torch.equal(a, b)
    with torch.no_grad():
        next(first.parameters()).add_(1.0)
    assert not torch.equal(next(first.parameters()), next(cached.parameters()))
    assert 0.0 <= accuracy <= 1.0  # the trained figure is checked by the slow acceptance test


def _brute_force_neuron_iia(module: IITModule, data: CounterfactualDataModule, variable: str, neuron: int) -> float:
    """IIA of interchanging one neuron of layers.0 for ``variable``, by a hand-written forward."""
    batch = data.val_data
    model, net = module.causal_model, module.network.model
    base, source = module.task.encode_inputs(batch.base), module.task.encode_inputs(batch.sources[0])
    with torch.no_grad():
        h = net.layers[0](base).clone()
        h[:, neuron] = net.layers[0](source)[:, neuron]
        for layer in net.layers[1:]:
            h = layer(h)
        predicted = net.head(h).argmax(-1)
    setting = {v: model.run(batch.sources[0])[v] for v in (variable,)}
    label = model.do(batch.base, setting)["O"].long()
    return float((predicted == label).float().mean())


def test_localist_baseline_matches_brute_force(setup: tuple[IITModule, CounterfactualDataModule]) -> None:
    module, data = setup
    row = localist_baseline(module, data, layer=0)
    for variable in ("WX", "YZ"):
        scores = [_brute_force_neuron_iia(module, data, variable, i) for i in range(16)]
        best = max(range(16), key=scores.__getitem__)
        assert row.iia[variable] == pytest.approx(scores[best], abs=1e-6)
        assert f"{variable}: neuron {best}" in row.detail
        low, high = row.interval[variable]
        assert low < row.iia[variable] < high


def test_identity_rotation_equals_identity_basis(setup: tuple[IITModule, CounterfactualDataModule]) -> None:
    module, data = setup
    rotation = module.alignment.interventions("WX")[0].rotation
    with torch.no_grad():
        rotation.weight = torch.eye(16)
    torch.testing.assert_close(rotation.matrix(), torch.eye(16))
    das, identity = evaluate_alignment(module, data), evaluate_alignment(module, data, "identity")
    for key in ("iia/WX", "iia/YZ", "task_acc"):
        assert das[key] == identity[key]


def test_table_and_heatmap(tmp_path: Path) -> None:
    rows = [
        SweepRow("DAS", layer, k, {"WX": 0.9, "YZ": 0.8}, {"WX": (0.85, 0.94), "YZ": (0.75, 0.84)}, seconds=1.5)
        for layer in (0, 1)
        for k in (2, 4)
    ]
    rows.append(SweepRow("one neuron (best)", 0, 1, {"WX": 0.6, "YZ": 0.55}, {"WX": (0.5, 0.7), "YZ": (0.5, 0.6)},
                         "WX: neuron 3, YZ: neuron 7"))
    table = format_sweep(rows, 0.99)
    assert "| DAS | 1 | 4 | 0.900 [0.850, 0.940] | 0.800 [0.750, 0.840] | 0.850 | trained 1.5 s |" in table
    assert "| one neuron (best) | 0 | 1 | 0.600 [0.500, 0.700] |" in table
    assert "task accuracy 0.990" in table
    path = plot_heatmap(rows, tmp_path / "sub" / "heat.png")
    assert path.exists() and path.stat().st_size > 1_000


def test_sweep_settings_are_checked() -> None:
    from tasks.das_equality import SweepSettings

    with pytest.raises(ValueError, match="at least one layer and one k"):
        SweepSettings(ks=())
    with pytest.raises(ValueError, match="must be positive"):
        SweepSettings(lr=0.0)
