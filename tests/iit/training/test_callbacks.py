"""make_trainer's default callbacks: a throttled progress bar and a checkpoint saved at the end of
the run (and every ``every`` seconds), resumable like an uninterrupted run."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import RichProgressBar, TQDMProgressBar

from iit.errors import ArgumentError
from iit.training import CounterfactualDataModule, IITConfig, IITModule, make_trainer
from iit.training.callbacks import RunCheckpoint, _ThrottledRich, _ThrottledTQDM, progress_bar
from tests.iit.training.tiny import TinyDigitSum

BATCHES = 4  # per epoch: 128 pairs, batch 32


def _fit(tmp_path, epochs: int, ckpt: str | None = None, **trainer_args) -> tuple[IITModule, pl.Trainer]:
    pl.seed_everything(0, verbose=False)
    task = TinyDigitSum()
    module = IITModule(task, IITConfig(lr=1e-2))
    data = CounterfactualDataModule(task, train_size=128, val_size=32, batch_size=32, seed=0)
    args = dict(root=tmp_path, logger=False, progress_bar=False)
    args.update(trainer_args)
    trainer = make_trainer(task, max_epochs=epochs, **args)
    trainer.fit(module, data, ckpt_path=ckpt)
    return module, trainer


@pytest.mark.parametrize("kind", [_ThrottledRich, _ThrottledTQDM])
@pytest.mark.parametrize(("interval", "drawn"), [(1e9, [1, BATCHES, BATCHES]), (1e-9, list(range(1, BATCHES + 1)) * 2)])
def test_progress_bar_draws_at_most_every_interval_and_the_last_batch(kind, interval, drawn, tmp_path, monkeypatch):
    base = RichProgressBar if kind is _ThrottledRich else TQDMProgressBar
    seen: list[int] = []
    original = base.on_train_batch_end

    def spy(self, trainer, module, outputs, batch, batch_idx):
        seen.append(batch_idx + 1)
        original(self, trainer, module, outputs, batch, batch_idx)

    monkeypatch.setattr(base, "on_train_batch_end", spy)
    _fit(tmp_path, epochs=2, progress_bar=True, checkpointing=False, callbacks=[kind(interval)])
    # a long interval: the first batch (nothing drawn yet), then only the last one of each epoch
    assert seen == drawn


def test_make_trainer_uses_the_throttled_bar_unless_given_one(tmp_path):
    assert any(isinstance(c, (_ThrottledRich, _ThrottledTQDM)) for c in make_trainer(root=tmp_path).callbacks)
    own = TQDMProgressBar()
    bars = [c for c in make_trainer(root=tmp_path, callbacks=[own]).callbacks if isinstance(c, pl.callbacks.ProgressBar)]
    assert bars == [own]
    with pytest.raises(ArgumentError, match="interval"):
        progress_bar(0)
    with pytest.raises(ArgumentError, match="every"):
        RunCheckpoint(every=-1)


def test_checkpoint_at_the_end_only_resumes_like_an_uninterrupted_run(tmp_path):
    full, _ = _fit(tmp_path / "full", epochs=3)
    part, trainer = _fit(tmp_path / "part", epochs=1)
    (ckpt,) = (tmp_path / "part").rglob("*.ckpt")  # one file: written at the end, not per epoch
    saved = torch.load(ckpt, weights_only=True)
    assert saved["global_step"] == BATCHES
    for name, value in part.state_dict().items():
        assert torch.equal(saved["state_dict"][name], value), name
    resumed, _ = _fit(tmp_path / "resumed", epochs=3, ckpt=str(ckpt))
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_checkpoint_every_zero_saves_every_epoch(tmp_path):
    steps: list[int] = []

    class Saves(pl.Callback):
        def on_save_checkpoint(self, trainer, module, checkpoint) -> None:
            steps.append(checkpoint["global_step"])

    _fit(tmp_path, epochs=3, checkpoint_every=0, callbacks=[Saves()])
    assert steps == [BATCHES, 2 * BATCHES, 3 * BATCHES]
    steps.clear()
    _fit(tmp_path / "rare", epochs=3, callbacks=[Saves()])
    assert steps == [3 * BATCHES]
