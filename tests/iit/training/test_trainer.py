"""Training with Lightning: checkpoint resume equality, weights-only checkpoints, DDP gradients."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from iit.training import CounterfactualDataModule, IITConfig, IITModule
from iit.training.report import read_epoch_metrics
from tests.iit.training.tiny import TinyDigitSum

ROOT = Path(__file__).resolve().parents[3]


def fit(tmp: Path, name: str, epochs: int, ckpt: str | None = None) -> tuple[IITModule, Path]:
    pl.seed_everything(0, verbose=False)
    task = TinyDigitSum()
    module = IITModule(task, IITConfig(lr=1e-2))
    data = CounterfactualDataModule(task, train_size=256, val_size=64, batch_size=32, seed=0)
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=CSVLogger(str(tmp), name=name, version=0),
        callbacks=[ModelCheckpoint(dirpath=tmp / name / "ckpt", save_top_k=-1, every_n_epochs=1)],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, data, ckpt_path=ckpt)
    return module, tmp / name / "version_0" / "metrics.csv"


def epoch_losses(path: Path) -> list[float]:
    import csv

    with open(path) as handle:
        return [float(r["train/total_loss"]) for r in csv.DictReader(handle) if r.get("train/total_loss")]


def test_resume_repeats_an_uninterrupted_run(tmp_path):
    full, full_csv = fit(tmp_path, "full", epochs=3)
    _, first_csv = fit(tmp_path, "part", epochs=1)
    ckpt = next((tmp_path / "part" / "ckpt").glob("epoch=0*.ckpt"))
    resumed, resumed_csv = fit(tmp_path, "resumed", epochs=3, ckpt=str(ckpt))
    assert epoch_losses(first_csv) + epoch_losses(resumed_csv) == epoch_losses(full_csv)
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert len(read_epoch_metrics(full_csv)) == 3


def test_checkpoints_load_weights_only_with_alignment_and_causal_model(tmp_path):
    fit(tmp_path, "run", epochs=1)
    ckpt = next((tmp_path / "run" / "ckpt").glob("*.ckpt"))
    checkpoint = torch.load(ckpt, weights_only=True)
    assert checkpoint["iit"]["alignment"] == "z -> layers.0.output[dims 8:16]\nS -> layers.0.output[dims 0:8]"
    assert "digit sum" in checkpoint["iit"]["causal_model"]
    module = IITModule(TinyDigitSum())
    module.load_state_dict(checkpoint["state_dict"])


@pytest.mark.slow
def test_ddp_gives_the_gradients_of_one_process_on_the_same_global_batch(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for devices, batch, out in ((1, 16, "single.pt"), (2, 8, "ddp.pt")):
        subprocess.run(
            [sys.executable, "-m", "tests.iit.training.ddp_gradients", str(tmp_path / out), str(devices), str(batch)],
            cwd=ROOT, env=env, check=True, timeout=300, capture_output=True,
        )
    single = torch.load(tmp_path / "single.pt", weights_only=True)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert single["world_size"] == 1 and ddp["world_size"] == 2
    assert single["grads"].keys() == ddp["grads"].keys() and single["grads"]
    for name, grad in single["grads"].items():
        assert torch.allclose(grad, ddp["grads"][name], atol=1e-6), name
