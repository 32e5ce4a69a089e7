"""The results script: runs of a (shrunk) task and the markdown table."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tasks.registry import TASKS
from tasks.results import ResultRow, markdown_table, run_task


def test_table_rows_and_missing_values() -> None:
    rows = [
        ResultRow("pvr_mlp", "IIT", {"task_acc": 0.99, "iia": 0.98, "iia/TL": 0.97, "strict_acc": 0.5}, ("TL", "TR"),
                  12.3, "python -m tasks.main --task pvr_mlp"),
        ResultRow("pvr_mlp", "behaviour only", {"task_acc": 0.991, "iia": float("nan")}, ("TL", "TR"), 9.0, "cmd"),
    ]
    lines = markdown_table(rows).splitlines()
    assert lines[0].startswith("| task | training | task acc | IIA per variable |") and len(lines) == 4
    assert lines[2] == (
        "| pvr_mlp | IIT | 0.990 | TL 0.970, TR - | 0.980 | 0.500 | 12 s | `python -m tasks.main --task pvr_mlp` |"
    )
    assert lines[3] == "| pvr_mlp | behaviour only | 0.991 | TL -, TR - | - | - | 9 s | `cmd` |"


def test_run_task_trains_iit_and_baseline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = replace(TASKS["pvr_mlp_strict"], train_size=128, val_size=64, epochs=1)
    monkeypatch.setitem(TASKS, "pvr_mlp_strict", small)
    rows = run_task("pvr_mlp_strict", tmp_path)
    assert [r.training for r in rows] == ["strict IIT", "behaviour only"]
    for row in rows:
        assert 0.0 <= row.metrics["task_acc"] <= 1.0 and 0.0 <= row.metrics["strict_acc"] <= 1.0
        assert row.variables == ("TL", "TR", "BL", "BR") and row.seconds > 0
    assert (tmp_path / "pvr_mlp_strict" / "iit" / "metrics.csv").exists()
    assert len(run_task("pvr_mlp_strict", tmp_path / "again", baseline=False)) == 1


def test_unknown_task() -> None:
    with pytest.raises(KeyError, match="unknown task 'pvr'.*valid: "):
        run_task("pvr", Path("unused"))
