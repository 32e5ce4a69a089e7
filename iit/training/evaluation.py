"""Evaluate an alignment hypothesis on a trained network: IIA per variable on held-out pairs,
from Python or the command line (``iit evaluate``), with one table format for both.

    module = load_module("runs/digit_sum_mlp/version_0/checkpoints/last.ckpt", DigitSumMLP())
    data = CounterfactualDataModule(DigitSumMLP())
    print(format_table({"trained": evaluate_alignment(module, data),
                        "elsewhere": evaluate_alignment(module, data, "S_elsewhere")}))
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from iit.alignment import Alignment
from iit.errors import ArgumentTypeError, DamagedFileError
from iit.training.checkpoints import read_checkpoint
from iit.training.data import CounterfactualDataModule
from iit.training.metrics import InterchangeAccuracy
from iit.training.module import IITConfig, IITModule
from iit.training.task import IITTask

__all__ = ["evaluate_alignment", "format_intervals", "format_table", "load_module"]

AlignmentSpec = str | Alignment | Mapping[str, Any] | None


def load_module(checkpoint: str | Path, task: IITTask) -> IITModule:
    """An `IITModule` for ``task`` with the weights (and learned interventions) of a
    checkpoint written by a fit, built with the checkpoint's `IITConfig`.

    Raises:
        MissingFileError: no such checkpoint.
        DamagedFileError: the file is damaged, unsafe or not an IIT checkpoint (no ``"iit"``
            entry); it is not loaded.
        RuntimeError: the checkpoint's weights do not fit ``task``'s network.
    """
    state = read_checkpoint(checkpoint)
    if "iit" not in state:
        raise DamagedFileError(
            f"checkpoint {str(checkpoint)!r} was not loaded: it is not an IIT checkpoint (no 'iit' "
            f"entry; keys {sorted(state)}); use a checkpoint written by an IIT fit"
        )
    fields = set(IITConfig.__dataclass_fields__)
    config = IITConfig(**{k: v for k, v in state["iit"]["config"].items() if k in fields})
    module = IITModule(task, config)
    module.load_state_dict(state["state_dict"])
    return module


def _as_module(model: IITModule | nn.Module | str | Path, task: IITTask) -> IITModule:
    if isinstance(model, IITModule):
        return model
    if isinstance(model, (str, Path)):
        return load_module(model, task)
    if isinstance(model, nn.Module):
        return IITModule(task, network=model)
    raise ArgumentTypeError(f"model must be an IITModule, an nn.Module or a checkpoint path, got {type(model).__name__}")


def _as_alignment(module: IITModule, alignment: AlignmentSpec) -> Alignment | None:
    if alignment is None:
        return None
    if isinstance(alignment, str):
        return module.task.alignment(module.causal_model, alignment)
    if isinstance(alignment, Alignment):
        return alignment
    if isinstance(alignment, Mapping):
        return Alignment(module.causal_model, alignment, output=module.output_variable)
    raise ArgumentTypeError(
        f"alignment must be a name, an Alignment or a {{variable: coordinates}} mapping, got {type(alignment).__name__}"
    )


def evaluate_alignment(
    model: IITModule | nn.Module | str | Path,
    data: CounterfactualDataModule,
    alignment: AlignmentSpec = None,
) -> dict[str, float]:
    """IIA of a network on the held-out pairs of ``data``, overall and per variable, under the
    trained alignment or any other hypothesis.

    Args:
        model: a trained `IITModule`, a plain network for ``data.task`` (wrapped by the
            task), or the path of a checkpoint (loaded with `load_module`).
        data: supplies the task and the held-out pairs (``val_dataloader``).
        alignment: ``None`` (the module's own), the name of one of the task's alignments, an
            `iit.Alignment`, or a ``{variable: coordinates}`` mapping.

    Returns:
        ``{"task_acc", "iia", "iia_impactful", "impactful_fraction", "iia/<var>",
        "iia/<var>/impactful", "strict_acc"?}`` as floats (``iia*`` only when the pairs'
        variables are all aligned), and the number of examples behind each rate (for confidence
        intervals, `format_intervals`): ``"n/task_acc"``, ``"n/iia/<var>"``,
        ``"n/iia/<var>/impactful"``.

    Raises:
        AlignmentError, CoordinateError: an unknown alignment name, or one that does not fit.
        TypeError: ``model`` or ``alignment`` of another type.
    """
    module = _as_module(model, data.task)
    hypothesis = _as_alignment(module, alignment)
    if hypothesis is not None:
        module.task.check(module.network, module.causal_model, hypothesis, for_training=False)
    data.setup("validate")
    variables = (hypothesis or module.alignment).variables
    overall, per_var = InterchangeAccuracy(), {v: InterchangeAccuracy() for v in variables}
    task_ok, strict_ok = [], []
    was_training = module.training
    module.eval()
    try:
        for batch in data.val_dataloader():
            result = module.evaluate_batch(batch.to(module.device), hypothesis)
            task_ok.append(result["task_correct"])
            if result["correct"] is not None:
                overall.update(result["correct"], result["impactful"])
            for v, (ok, imp) in result["by_variable"].items():
                per_var[v].update(ok, imp)
            if result["strict"] is not None:
                strict_ok.append(result["strict"].float().mean(0))
    finally:
        module.train(was_training)
    task_correct = torch.cat(task_ok)
    out = {"task_acc": float(task_correct.float().mean()), "n/task_acc": float(task_correct.numel())}
    if overall.total > 0:
        out.update({k: float(v) for k, v in overall.compute().items()})
    for v, metric in per_var.items():
        values = metric.compute()
        out[f"iia/{v}"] = float(values["iia"])
        out[f"iia/{v}/impactful"] = float(values["iia_impactful"])
        out[f"n/iia/{v}"] = float(metric.total)
        out[f"n/iia/{v}/impactful"] = float(metric.impactful_total)
    if strict_ok:
        out["strict_acc"] = float(torch.cat(strict_ok).mean())
    return out


def format_table(rows: Mapping[str, Mapping[str, float]], columns: list[str] | None = None) -> str:
    """A plain-text table: one row per run, one column per metric (``-`` where missing or nan).

    Args:
        rows: ``{run name: {metric: value}}``, e.g. `evaluate_alignment` results.
        columns: the metrics to show, in order (default: every metric but the counts
            ``n/<metric>``, sorted).

    Returns:
        The table as one string (a header line, a rule, one line per run).

    Raises:
        AttributeError: a row that is not a mapping of metric names.

    Examples:
        >>> print(format_table({"dev": {"iia": 0.5, "loss": float("nan")}, "test": {"iia": 0.875}}))
                     iia    loss
        ...
        dev        0.500       -
        test       0.875       -
    """
    columns = columns or sorted({k for r in rows.values() for k in r if not k.startswith("n/")})
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


def format_intervals(values: Mapping[str, float], confidence: float = 0.95) -> str:
    """``metric rate [lo, hi] (n=...)`` with the Wilson interval of every rate in an
    `evaluate_alignment` result that comes with its count ``n/<metric>``.

    Raises:
        ArgumentError: a confidence outside ``(0, 1)``.
    """
    from iit.search.stats import wilson_interval

    parts = []
    for key, n in values.items():
        if not key.startswith("n/") or n <= 0:
            continue
        metric = key[2:]
        rate = values[metric]
        lo, hi = wilson_interval(round(rate * n), int(n), confidence)
        parts.append(f"{metric} {rate:.3f} [{lo:.3f}, {hi:.3f}] (n={int(n)})")
    return "; ".join(parts)
