"""Lightning callbacks that `iit.training.make_trainer` uses by default: a progress bar
and a checkpoint whose cost does not grow with the number of steps or epochs.

* `progress_bar`: Lightning's own bar (Rich when installed, else tqdm), redrawn at most
  every ``interval`` seconds (and on the last batch of an epoch) instead of after every batch;
  a small network's step is cheaper than one redraw.
* `RunCheckpoint`: Lightning's ``ModelCheckpoint`` (the run's latest checkpoint) that
  saves at the end of training and, during it, at the end of an epoch only once ``every``
  seconds have passed since its last save; a wide network's checkpoint costs more than a
  short epoch.
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import (
    ModelCheckpoint,
    ProgressBar,
    RichProgressBar,
    TQDMProgressBar,
)
from pytorch_lightning.utilities.imports import _RICH_AVAILABLE

from iit.errors import ArgumentError

__all__ = ["RunCheckpoint", "progress_bar"]


class _Throttled:
    """Forwards the batch-end hooks of a progress bar only when ``interval`` seconds have passed
    since the last forwarded one, or on the last batch of the loop."""

    interval: float = 0.1
    _shown_at: float = float("-inf")

    def _due(self, done: int, total: float) -> bool:
        now = time.monotonic()
        if now - self._shown_at >= self.interval or done >= total:
            self._shown_at = now
            return True
        return False

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._due(batch_idx + 1, self.total_train_batches):  # type: ignore[attr-defined]
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)  # type: ignore[misc]

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        total = self.total_val_batches_current_dataloader  # type: ignore[attr-defined]
        if self._due(batch_idx + 1, total):
            super().on_validation_batch_end(  # type: ignore[misc]
                trainer, pl_module, outputs, batch, batch_idx, dataloader_idx
            )


class _ThrottledRich(_Throttled, RichProgressBar):
    """Lightning's Rich progress bar, redrawn at most every ``interval`` seconds."""

    def __init__(self, interval: float) -> None:
        # Rich's own refresh thread stays at its default rate: it only redraws after an update,
        # and stopping it waits for its next wake-up
        super().__init__()
        self.interval = interval


class _ThrottledTQDM(_Throttled, TQDMProgressBar):
    """Lightning's tqdm progress bar, redrawn at most every ``interval`` seconds."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval


def progress_bar(interval: float = 0.1) -> ProgressBar:
    """Lightning's default progress bar (Rich when installed, else tqdm), redrawn at most every
    ``interval`` seconds and on the last batch of each epoch.

    Args:
        interval: seconds between redraws during an epoch.

    Raises:
        ArgumentError: ``interval <= 0``.
    """
    if not interval > 0:
        raise ArgumentError(f"progress_bar: interval must be > 0 seconds, got {interval}")
    return _ThrottledRich(interval) if _RICH_AVAILABLE else _ThrottledTQDM(interval)


class RunCheckpoint(ModelCheckpoint):
    """The run's latest checkpoint (``ModelCheckpoint()``: one file, ``epoch=E-step=S.ckpt``,
    replaced by each new save), written at the end of training and, during training, at the end
    of an epoch once ``every`` seconds have passed since the last save (so a crash loses at most
    about ``every`` seconds plus an epoch). Under several processes, rank 0 decides for all.

    Args:
        every: seconds between saves during training (0: every epoch, as ``ModelCheckpoint``).
        dirpath: where to save (default: Lightning's, ``<log dir>/checkpoints``).

    Raises:
        ArgumentError: ``every < 0``.
    """

    def __init__(self, every: float = 600.0, dirpath: str | None = None) -> None:
        if not every >= 0:
            raise ArgumentError(f"RunCheckpoint: every must be >= 0 seconds, got {every}")
        super().__init__(dirpath=dirpath)
        self.every = every
        self._saved_at = time.monotonic()

    @property
    def state_key(self) -> str:
        """``ModelCheckpoint``'s key of this callback's state, worked out again only when one of
        the settings it names changes (Lightning reads it at every hook call)."""
        settings = (self.monitor, self.mode, self._every_n_train_steps, self._every_n_epochs, self._train_time_interval)
        cached = self.__dict__.get("_state_key")
        if cached is None or cached[0] != settings:
            cached = self.__dict__["_state_key"] = (settings, super().state_key)
        return cached[1]

    def _due(self, trainer: pl.Trainer) -> bool:
        due = time.monotonic() - self._saved_at >= self.every
        return bool(trainer.strategy.broadcast(due))

    def _after(self, trainer: pl.Trainer) -> None:
        if self._last_global_step_saved == trainer.global_step:
            self._saved_at = time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._saved_at = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._every_n_train_steps < 1 and self._train_time_interval is None:
            return  # nothing is saved per batch: skip ``ModelCheckpoint``'s per-step checks
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._due(trainer):
            super().on_train_epoch_end(trainer, pl_module)
            self._after(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._due(trainer):
            super().on_validation_end(trainer, pl_module)
            self._after(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):  # not saved at this step yet
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)
