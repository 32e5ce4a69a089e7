"""``python -m iit.search`` on the equality task's spec (quick settings)."""

from __future__ import annotations

import pandas as pd
import pytest

from iit.search.cli import load_spec, main

pytestmark = pytest.mark.slow


def test_command_writes_table_cells_and_heatmap(tmp_path, capsys) -> None:
    argv = ["tasks.das_equality_search:spec", "--set", "quick=true", "--set", "sizes=[2, 4]", "--set", 'variable="WX"',
            "--out", str(tmp_path), "--featurizer", "das", "--no-progress"]
    result = main(argv)
    out = capsys.readouterr().out
    assert "best: layers." in out and "heatmap:" in out
    table = pd.read_csv(tmp_path / "table.csv")
    assert len(table) == 3 * 3 * 2 and set(table["featurizer"]) == {"das", "pca", "neurons"}
    assert (tmp_path / "heatmap_layer_size.png").exists()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "table.parquet"), result.table, check_dtype=False)
    assert result.smallest_size(0.02, "das")["size"] in (2, 4)


def test_spec_errors() -> None:
    with pytest.raises(ValueError, match="module:function"):
        load_spec("tasks.das_equality_search")
    with pytest.raises(ValueError, match="name=<JSON"):
        load_spec("tasks.das_equality_search:spec", ["quick"])
