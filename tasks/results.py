"""Train every ready task with IIT and with its baseline, side by side, and print the markdown
results table (held-out task accuracy, IIA per variable, strict accuracy, wall time and the
command that reproduces each row).

    python -m tasks.results [--quick] [--tasks pvr_mlp hierarchical_equality_mlp] [--out runs/results]

``--quick`` trains one epoch per run (a smoke run; the figures are then not the reported ones).
The DAS layer x k sweep with confidence intervals is ``python -m tasks.das_equality``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from iit.errors import NamingError, unknown_name
from tasks.main import train
from tasks.registry import TASKS

__all__ = ["ResultRow", "run_task", "markdown_table"]


@dataclass(frozen=True)
class ResultRow:
    """One training run's held-out figures.

    Attributes:
        task: registry name.
        training: ``"IIT"``, ``"strict IIT"`` or the baseline's name.
        metrics: `iit.training.cli.evaluate_alignment`'s output.
        variables: the task's candidate variables (IIA columns).
        seconds: wall time of the run (data, training and evaluation).
        command: the command that reproduces the run.
    """

    task: str
    training: str
    metrics: Mapping[str, float]
    variables: tuple[str, ...]
    seconds: float
    command: str


def run_task(name: str, out: Path, epochs: int | None = None, baseline: bool = True) -> list[ResultRow]:
    """Train task ``name`` with its IIT settings and (when ``baseline``) with its baseline.

    Raises:
        NamingError: an unknown task name (nearest and valid names listed; also a ``KeyError``).
    """
    if name not in TASKS:
        raise NamingError(unknown_name(name, sorted(TASKS), "task"))
    spec = TASKS[name]
    epochs = epochs or spec.epochs
    variables = tuple(spec.make().candidate_variables())
    trained = "strict IIT" if spec.config.strict_weight > 0 else "DAS" if spec.config.freeze_network else "IIT"
    command = f"python -m tasks.main --task {name}"
    runs = [(trained, spec.config, "iit")]
    if baseline:
        runs.append((spec.baseline_name, spec.behaviour_config(), "baseline"))
    rows = []
    for label, config, run_name in runs:
        start = time.perf_counter()
        metrics = train(name, config, epochs, out / name, run_name)
        rows.append(ResultRow(name, label, metrics, variables, time.perf_counter() - start, command))
    return rows


def _cell(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def markdown_table(rows: Sequence[ResultRow]) -> str:
    """A markdown table, one line per run: task, training, task accuracy, IIA per variable
    (``var value`` pairs), mean IIA, strict accuracy, wall time and command."""
    lines = [
        "| task | training | task acc | IIA per variable | IIA | strict acc | wall time | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_variable = ", ".join(f"{v} {_cell(r.metrics.get(f'iia/{v}'))}" for v in r.variables)
        lines.append(
            f"| {r.task} | {r.training} | {_cell(r.metrics.get('task_acc'))} | {per_variable} | "
            f"{_cell(r.metrics.get('iia'))} | {_cell(r.metrics.get('strict_acc'))} | {r.seconds:.0f} s | "
            f"`{r.command}` |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train every task (IIT vs baseline) and print the results table")
    parser.add_argument("--tasks", nargs="+", default=sorted(TASKS), choices=sorted(TASKS))
    parser.add_argument("--quick", action="store_true", help="one epoch per run (smoke test)")
    parser.add_argument("--out", type=Path, default=Path("runs/results"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows: list[ResultRow] = []
    baselines_done: list[tuple] = []
    for name in args.tasks:
        spec = TASKS[name]
        task = spec.make()
        key = (type(task), vars(task), spec.behaviour_config(), spec.epochs, spec.train_size, spec.seed)
        new = run_task(name, args.out, 1 if args.quick else None, baseline=key not in baselines_done)
        baselines_done.append(key)  # e.g. pvr_mlp and pvr_mlp_strict share one baseline
        rows.extend(new)
        print(markdown_table(new), flush=True)
    print("\nAll tasks (held-out pairs; IIA over every pair, impactful or not):\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
