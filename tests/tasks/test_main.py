"""The main job prints IIT and baseline results side by side and plots IIA over epochs."""

from __future__ import annotations

from tasks.main import main


def test_main_job_prints_a_table_and_writes_the_plot(tmp_path, capsys):
    main(["--task", "pvr_mlp", "--epochs", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "Task 'pvr_mlp'" in out
    lines = [line for line in out.splitlines() if line.startswith(("IIT", "behaviour only"))]
    assert len(lines) == 2
    header = next(line for line in out.splitlines() if line.split()[:1] == ["task_acc"])
    for column in ("iia/TL", "iia/BR", "iia", "iia_impactful"):
        assert column in header.split()
    assert (tmp_path / "iia_over_epochs.png").read_bytes()[:4] == b"\x89PNG"
