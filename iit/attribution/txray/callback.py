"""Lightning callback that records TX-Ray distributions at chosen epochs (thin stateful shell
around `record_distributions`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pytorch_lightning as pl
from torch import Tensor

from iit.attribution.txray.distributions import (
    NeuronDistributions,
    TXRayConfig,
    record_distributions,
)
from iit.errors import ArgumentError

__all__ = ["TXRayCallback"]


class TXRayCallback(pl.Callback):
    """Record neuron distributions of ``pl_module`` at the end of the chosen epochs.

    Args:
        batches: re-iterable batches (a list or a DataLoader) of ``Mapping[str, Tensor]``.
        config: what to record (module name relative to the LightningModule).
        epochs: 0-based epochs after which to record.
        at_start: also record before training, under the key ``-1``.

    Attributes:
        records: epoch -> `NeuronDistributions` (``-1`` = before training).
    """

    def __init__(
        self,
        batches: Iterable[Mapping[str, Tensor]],
        config: TXRayConfig,
        epochs: tuple[int, ...],
        at_start: bool = False,
    ) -> None:
        super().__init__()
        if any(e < 0 for e in epochs):
            raise ArgumentError(f"epochs must be >= 0, got {epochs}")
        self.batches = batches
        self.config = config
        self.epochs = tuple(sorted(set(epochs)))
        self.at_start = at_start
        self.records: dict[int, NeuronDistributions] = {}

    def _record(self, pl_module: pl.LightningModule) -> NeuronDistributions:
        return record_distributions(pl_module, self.batches, self.config)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_start:
            self.records[-1] = self._record(pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch in self.epochs:
            self.records[trainer.current_epoch] = self._record(pl_module)
