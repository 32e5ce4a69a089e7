"""The ``iit`` command line: LightningCLI over :class:`IITModule` and
:class:`CounterfactualDataModule`, plus ``iit evaluate``.

    iit fit --config tasks/configs/digit_sum_mlp.yaml
    iit fit --config tasks/configs/digit_sum_mlp.yaml --trainer.strategy ddp \\
        --trainer.devices 2 --trainer.accelerator cpu
    iit evaluate --config tasks/configs/digit_sum_mlp.yaml --ckpt_path runs/.../last.ckpt \\
        --alignment S_elsewhere

``data.task`` is linked to ``model.task``: the config names the task once. ``--threads`` sets
``torch.set_num_threads`` (default 1: fastest for the small CPU tasks).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.cli import LightningCLI

from iit.training.data import CounterfactualDataModule
from iit.training.metrics import InterchangeAccuracy
from iit.training.module import IITModule

__all__ = ["IITTrainer", "IITCLI", "main", "evaluate_alignment", "format_table"]


def evaluate_alignment(
    module: IITModule, datamodule: CounterfactualDataModule, alignment: str | None = None
) -> dict[str, float]:
    """IIA of ``module``'s network on the held-out pairs, per variable, under the trained or
    another named alignment of the task.

    Returns:
        ``{"task_acc", "iia", "iia_impactful", "impactful_fraction", "iia/<var>",
        "iia/<var>/impactful", "strict_acc"?}`` as floats.

    Raises:
        AlignmentError, CoordinateError: an unknown alignment name, or one that does not fit.
    """
    datamodule.setup("validate")
    hypothesis = None
    if alignment is not None:
        hypothesis = module.task.alignment(module.causal_model, alignment)
        module.task.check(module.network, module.causal_model, hypothesis, for_training=False)
    variables = (hypothesis or module.alignment).variables
    overall, per_var = InterchangeAccuracy(), {v: InterchangeAccuracy() for v in variables}
    task_ok, strict_ok = [], []
    module.eval()
    for batch in datamodule.val_dataloader():
        result = module.evaluate_batch(batch.to(module.device), hypothesis)
        task_ok.append(result["task_correct"])
        if result["correct"] is not None:
            overall.update(result["correct"], result["impactful"])
        for v, (ok, imp) in result["by_variable"].items():
            per_var[v].update(ok, imp)
        if result["strict"] is not None:
            strict_ok.append(result["strict"].float().mean(0))
    out = {"task_acc": float(torch.cat(task_ok).float().mean())}
    if overall.total > 0:
        out.update({k: float(v) for k, v in overall.compute().items()})
    for v, metric in per_var.items():
        values = metric.compute()
        out[f"iia/{v}"] = float(values["iia"])
        out[f"iia/{v}/impactful"] = float(values["iia_impactful"])
    if strict_ok:
        out["strict_acc"] = float(torch.cat(strict_ok).mean())
    return out


def format_table(rows: dict[str, dict[str, float]], columns: list[str] | None = None) -> str:
    """A plain-text table: one row per run, one column per metric (``-`` where missing)."""
    columns = columns or sorted({k for r in rows.values() for k in r})
    width = max([len(r) for r in rows] + [8])
    head = f"{'':<{width}}  " + "  ".join(f"{c:>{max(len(c), 6)}}" for c in columns)
    lines = [head, "-" * len(head)]
    for name, values in rows.items():
        cells = []
        for c in columns:
            v = values.get(c)
            text = "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"
            cells.append(f"{text:>{max(len(c), 6)}}")
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


class IITTrainer(Trainer):
    """A Lightning ``Trainer`` with an ``evaluate`` entry point for the CLI."""

    def evaluate(
        self,
        model: IITModule,
        datamodule: CounterfactualDataModule,
        ckpt_path: str | None = None,
        alignment: str | None = None,
    ) -> dict[str, float]:
        """Report IIA per variable for a checkpoint, optionally against another alignment.

        Args:
            model: the module (its network weights are replaced by the checkpoint's).
            datamodule: supplies the held-out pairs.
            ckpt_path: a checkpoint written by ``iit fit`` (loaded with ``weights_only=True``).
            alignment: the name of another alignment hypothesis of the task.
        """
        if ckpt_path is not None:
            checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
            model.load_state_dict(checkpoint["state_dict"])
        results = evaluate_alignment(model, datamodule, alignment)
        name = alignment or model.config.alignment
        print(f"task {model.task.name!r}, alignment {name!r}:")
        print((model.task.alignment(model.causal_model, name)).describe())
        print(format_table({name: results}))
        return results


class IITCLI(LightningCLI):
    """LightningCLI with the task linked from the model to the data module and an
    ``evaluate`` subcommand."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
        parser.link_arguments("model.task", "data.task", apply_on="instantiate")

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        commands = dict(LightningCLI.subcommands())
        commands["evaluate"] = {"model", "datamodule"}
        return commands

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        torch.set_num_threads(max(1, int(config.get("threads", 1))))


def main(args: list[str] | None = None) -> None:
    """Console entry point ``iit``."""
    IITCLI(
        IITModule,
        CounterfactualDataModule,
        trainer_class=IITTrainer,
        args=args,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    main()
