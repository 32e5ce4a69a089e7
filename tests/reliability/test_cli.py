"""Catalogue, part 4: untrusted checkpoints given to ``iit evaluate`` and ``iit fit --ckpt_path``.

A malicious checkpoint is a pickle whose ``__reduce__`` would create a file when unpickled: it
must be refused with a one-line :class:`iit.DamagedFileError` and the file must NOT exist
afterwards. Truncated, random, empty and foreign files are refused the same way, a missing one
with :class:`iit.MissingFileError`; from the console the error is one line on stderr.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
import torch
import yaml

from iit import DamagedFileError, IITError, MissingFileError
from iit.training.cli import main, read_checkpoint


class _Payload:
    """Unpickling this calls ``open(target, "w")``: the file appears if the pickle runs."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (open, (str(self.target), "w"))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    cfg = {
        "seed_everything": 0,
        "threads": 1,
        "trainer": {
            "max_epochs": 1,
            "default_root_dir": str(tmp_path),
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "enable_checkpointing": False,
            "logger": False,
        },
        "model": {"task": {"class_path": "tests.iit.training.tiny.TinyDigitSum"}, "config": {"lr": 0.01}},
        "data": {"train_size": 32, "val_size": 32, "batch_size": 32},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _checkpoint(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """A bad checkpoint of ``kind`` and the file its payload would create."""
    target = tmp_path / "pwned.txt"
    path = tmp_path / f"{kind}.ckpt"
    if kind == "malicious-pickle":
        path.write_bytes(pickle.dumps({"state_dict": {}, "x": _Payload(target)}))
    elif kind == "malicious-torch-save":
        torch.save({"state_dict": {}, "x": _Payload(target)}, path)
    elif kind == "truncated":
        torch.save({"state_dict": {"w": torch.zeros(64, 64)}}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "random":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "no-state-dict":
        torch.save({"weights": torch.zeros(2)}, path)
    return path, target


KINDS = [
    ("malicious-pickle", ("damaged or unsafe", "was not loaded")),
    ("malicious-torch-save", ("damaged or unsafe", "was not loaded")),
    ("truncated", ("damaged or unsafe",)),
    ("random", ("damaged or unsafe",)),
    ("empty", ("damaged or unsafe",)),
    ("no-state-dict", ("no 'state_dict'",)),
]


@pytest.mark.parametrize(("kind", "parts"), KINDS, ids=[k for k, _ in KINDS])
def test_read_checkpoint_refuses_bad_files(tmp_path: Path, kind: str, parts: tuple[str, ...]) -> None:
    path, target = _checkpoint(tmp_path, kind)
    with pytest.raises(DamagedFileError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert all(p in message for p in parts)
    assert not target.exists(), "the pickle payload ran"
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.arange(3.0)}}, good)
    torch.testing.assert_close(read_checkpoint(good)["state_dict"]["w"], torch.arange(3.0))


@pytest.mark.parametrize("command", ["evaluate", "fit"])
@pytest.mark.parametrize("kind", ["malicious-pickle", "truncated"])
def test_cli_refuses_bad_checkpoints(config: Path, tmp_path: Path, command: str, kind: str) -> None:
    path, target = _checkpoint(tmp_path, kind)
    with pytest.raises(DamagedFileError, match="damaged or unsafe and was not loaded") as info:
        main([command, "--config", str(config), "--ckpt_path", str(path)])
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert info.value.__cause__ is not None  # the original error is chained, not lost
    assert not target.exists(), "the pickle payload ran"


def test_cli_missing_checkpoint(config: Path, tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="no checkpoint file"):
        main(["evaluate", "--config", str(config), "--ckpt_path", str(tmp_path / "nope.ckpt")])


def test_console_prints_one_line_and_exits_2(config: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    path, target = _checkpoint(tmp_path, "malicious-pickle")
    monkeypatch.setattr(sys, "argv", ["iit", "evaluate", "--config", str(config), "--ckpt_path", str(path)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("iit: error: checkpoint") and "was not loaded" in err[0]
    assert "Traceback" not in err[0] and not target.exists()
    assert issubclass(DamagedFileError, IITError)
