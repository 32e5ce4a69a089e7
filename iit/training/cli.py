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

from typing import Any

import torch
from pytorch_lightning.cli import LightningCLI

from iit.training.data import CounterfactualDataModule
from iit.training.evaluation import evaluate_alignment, format_table
from iit.training.module import IITModule
from iit.training.trainer import IITTrainer, quiet_lightning

__all__ = ["IITTrainer", "IITCLI", "main", "evaluate_alignment", "format_table"]


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
    """Console entry point ``iit`` (quiet: see :func:`iit.training.quiet_lightning`; no model
    summary unless ``--trainer.enable_model_summary true``)."""
    quiet_lightning()
    IITCLI(
        IITModule,
        CounterfactualDataModule,
        trainer_class=IITTrainer,
        args=args,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"enable_model_summary": False},
    )


if __name__ == "__main__":
    main()
