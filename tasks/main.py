"""The main job: train the default task with IIT and with behaviour-only training, side by side,
and print task accuracy and IIA per variable for both (plus a plot of IIA over epochs).

    python -m tasks.main [--task digit_sum_mlp] [--epochs 10] [--out runs/main]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytorch_lightning as pl
import torch

from iit.training import (
    CounterfactualDataModule,
    IITConfig,
    IITModule,
    evaluate_alignment,
    format_table,
    make_trainer,
)
from iit.training.report import plot_history
from tasks.registry import TASKS


def train(task_name: str, config: IITConfig, epochs: int, out: Path, run_name: str) -> dict[str, float]:
    """Train one run and return its held-out metrics."""
    spec = TASKS[task_name]
    pl.seed_everything(spec.seed, verbose=False)
    task = spec.make()
    module = IITModule(task, config)
    data = CounterfactualDataModule(task, spec.train_size, spec.val_size, spec.batch_size, seed=spec.seed)
    logger = pl.loggers.CSVLogger(str(out), name=run_name, version="")
    trainer = make_trainer(task, max_epochs=epochs, root=out, logger=logger, checkpointing=False)
    trainer.fit(module, data)
    return evaluate_alignment(module, data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digit_sum_mlp", choices=sorted(TASKS))
    parser.add_argument("--epochs", type=int, default=None, help="default: the task's own")
    parser.add_argument("--out", type=Path, default=Path("runs/main"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = TASKS[args.task]
    epochs = args.epochs or spec.epochs
    results = {
        "IIT": train(args.task, spec.config, epochs, args.out, "iit"),
        spec.baseline_name: train(args.task, spec.behaviour_config(), epochs, args.out, "baseline"),
    }
    variables = spec.make().candidate_variables()
    columns = ["task_acc"] + [f"iia/{v}" for v in variables] + ["iia", "iia_impactful"]
    if any("strict_acc" in r for r in results.values()):
        columns.append("strict_acc")
    name = "IIT" if spec.config.strict_weight == 0 else "strict IIT"
    results = {name if k == "IIT" else k: v for k, v in results.items()}
    print(f"\nTask {args.task!r}: held-out accuracy and interchange intervention accuracy (IIA)")
    print(format_table(results, columns))
    figure = plot_history(
        {"IIT": args.out / "iit" / "metrics.csv", spec.baseline_name: args.out / "baseline" / "metrics.csv"},
        args.out / "iia_over_epochs.png",
    )
    print(f"\nIIA over epochs: {figure}")


if __name__ == "__main__":
    main()
