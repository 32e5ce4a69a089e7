"""FFOOM sanity check: gradient-graph entropy vs MLP size (paper appendix B.1).

    python -m tasks.semiring.ffoom [--hidden 4 16 64] [--points 2000]

Trains ReLU MLPs ``4 -> h -> h -> 2`` of growing width on "four features, only one matters"
and computes the gradient-graph entropy (expectation semiring, one backward pass) of the
predicted logit w.r.t. each input feature on test points. Prints, per width: test accuracy,
mean entropy of the relevant feature 0 and of the irrelevant features 1-3, and ``log(h^2)``,
the entropy of ``h^2`` equally weighted paths (the maximum for one input feature).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import torch
from torch import nn

from iit.semiring import gradient_graph_entropy
from tasks.semiring.common import TrainConfig, accuracy, train_classifier
from tasks.semiring.data import ffoom, split


@dataclass(frozen=True)
class Row:
    hidden: int
    params: int
    test_accuracy: float
    entropy_relevant: float
    entropy_irrelevant: float
    max_entropy: float


def mlp(hidden: int, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2)
    )


def run(
    hidden: tuple[int, ...] = (4, 16, 64), points: int = 2000, epochs: int = 15, seed: int = 0
) -> list[Row]:
    """Train one MLP per width and measure entropies; returns one row per width."""
    torch.set_num_threads(2)
    x, y = ffoom(points, seed=seed)
    train, _, test = split(points, seed=seed)
    rows = []
    for h in hidden:
        model = mlp(h, seed)
        train_classifier(
            model,
            list(model.parameters()),
            x[train],
            y[train],
            TrainConfig(epochs=epochs, lr=1e-2, seed=seed),
        )
        model.eval()
        xt = x[test][:200].double()
        model.double()
        pred = model(xt).argmax(-1)
        ent = gradient_graph_entropy(model, xt, pred)["input"]  # [200, 4]
        rows.append(
            Row(
                hidden=h,
                params=sum(p.numel() for p in model.parameters()),
                test_accuracy=accuracy(model, x[test].double(), y[test]),
                entropy_relevant=float(ent[:, 0].mean()),
                entropy_irrelevant=float(ent[:, 1:].mean()),
                max_entropy=math.log(h * h),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args(argv)
    rows = run(tuple(args.hidden), args.points, args.epochs)
    print(f"{'hidden':>6} {'params':>6} {'acc':>6} {'H(x0)':>7} {'H(x1-3)':>8} {'log h^2':>8}")
    for r in rows:
        print(f"{r.hidden:>6} {r.params:>6} {r.test_accuracy:>6.3f} {r.entropy_relevant:>7.3f} "
              f"{r.entropy_irrelevant:>8.3f} {r.max_entropy:>8.3f}")  # fmt: skip
    grows = all(a.entropy_relevant < b.entropy_relevant for a, b in zip(rows, rows[1:]))
    print(f"finding: entropy of the relevant feature grows with model size: {grows}")
    return rows


if __name__ == "__main__":
    main()
