"""Scale-out settings against their plain counterparts: FSDP2 (Lightning's ModelParallelStrategy
on CPU with gloo) against one process on the same global batch, bf16 mixed precision against
full precision, gradient checkpointing against none (same loss curve on a fixed seed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from iit.training import CounterfactualDataModule, IITConfig, IITModule
from tasks.token_digit_sum import TokenDigitSumLM
from tests.iit.training.tiny import TinyDigitSum

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_fsdp2_gives_the_step_of_one_process_on_the_same_global_batch(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for out, devices, batch, strategy in (("single.pt", 1, 16, "single"), ("fsdp.pt", 2, 8, "fsdp")):
        subprocess.run(
            [sys.executable, "-m", "tests.iit.training.sharded_step", str(tmp_path / out), str(devices), str(batch), strategy],
            cwd=ROOT, env=env, check=True, timeout=300, capture_output=True,
        )
    single = torch.load(tmp_path / "single.pt", weights_only=True)
    sharded = torch.load(tmp_path / "fsdp.pt", weights_only=True)
    assert single["world_size"] == 1 and sharded["world_size"] == 2
    initial = IITModule(TinyDigitSum()).state_dict()
    assert single["state_dict"].keys() == sharded["state_dict"].keys()
    for name, value in single["state_dict"].items():
        assert not torch.equal(value, initial[name]), name  # the step moved every weight
        torch.testing.assert_close(sharded["state_dict"][name], value, rtol=0, atol=1e-6, msg=name)


class StepLosses(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def _curve(task, precision: str = "32-true", epochs: int = 3, alignment: str = "default") -> tuple[list[float], IITModule]:
    pl.seed_everything(0, verbose=False)
    module = IITModule(task, IITConfig(lr=3e-3, seed=0, alignment=alignment))
    data = CounterfactualDataModule(task, train_size=128, val_size=32, batch_size=32, seed=0)
    steps = StepLosses()
    trainer = pl.Trainer(max_epochs=epochs, precision=precision, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[steps])
    trainer.fit(module, data)
    return steps.losses, module


def test_bf16_mixed_precision_follows_the_full_precision_loss_curve():
    full, _ = _curve(TinyDigitSum())
    mixed, _ = _curve(TinyDigitSum(), precision="bf16-mixed")
    assert len(full) == len(mixed) == 12 and full[-1] < full[0]  # it trains
    torch.testing.assert_close(torch.tensor(mixed), torch.tensor(full), rtol=2e-2, atol=2e-2)
    assert mixed != full  # bf16 autocast was really on


@pytest.mark.parametrize("alignment", ["default", "heads"])
def test_gradient_checkpointing_gives_the_loss_curve_without_it(alignment):
    """Hugging Face gradient checkpointing recomputes block forwards in backward, so every
    intervention inside a checkpointed block must be applied again during recomputation. The
    ``default`` alignment writes at block outputs (outside the recomputed function); ``heads``
    writes inside block 0 (the input of its attention output projection)."""
    size = dict(max_digit=4, d_model=32, n_layers=2, n_heads=4)
    plain, a = _curve(TokenDigitSumLM("llama", **size), epochs=1, alignment=alignment)
    checkpointed, b = _curve(TokenDigitSumLM("llama", gradient_checkpointing=True, **size), epochs=1, alignment=alignment)
    assert any(getattr(m, "gradient_checkpointing", False) for m in b.network.model.modules())
    torch.testing.assert_close(torch.tensor(checkpointed), torch.tensor(plain), rtol=1e-5, atol=1e-6)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6, msg=name)
