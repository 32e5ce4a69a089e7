"""The Lightning callback logs attributions of a fixed batch while a model trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from iit.attribution import AttributionLogger, InputXGradient, TokenAttribution


class Wrapper(pl.LightningModule):
    """Exposes the trained network as ``.model``, like IITModule."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.model(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)


def _method(model: nn.Module) -> TokenAttribution:
    return TokenAttribution(InputXGradient(model), "sum")


def test_logger_writes_files_and_tracks_training(tmp_path: Path) -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 4, 3)
    y = (x[:, 2].sum(-1) > 0).long()  # only token 2 matters
    fixed = x[:3]
    logger = AttributionLogger(
        _method, fixed, 1, tmp_path, every_n_epochs=2, tokens=["a", "b", "c", "d"]
    )
    module = Wrapper()
    module.model.train()
    trainer = pl.Trainer(
        max_epochs=4,
        callbacks=[logger],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=16))
    assert [epoch for epoch, _ in logger.history] == [1, 3]
    for epoch in (1, 3):
        assert (tmp_path / f"attributions_epoch{epoch:03d}.png").stat().st_size > 0
        saved = torch.load(tmp_path / f"attributions_epoch{epoch:03d}.pt")
        assert saved.shape == (3, 4)
    final = logger.history[-1][1]
    # the attribution equals the independent closed form of the final linear model (grad x input)
    weight = module.model[1].weight.detach().view(2, 4, 3)
    torch.testing.assert_close(final, (fixed * weight[1]).sum(-1), atol=1e-6, rtol=0)
    assert module.model.training  # the mode was restored after logging


def test_logger_validates_period(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="every_n_epochs"):
        AttributionLogger(_method, torch.zeros(1, 4, 3), 0, tmp_path, every_n_epochs=0)
