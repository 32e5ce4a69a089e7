"""MIB causal-variable-track export: round trip, and the files load the way the track's harness
loads them (an orthogonally parametrised pyvene LowRankRotateLayer holding the basis)."""

from __future__ import annotations

import json

import pytest
import torch

from iit.errors import InterventionError
from iit.search import DAS, PCA, FitSettings, SearchSettings, neurons, search
from iit.search.mib import export_mib, read_mib, units_by_layer

SETTINGS = SearchSettings(fit=FitSettings(epochs=4, batch_size=64, lr=0.05), seed=2)


@pytest.mark.parametrize("featurizer", ["das", "pca", "neurons"])
def test_round_trip_reproduces_each_layers_intervention(problem, splits, places, tmp_path, featurizer) -> None:
    method = {"das": DAS(), "pca": PCA(), "neurons": neurons()}[featurizer]
    result = search(problem, splits, places, [method], [1, 2], SETTINGS, progress=False)
    folder = export_mib(result, tmp_path, "sum", "HandcraftedSum", featurizer=featurizer)
    assert folder.name == "sum_HandcraftedSum_S"
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(f"ResidualStream(Layer-{i},Token-all){s}" for i in (0, 1) for s in ("_featurizer", "_inverse_featurizer", "_indices"))
    units = units_by_layer(read_mib(folder))
    g = torch.Generator().manual_seed(0)
    b, s = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    for layer in (0, 1):
        rows = result.table[result.table["layer"] == layer]
        best = rows.sort_values(["iia_val", "size"], ascending=[False, True]).iloc[0]
        iv = result.interventions[f"S__{best['place']}__{featurizer}__k{best['size']}"]
        torch.testing.assert_close(units[layer].interchange(b, s), iv(b, s), atol=1e-5, rtol=1e-5)
        first_line = (folder / f"{units[layer].unit}_indices").read_text().splitlines()[0]
        assert isinstance(json.loads(first_line), list)


def test_files_load_like_the_track_harness(problem, splits, places, tmp_path) -> None:
    pv = pytest.importorskip("pyvene")
    result = search(problem, splits, places[:1], [DAS()], [2], SETTINGS, progress=False)
    folder = export_mib(result, tmp_path, "sum", "HandcraftedSum")
    data = torch.load(next(folder.glob("*_featurizer")), weights_only=True)
    info = data["model_info"]
    assert info["featurizer_class"] == "SubspaceFeaturizerModule" and info["n_features"] == 2
    w = info["additional_config"]["rotation_matrix"]
    layer = pv.models.layers.LowRankRotateLayer(w.shape[0], w.shape[1], init_orth=False)
    layer.weight.data.copy_(w)
    layer = torch.nn.utils.parametrizations.orthogonal(layer)
    x = torch.randn(5, 4)
    iv = result.interventions["S__l0__das__k2"]
    torch.testing.assert_close(x @ layer.weight, iv.featurizer.encode(x), atol=1e-5, rtol=1e-5)


def test_export_rejects_what_the_track_cannot_load(problem, splits, places, tmp_path) -> None:
    result = search(problem, splits, places[:1], [DAS()], [1], SETTINGS, progress=False)
    result.interventions.clear()  # type: ignore[attr-defined]
    with pytest.raises(InterventionError, match="no exportable"):
        export_mib(result, tmp_path, "t", "m")
