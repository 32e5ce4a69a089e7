"""Run one IIT training step and save the gradients (used by test_trainer.py).

    python -m tests.iit.training.ddp_gradients OUT DEVICES PER_DEVICE_BATCH

With DEVICES=2 this uses Lightning's own DDP strategy on CPU (gloo); rank 0 saves the
all-reduced gradients.
"""

from __future__ import annotations

import sys

import pytorch_lightning as pl
import torch

from iit.training import CounterfactualDataModule, IITConfig, IITModule
from tests.iit.training.tiny import TinyDigitSum


class SaveGradients(pl.Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_after_backward(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.global_rank == 0:
            grads = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}
            torch.save({"grads": grads, "world_size": trainer.world_size}, self.path)


def main(out: str, devices: int, batch_size: int) -> None:
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    task = TinyDigitSum()
    module = IITModule(task, IITConfig(in_batch_sources=False))
    data = CounterfactualDataModule(task, train_size=16, val_size=8, batch_size=batch_size, seed=0)
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[SaveGradients(out)],
    )
    trainer.fit(module, data)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
