"""A Lightning callback that logs token attributions of a fixed batch during training.

At the end of every ``every_n_epochs``-th training epoch it takes the model from the
LightningModule (its ``model_attr`` attribute, e.g. ``IITModule.model``; the module itself if
absent), builds the attribution with ``make_method(model)``, scores the fixed batch in eval mode
(restoring the previous mode afterwards), keeps the scores in `history` and writes
``attributions_epoch{E:03d}.pt`` and ``.png`` (token heatmap, one row per example) to ``out_dir``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from iit.attribution.plots import plot_token_heatmap
from iit.attribution.targets import Target
from iit.errors import ArgumentError
from iit.hooks import Inputs

__all__ = ["AttributionLogger"]


def _to_device(inputs: Inputs, device: torch.device) -> Inputs:
    if isinstance(inputs, Tensor):
        return inputs.to(device)
    return {k: v.to(device) for k, v in inputs.items()}


class AttributionLogger(pl.Callback):
    """Log attributions of a fixed batch every ``every_n_epochs`` training epochs.

    Args:
        make_method: ``model -> (inputs, target) -> scores [batch, seq]`` (e.g.
            ``lambda m: TokenAttribution(IntegratedGradients(m), "sum")``); called each time so
            it sees the current weights.
        inputs: the fixed batch (tensor or mapping of tensors, batch first).
        target: what to explain (see `iit.attribution.targets`).
        out_dir: directory for the ``.pt`` and ``.png`` files (created if missing).
        every_n_epochs: logging period.
        tokens: optional token labels for the heatmap's x axis (``seq`` strings).
        model_attr: attribute of the LightningModule holding the model.

    Raises:
        ArgumentError: ``every_n_epochs < 1``.
    """

    def __init__(
        self,
        make_method: Callable[[nn.Module], Callable[[Inputs, Target], Tensor]],
        inputs: Inputs,
        target: Target,
        out_dir: str | Path,
        *,
        every_n_epochs: int = 1,
        tokens: Sequence[str] | None = None,
        model_attr: str = "model",
    ):
        if every_n_epochs < 1:
            raise ArgumentError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.make_method = make_method
        self.inputs = inputs if isinstance(inputs, Tensor) else dict(inputs)
        self.target = target
        self.out_dir = Path(out_dir)
        self.every_n_epochs = every_n_epochs
        self.tokens = list(tokens) if tokens is not None else None
        self.model_attr = model_attr
        self.history: list[tuple[int, Tensor]] = []

    def _model(self, pl_module: pl.LightningModule) -> nn.Module:
        model = getattr(pl_module, self.model_attr, None)
        return model if isinstance(model, nn.Module) else pl_module

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Score the fixed batch and write the files (every ``every_n_epochs`` epochs)."""
        epoch = trainer.current_epoch
        if (epoch + 1) % self.every_n_epochs != 0:
            return
        model = self._model(pl_module)
        was_training = model.training
        model.eval()
        try:
            target = self.target
            if isinstance(target, Tensor):
                target = target.to(pl_module.device)
            scores = self.make_method(model)(_to_device(self.inputs, pl_module.device), target)
        finally:
            model.train(was_training)
        scores = scores.detach().cpu()
        self.history.append((epoch, scores))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        stem = self.out_dir / f"attributions_epoch{epoch:03d}"
        torch.save(scores, stem.with_suffix(".pt"))
        tokens = self.tokens if scores.dim() == 2 else None
        plot_token_heatmap(
            scores if scores.dim() <= 2 else scores.flatten(1),
            stem.with_suffix(".png"),
            tokens=tokens,
            row_labels=[f"example {i}" for i in range(scores.shape[0])],
            title=f"attributions, epoch {epoch}",
        )
