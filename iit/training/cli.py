"""The ``iit`` command line: LightningCLI over `IITModule` and
`CounterfactualDataModule`, plus ``iit evaluate``.

    iit fit --config tasks/configs/digit_sum_mlp.yaml
    iit fit --config tasks/configs/digit_sum_mlp.yaml --trainer.strategy ddp \\
        --trainer.devices 2 --trainer.accelerator cpu
    iit evaluate --config tasks/configs/digit_sum_mlp.yaml --ckpt_path runs/.../last.ckpt \\
        --alignment S_elsewhere

``data.task`` is linked to ``model.task``: the config names the task once. ``--threads`` sets
``torch.set_num_threads`` (default 1: fastest for the small CPU tasks).

Checkpoints are untrusted files: ``iit evaluate --ckpt_path`` and ``iit fit --ckpt_path`` read
them with `read_checkpoint` (``torch.load(weights_only=True)``: no code in the file runs),
and a damaged, truncated or malicious file stops the command with one line,
``iit: error: ... is damaged or unsafe and was not loaded: ...``. Called from Python,
`main` raises the `iit.IITError` instead (the original error chained).
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from pytorch_lightning.cli import LightningCLI

from iit.errors import IITError
from iit.training.checkpoints import LIGHTNING_CKPT_NAMES, read_checkpoint
from iit.training.data import CounterfactualDataModule
from iit.training.evaluation import evaluate_alignment, format_intervals, format_table
from iit.training.module import IITModule
from iit.training.trainer import IITTrainer, quiet_lightning

__all__ = ["IITTrainer", "IITCLI", "main", "evaluate_alignment", "format_intervals", "format_table", "read_checkpoint"]



class IITCLI(LightningCLI):
    """LightningCLI with the task linked from the model to the data module and an
    ``evaluate`` subcommand.

    Raises:
        SystemExit: (from Lightning's argument parser) invalid command-line arguments, or
            ``--help``.
        MissingFileError: a ``--ckpt_path`` that does not exist.
        DamagedFileError: a ``--ckpt_path`` that cannot be read.
    """

    def add_arguments_to_parser(self, parser: Any) -> None:
        """Add ``--threads`` (torch threads) and link ``model.task`` to ``data.task``.

        Args:
            parser: Lightning's argument parser.
        """
        parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
        parser.link_arguments("model.task", "data.task", apply_on="instantiate")

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's subcommands plus ``evaluate`` (taking the model and the data module)."""
        commands = dict(LightningCLI.subcommands())
        commands["evaluate"] = {"model", "datamodule"}
        return commands

    def parse_arguments(self, parser: Any, args: Any) -> None:
        """Parse, then check a ``--ckpt_path`` file with `read_checkpoint` before Lightning
        (or anything else) reads it.

        Raises:
            MissingFileError: no file at ``--ckpt_path``.
            DamagedFileError: a file that cannot be read (see `read_checkpoint`).
        """
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path is not None and str(ckpt_path) not in LIGHTNING_CKPT_NAMES:
            read_checkpoint(ckpt_path)

    def before_instantiate_classes(self) -> None:
        """Set torch's thread count from ``--threads`` (at least 1)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        torch.set_num_threads(max(1, int(config.get("threads", 1))))


def main(args: list[str] | None = None) -> None:
    """Console entry point ``iit``.

    Args:
        args: command-line arguments; ``None`` reads ``sys.argv`` (the console script).

    Lightning's informational output is silenced (`iit.training.quiet_lightning`); no
    model summary unless ``--trainer.enable_model_summary true``.

    Raises:
        IITError: any library error, when called with ``args`` (from Python). From the console
            (``args=None``) it is printed as one line, ``iit: error: <message>``, and the
            process exits with status 2.
        SystemExit: status 2 after printing a library error from the console (``args=None``);
            also Lightning's own exits (``--help``, invalid arguments).
    """
    quiet_lightning()
    try:
        IITCLI(
            IITModule,
            CounterfactualDataModule,
            trainer_class=IITTrainer,
            args=args,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"enable_model_summary": False},
        )
    except IITError as err:
        if args is not None:
            raise
        print(f"iit: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
