"""Run one IIT optimizer step (SGD) and save the full weights after it (used by
test_scale.py).

    python -m tests.iit.training.sharded_step OUT DEVICES PER_DEVICE_BATCH STRATEGY

STRATEGY is ``single`` (one process), ``ddp`` or ``fsdp`` (Lightning's FSDPStrategy on CPU
with gloo, full state dict on save). With SGD without momentum, the weights after one step are
``w - lr * grad``: equal weights mean equal gradients of the global batch.
"""

from __future__ import annotations

import sys

import pytorch_lightning as pl
import torch

from iit.training import CounterfactualDataModule, IITConfig, IITModule
from tests.iit.training.tiny import TinyDigitSum


def main(out: str, devices: int, batch_size: int, strategy_name: str) -> None:
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    task = TinyDigitSum()
    module = IITModule(task, IITConfig(in_batch_sources=False, optimizer="sgd", momentum=0.0, lr=0.5))
    data = CounterfactualDataModule(task, train_size=16, val_size=8, batch_size=batch_size, seed=0)
    if strategy_name == "fsdp":
        from pytorch_lightning.strategies import ModelParallelStrategy

        strategy: object = ModelParallelStrategy(data_parallel_size=devices, tensor_parallel_size=1,
                                                 save_distributed_checkpoint=False)
    else:
        strategy = "ddp" if strategy_name == "ddp" else "auto"
    trainer = pl.Trainer(
        max_steps=1, accelerator="cpu", devices=devices, strategy=strategy, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )
    trainer.fit(module, data)
    trainer.save_checkpoint(out)
    if trainer.global_rank == 0:
        state = torch.load(out, weights_only=True)
        state["world_size"] = trainer.world_size
        torch.save(state, out)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
