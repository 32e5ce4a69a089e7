"""Read Lightning CSV logs and plot IIA over epochs."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

__all__ = ["read_epoch_metrics", "plot_history"]


def read_epoch_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a Lightning ``metrics.csv`` that carry validation metrics, one per epoch, as
    ``{metric: value}`` (empty cells dropped).

    Args:
        path: the ``metrics.csv`` a ``CSVLogger`` wrote.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a cell that is not a number.
    """
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            values = {k: float(v) for k, v in row.items() if v not in ("", None)}
            if any(k.startswith("val/") for k in values):
                rows.append(values)
    return rows


def plot_history(
    runs: Mapping[str, str | Path], path: str | Path, metrics: tuple[str, ...] | None = None
) -> Path:
    """Plot validation IIA (overall and per variable) and task accuracy over epochs for several
    runs, one panel per metric; save to ``path`` (PNG or SVG) and return it.

    Args:
        runs: ``{run name: path of its metrics.csv}``.
        path: the image file to write.
        metrics: which ``val/...`` columns (default: task accuracy, IIA and per-variable IIA).

    Returns:
        ``path``.

    Raises:
        FileNotFoundError: a run's ``metrics.csv`` does not exist.
        ValueError: a cell that is not a number, or an image suffix matplotlib cannot write.
    """
    from matplotlib.figure import (
        Figure,  # no pyplot: the caller's backend and figures are left alone
    )

    histories = {name: read_epoch_metrics(p) for name, p in runs.items()}
    if metrics is None:
        found = {k for rows in histories.values() for row in rows for k in row}
        metrics = tuple(
            ["val/task_acc", "val/iia"]
            + sorted(k for k in found if k.startswith("val/iia/") and not k.endswith("/impactful"))
        )
    fig = Figure(figsize=(3.2 * len(metrics), 3))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, rows in histories.items():
            points = [(r.get("epoch", i), r[metric]) for i, r in enumerate(rows) if metric in r]
            if points:
                ax.plot([p[0] + 1 for p in points], [p[1] for p in points], marker="o", label=name)
        ax.set_title(metric.removeprefix("val/"))
        ax.set_xlabel("epoch")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
