"""A Lightning ``Trainer`` for IIT runs with quiet defaults.

`make_trainer` is the one-call way to train:

```python
trainer = make_trainer(task, max_epochs=10)      # logs to runs/<task.name>/version_N
trainer.fit(IITModule(task), CounterfactualDataModule(task))
```

Quiet means: no GPU/TPU/"tip" lines, no model summary or FLOPs table, no warnings about
data-loader workers (the pairs are precomputed tensors; workers would only add overhead);
a progress bar and the per-epoch metrics stay. No sanity-check validation before training:
`IITModule` already runs the task's network and alignment on example inputs when it is
built. The progress bar is redrawn at most ten times a second and the checkpoint is written at
the end of the run and every ``checkpoint_every`` seconds (`iit.training.callbacks`), so
neither costs more than a small network's training.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, ProgressBar
from pytorch_lightning.loggers import CSVLogger, Logger
from pytorch_lightning.strategies import Strategy

from iit.errors import ArgumentError
from iit.training.callbacks import RunCheckpoint
from iit.training.callbacks import progress_bar as throttled_progress_bar
from iit.training.checkpoints import LIGHTNING_CKPT_NAMES, read_checkpoint
from iit.training.data import CounterfactualDataModule
from iit.training.evaluation import evaluate_alignment, format_intervals, format_table
from iit.training.module import IITModule
from iit.training.task import IITTask

__all__ = ["IITTrainer", "make_trainer", "quiet_lightning"]

Precision = Literal["32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true"]

_NOISE = (
    r".*does not have many workers.*",
    r".*is smaller than the logging interval.*",
    r".*litlogger.*",
    r".*litmodels.*",
)


def quiet_lightning() -> None:
    """Silence Lightning's informational output (device lines, tips, "fit stopped") and its
    warnings about data-loader workers and the logging interval; warnings that point at real
    problems stay. Applies process-wide (Lightning's loggers are global).

    Raises:
        TypeError: any argument (it takes none).
    """
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
                 "lightning_fabric.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in _NOISE:
        warnings.filterwarnings("ignore", message=pattern)


class IITTrainer(pl.Trainer):
    """A Lightning ``Trainer`` with an `evaluate` entry point (``iit evaluate``).

    Takes ``pytorch_lightning.Trainer``'s arguments; `make_trainer` builds one with IIT's
    defaults.

    Raises:
        MisconfigurationException: (from Lightning) an invalid combination of Trainer
            arguments.
    """

    def evaluate(
        self,
        model: IITModule,
        datamodule: CounterfactualDataModule,
        ckpt_path: str | None = None,
        alignment: str | None = None,
    ) -> dict[str, float]:
        """Print and return IIA per variable for a checkpoint, optionally under another of the
        task's alignments (`iit.training.evaluate_alignment`).

        Args:
            model: the module (its weights are replaced by the checkpoint's).
            datamodule: supplies the held-out pairs.
            ckpt_path: a checkpoint written by a fit (read with
                `iit.training.checkpoints.read_checkpoint`: no code in it runs).
            alignment: the name of another alignment hypothesis of the task.

        Raises:
            AlignmentError: an unknown alignment name (listing the task's).
            MissingFileError: no checkpoint at ``ckpt_path``.
            DamagedFileError: a checkpoint that cannot be read (see
                `iit.training.checkpoints.read_checkpoint`).
        """
        if ckpt_path is not None:
            model.load_state_dict(read_checkpoint(ckpt_path)["state_dict"])
        results = evaluate_alignment(model, datamodule, alignment)
        name = alignment or model.config.alignment
        print(f"task {model.task.name!r}, alignment {name!r}:")
        print(model.task.alignment(model.causal_model, name).describe())
        print(format_table({name: results}))
        print("95% Wilson intervals:", format_intervals(results))
        return results

    def fit(
        self,
        model: Any,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: Any = None,
        ckpt_path: str | None = None,
        weights_only: bool | None = None,
    ) -> None:
        """``Trainer.fit``; a ``ckpt_path`` file is first checked with
        `iit.training.checkpoints.read_checkpoint` and then restored by Lightning with
        ``weights_only=True``.

        Raises:
            MissingFileError: no checkpoint at ``ckpt_path``.
            DamagedFileError: a checkpoint that cannot be read (see
                `iit.training.checkpoints.read_checkpoint`).
        """
        if ckpt_path is not None and str(ckpt_path) not in LIGHTNING_CKPT_NAMES:
            read_checkpoint(ckpt_path)
            weights_only = True
        super().fit(model, train_dataloaders, val_dataloaders, datamodule, ckpt_path, weights_only=weights_only)


def make_trainer(
    task: IITTask | str | None = None,
    *,
    max_epochs: int = 10,
    max_steps: int = -1,
    root: str | Path = "runs",
    logger: Logger | bool = True,
    progress_bar: bool = True,
    checkpointing: bool = True,
    checkpoint_every: float = 600.0,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    strategy: str | Strategy = "auto",
    precision: Precision | None = None,
    gradient_clip_val: float | None = None,
    check_val_every_n_epoch: int = 1,
    callbacks: Sequence[Callback] = (),
    quiet: bool = True,
) -> IITTrainer:
    """An `IITTrainer` with IIT's defaults.

    Args:
        task: names the log folder ``<root>/<task.name>`` (a task or a name; default ``iit``).
        max_epochs: stop after this many epochs.
        max_steps: stop after this many optimizer steps (``-1``: no limit).
        root: folder for logs and checkpoints.
        logger: ``True`` (a CSV logger under ``<root>/<task>``; metrics per epoch),
            ``False`` (none) or a Lightning logger.
        progress_bar: show Lightning's progress bar (redrawn at most every 0.1 s).
        checkpointing: save the last checkpoint of each run (under the logger's folder).
        checkpoint_every: during training, also save it at the end of an epoch once this many
            seconds have passed since the last save (0: every epoch).
        accelerator: as in ``pytorch_lightning.Trainer``.
        devices: as in ``pytorch_lightning.Trainer``.
        strategy: as in ``pytorch_lightning.Trainer`` (e.g. ``"ddp"``).
        precision: as in ``pytorch_lightning.Trainer``.
        gradient_clip_val: as in ``pytorch_lightning.Trainer``.
        check_val_every_n_epoch: as in ``pytorch_lightning.Trainer``.
        callbacks: extra callbacks.
        quiet: call `quiet_lightning` first (no device lines, tips or worker warnings).

    Raises:
        ArgumentError: ``max_epochs < 1`` with no ``max_steps``.
    """
    if max_epochs < 1 and max_steps < 1:
        raise ArgumentError(f"make_trainer needs max_epochs >= 1 or max_steps >= 1, got {max_epochs} and {max_steps}")
    if quiet:
        quiet_lightning()
    name = task.name if isinstance(task, IITTask) else (task or "iit")
    if logger is True:
        logger = CSVLogger(str(root), name=name)
    callbacks = list(callbacks)
    if progress_bar and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(throttled_progress_bar())
    if checkpointing and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        callbacks.append(RunCheckpoint(every=checkpoint_every))
    return IITTrainer(
        max_epochs=max_epochs,
        max_steps=max_steps,
        default_root_dir=str(Path(root) / name),
        logger=logger,
        enable_progress_bar=progress_bar,
        enable_checkpointing=checkpointing,
        enable_model_summary=False,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        precision=precision,
        gradient_clip_val=gradient_clip_val,
        check_val_every_n_epoch=check_val_every_n_epoch,
        callbacks=callbacks,
        num_sanity_val_steps=0,  # IITModule checks the task on example inputs when it is built
    )
