"""The `iit` command line: fit from a YAML config, then evaluate the checkpoint under two
alignment hypotheses."""

from __future__ import annotations

import pytest
import yaml

from iit.training.cli import format_intervals, format_table, main


@pytest.fixture
def config(tmp_path):
    cfg = {
        "seed_everything": 0,
        "threads": 1,
        "trainer": {
            "max_epochs": 1,
            "default_root_dir": str(tmp_path),
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path / "logs")}},
        },
        "model": {"task": {"class_path": "tests.iit.training.tiny.TinyDigitSum"}, "config": {"lr": 0.01}},
        "data": {"train_size": 128, "val_size": 64, "batch_size": 32},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_fit_then_evaluate_against_another_alignment(config, tmp_path, capsys):
    main(["fit", "--config", str(config)])
    ckpts = list((tmp_path / "logs").rglob("*.ckpt"))
    assert len(ckpts) == 1
    metrics = (tmp_path / "logs").rglob("metrics.csv")
    header = next(metrics).read_text().splitlines()[0]
    for column in ("val/iia", "val/iia_impactful", "val/iia/S", "val/iia/z", "val/task_acc", "train/iit_loss"):
        assert column in header
    capsys.readouterr()
    main(["evaluate", "--config", str(config), "--ckpt_path", str(ckpts[0]), "--alignment", "swapped"])
    printed = capsys.readouterr().out
    assert "alignment 'swapped'" in printed and "S -> layers.0.output[dims 8:16]" in printed
    assert "iia/S" in printed and "task_acc" in printed
    assert "95% Wilson intervals: task_acc" in printed and "n/task_acc" not in printed.split("95%")[0]


def test_unknown_alignment_is_a_clear_error(config, tmp_path):
    from iit import AlignmentError

    with pytest.raises(AlignmentError, match="has no alignment 'nope'; it has \\['default', 'swapped'\\]"):
        main(["evaluate", "--config", str(config), "--alignment", "nope"])


def test_format_table():
    table = format_table({"a": {"x": 0.5, "y": float("nan")}, "bb": {"x": 1.0}}, ["x", "y"])
    lines = table.splitlines()
    assert lines[2].split() == ["a", "0.500", "-"]
    assert lines[3].split() == ["bb", "1.000", "-"]


def test_format_intervals_is_the_wilson_interval():
    # 50 / 100: centre 0.5, half-width 1.96 / (1 + 1.96^2 / 100) * sqrt(0.25 / 100 + 1.96^2 / 40000)
    half = 1.959964 / (1 + 1.959964**2 / 100) * (0.25 / 100 + 1.959964**2 / 40_000) ** 0.5
    text = format_intervals({"iia/S": 0.5, "n/iia/S": 100.0, "task_acc": 1.0, "n/task_acc": 0.0, "iia": 0.3})
    assert text == f"iia/S 0.500 [{0.5 - half:.3f}, {0.5 + half:.3f}] (n=100)"
