"""The ``iit`` command line: LightningCLI over :class:`IITModule` and
:class:`CounterfactualDataModule`, plus ``iit evaluate``.

    iit fit --config tasks/configs/digit_sum_mlp.yaml
    iit fit --config tasks/configs/digit_sum_mlp.yaml --trainer.strategy ddp \\
        --trainer.devices 2 --trainer.accelerator cpu
    iit evaluate --config tasks/configs/digit_sum_mlp.yaml --ckpt_path runs/.../last.ckpt \\
        --alignment S_elsewhere

``data.task`` is linked to ``model.task``: the config names the task once. ``--threads`` sets
``torch.set_num_threads`` (default 1: fastest for the small CPU tasks).

Checkpoints are untrusted files: ``iit evaluate --ckpt_path`` and ``iit fit --ckpt_path`` read
them with :func:`read_checkpoint` (``torch.load(weights_only=True)``: no code in the file runs),
and a damaged, truncated or malicious file stops the command with one line,
``iit: error: ... is damaged or unsafe and was not loaded: ...``. Called from Python,
:func:`main` raises the :class:`iit.IITError` instead (the original error chained).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.cli import LightningCLI

from iit.errors import DamagedFileError, IITError, MissingFileError
from iit.training.data import CounterfactualDataModule
from iit.training.metrics import InterchangeAccuracy
from iit.training.module import IITModule

__all__ = ["IITTrainer", "IITCLI", "main", "evaluate_alignment", "format_table", "read_checkpoint"]

# ckpt_path values that name a checkpoint Lightning finds itself (not a file path).
_LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by ``iit fit`` without running any code stored in it.

    Args:
        path: the ``.ckpt`` file.

    Returns:
        The checkpoint dictionary (with a ``"state_dict"`` entry).

    Raises:
        MissingFileError: ``path`` does not exist.
        DamagedFileError: the file is truncated, not a torch checkpoint, holds objects other
            than tensors and plain containers (a pickle with code: refused, not run), or has no
            ``state_dict``; the original error is chained.
    """
    if not Path(path).is_file():
        raise MissingFileError(f"no checkpoint file {str(path)!r}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError (bad zip), EOFError, ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DamagedFileError(
            f"checkpoint {str(path)!r} is damaged or unsafe and was not loaded "
            f"({type(err).__name__}: {first}); use a checkpoint written by `iit fit`"
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise DamagedFileError(
            f"checkpoint {str(path)!r} was not loaded: it holds no 'state_dict' (not a checkpoint "
            "written by `iit fit`)"
        )
    return checkpoint


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
            ckpt_path: a checkpoint written by ``iit fit`` (read with :func:`read_checkpoint`).
            alignment: the name of another alignment hypothesis of the task.

        Raises:
            MissingFileError, DamagedFileError: see :func:`read_checkpoint`.
        """
        if ckpt_path is not None:
            model.load_state_dict(read_checkpoint(ckpt_path)["state_dict"])
        results = evaluate_alignment(model, datamodule, alignment)
        name = alignment or model.config.alignment
        print(f"task {model.task.name!r}, alignment {name!r}:")
        print((model.task.alignment(model.causal_model, name)).describe())
        print(format_table({name: results}))
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
        """``Trainer.fit``; a ``ckpt_path`` file is first checked with :func:`read_checkpoint`
        and then restored by Lightning with ``weights_only=True``.

        Raises:
            MissingFileError, DamagedFileError: see :func:`read_checkpoint`.
        """
        if ckpt_path is not None and str(ckpt_path) not in _LIGHTNING_CKPT_NAMES:
            read_checkpoint(ckpt_path)
            weights_only = True
        super().fit(model, train_dataloaders, val_dataloaders, datamodule, ckpt_path, weights_only=weights_only)


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

    def parse_arguments(self, parser: Any, args: Any) -> None:
        """Parse, then check a ``--ckpt_path`` file with :func:`read_checkpoint` before Lightning
        (or anything else) reads it.

        Raises:
            MissingFileError, DamagedFileError: see :func:`read_checkpoint`.
        """
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path is not None and str(ckpt_path) not in _LIGHTNING_CKPT_NAMES:
            read_checkpoint(ckpt_path)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        torch.set_num_threads(max(1, int(config.get("threads", 1))))


def main(args: list[str] | None = None) -> None:
    """Console entry point ``iit``.

    Args:
        args: command-line arguments; ``None`` reads ``sys.argv`` (the console script).

    Raises:
        IITError: any library error, when called with ``args`` (from Python). From the console
            (``args=None``) it is printed as one line, ``iit: error: <message>``, and the
            process exits with status 2.
    """
    try:
        IITCLI(
            IITModule,
            CounterfactualDataModule,
            trainer_class=IITTrainer,
            args=args,
            save_config_kwargs={"overwrite": True},
        )
    except IITError as err:
        if args is not None:
            raise
        print(f"iit: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
