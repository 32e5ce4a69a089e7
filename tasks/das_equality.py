"""DAS on a frozen, behaviour-trained hierarchical-equality MLP (reference §2.2, task C).

1. An MLP (``emb_dim=4``, hidden 16, 3 ReLU layers) is trained on the task alone
   (`iit.training.IITModule` with ``iit_weight=0``).
2. For each layer and subspace size ``k``, the network is frozen and one shared 16 x 16 rotation
   at that layer is trained (``IITConfig(freeze_network=True, behaviour_weight=0)``) so that
   interchanging rotated dims ``[0, k)`` swaps ``WX`` and ``[k, 2k)`` swaps ``YZ``.
3. Baselines without a rotation: one neuron per variable (every neuron of the layer tried, the
   best reported: the localist alignment) and the identity basis (``WX -> [0, k)``,
   ``YZ -> [k, 2k)`` of the neurons themselves).

IIA is measured per variable on held-out pairs built from unseen entities, with 95% Wilson
intervals::

    python -m tasks.das_equality [--quick] [--out runs/das_equality]

prints the table and saves a heatmap (layer x k) of DAS IIA.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn

from iit import Coordinate, Index
from iit.alignment import AlignedTo, Alignment
from iit.errors import ArgumentError
from iit.learned import RotatedInterchange, Rotation
from iit.training import (
    CounterfactualDataModule,
    IITConfig,
    IITModule,
    evaluate_alignment,
    quiet_lightning,
)
from tasks.equality import HierarchicalEqualityMLP
from tasks.stats import wilson_interval

__all__ = [
    "DASEquality",
    "BaseNetwork",
    "SweepSettings",
    "SweepRow",
    "behaviour_trained_network",
    "localist_baseline",
    "run_sweep",
    "format_sweep",
    "plot_heatmap",
]

VARIABLES: tuple[str, str] = ("WX", "YZ")


@dataclass(frozen=True)
class BaseNetwork:
    """The behaviour-trained network DAS analyses.

    Attributes:
        emb_dim, hidden, n_layers: the MLP (published: 4, 16, 3).
        train_entities, test_entities, pool_seed: entity pools (test pool disjoint: unseen).
        epochs, train_size, batch_size, lr, seed: behaviour-only training.
    """

    emb_dim: int = 4
    hidden: int = 16
    n_layers: int = 3
    train_entities: int = 10_000
    test_entities: int = 1_000
    pool_seed: int = 0
    epochs: int = 4
    train_size: int = 60_000
    batch_size: int = 128
    lr: float = 3e-3
    seed: int = 0

    def task(self) -> HierarchicalEqualityMLP:
        """The behaviour task on these entity pools."""
        return HierarchicalEqualityMLP(
            self.emb_dim, self.hidden, self.n_layers, self.train_entities, self.test_entities, self.pool_seed
        )


@lru_cache(maxsize=4)
def behaviour_trained_network(base: BaseNetwork) -> tuple[nn.Module, float]:
    """Train (once per process and settings) the MLP on the task alone and return it with its
    accuracy on held-out inputs from unseen entities. The global RNG state is left untouched.

    Returns:
        ``(network, task accuracy)``; callers copy the network before changing it.
    """
    task = base.task()
    with torch.random.fork_rng():
        torch.manual_seed(base.seed)
        module = IITModule(task, IITConfig(iit_weight=0.0, lr=base.lr, seed=base.seed))
        data = CounterfactualDataModule(task, base.train_size, 2_000, base.batch_size, seed=base.seed)
        trainer = pl.Trainer(
            max_epochs=base.epochs,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
        )
        trainer.fit(module, data)
        accuracy = evaluate_alignment(module, data)["task_acc"]
    return module.network.model.train(), accuracy


class DASEquality(HierarchicalEqualityMLP):
    """DAS alignment of ``WX`` and ``YZ`` to rotated dims of one layer of a frozen,
    behaviour-trained equality MLP.

    Train it with ``IITConfig(freeze_network=True, behaviour_weight=0)``: only the rotation
    learns.

    Args:
        layer: the hidden layer ``layers.{layer}`` whose output is rotated.
        k: rotated dims per variable (``WX -> [0, k)``, ``YZ -> [k, 2k)``).
        rotation_seed: seeds the rotation's initialisation.
        base: the behaviour-trained network's settings.

    Raises:
        ValueError: ``layer`` outside ``[0, n_layers)`` or ``2 k > hidden``.
    """

    name = "das_equality"

    def __init__(self, layer: int = 0, k: int = 8, rotation_seed: int = 0, base: BaseNetwork | None = None) -> None:
        base = base or BaseNetwork()
        super().__init__(
            base.emb_dim, base.hidden, base.n_layers, base.train_entities, base.test_entities, base.pool_seed
        )
        if not 0 <= layer < base.n_layers:
            raise ArgumentError(f"layer must be in [0, {base.n_layers}), got {layer}")
        if not 1 <= k <= base.hidden // 2:
            raise ArgumentError(f"k must be in [1, {base.hidden // 2}] (two variables share {base.hidden} dims), got {k}")
        self.layer, self.k, self.rotation_seed, self.base = layer, k, rotation_seed, base

    def build_network(self) -> nn.Module:
        """A copy of the behaviour-trained network (trained on first use in this process)."""
        return copy.deepcopy(behaviour_trained_network(self.base)[0])

    def alignments(self) -> Mapping[str, Mapping[str, AlignedTo]]:
        """``default``: one shared rotation at ``layers.{layer}``, WX -> rotated ``[0, k)``,
        YZ -> ``[k, 2k)``; ``identity``: the same ranges of the neurons (no rotation)."""
        where = Coordinate(f"layers.{self.layer}", Index.all())
        rotation = Rotation(self.hidden, generator=torch.Generator().manual_seed(self.rotation_seed))
        k = self.k
        return {
            "default": {
                "WX": RotatedInterchange(where, rotation, (0, k)),
                "YZ": RotatedInterchange(where, rotation, (k, 2 * k)),
            },
            "identity": {
                "WX": Coordinate(f"layers.{self.layer}", Index.dims(0, k)),
                "YZ": Coordinate(f"layers.{self.layer}", Index.dims(k, 2 * k)),
            },
        }


@dataclass(frozen=True)
class SweepSettings:
    """The DAS sweep (layers and k are checked by `DASEquality` when it runs).

    Attributes:
        layers, ks: the grid (layer x rotated dims per variable).
        epochs, train_size, val_size, batch_size, lr: DAS training of each rotation.
        base: the behaviour-trained network.
        seed: data seed.

    Raises:
        ValueError: an empty grid, or non-positive sizes / learning rate.
    """

    layers: tuple[int, ...] = (0, 1, 2)
    ks: tuple[int, ...] = (2, 4, 8)
    epochs: int = 12
    train_size: int = 100_000
    val_size: int = 4_000
    batch_size: int = 2_048
    lr: float = 2e-2
    base: BaseNetwork = field(default_factory=BaseNetwork)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.layers or not self.ks:
            raise ArgumentError(f"the sweep needs at least one layer and one k, got layers={self.layers}, ks={self.ks}")
        if min(self.epochs, self.train_size, self.val_size, self.batch_size) < 1 or self.lr <= 0:
            raise ArgumentError(f"epochs, sizes and lr must be positive, got {self}")


@dataclass(frozen=True)
class SweepRow:
    """One alignment's held-out IIA per variable with 95% Wilson intervals.

    Attributes:
        method: ``"DAS"``, ``"identity basis"`` or ``"one neuron (best)"``.
        layer: the hidden layer.
        k: dims per variable (1 for one-neuron alignments).
        iia: ``{variable: IIA}``.
        interval: ``{variable: (low, high)}``.
        detail: e.g. which neuron was best.
        seconds: training time (0 when nothing was trained).
    """

    method: str
    layer: int
    k: int
    iia: dict[str, float]
    interval: dict[str, tuple[float, float]]
    detail: str = ""
    seconds: float = 0.0


def _with_interval(iia: Mapping[str, float], n: int) -> dict[str, tuple[float, float]]:
    return {v: wilson_interval(round(iia[v] * n), n) for v in iia}


def localist_baseline(module: IITModule, data: CounterfactualDataModule, layer: int) -> SweepRow:
    """Best one-neuron alignment per variable at ``layers.{layer}``: every neuron is tried for
    ``WX`` and for ``YZ`` (each variable interchanged alone) on the held-out pairs.

    Args:
        module: wraps the behaviour-trained network.
        data: its held-out pairs (``data.val_data``).
        layer: the hidden layer.
    """
    data.setup("validate")
    batch = data.val_data
    assert batch is not None
    hidden = module.task.hidden
    scores: dict[str, list[float]] = {v: [0.0] * hidden for v in VARIABLES}
    for i in range(hidden):
        neurons = {"WX": i, "YZ": (i + 1) % hidden}
        mapping = {v: Coordinate(f"layers.{layer}", Index.dims(j, j + 1)) for v, j in neurons.items()}
        result = module.evaluate_batch(batch, Alignment(module.causal_model, mapping))
        for v, j in neurons.items():
            scores[v][j] = float(result["by_variable"][v][0].float().mean())
    best = {v: max(range(hidden), key=lambda j, v=v: scores[v][j]) for v in VARIABLES}
    iia = {v: scores[v][best[v]] for v in VARIABLES}
    detail = ", ".join(f"{v}: neuron {best[v]}" for v in VARIABLES)
    return SweepRow("one neuron (best)", layer, 1, iia, _with_interval(iia, len(batch)), detail)


def run_sweep(settings: SweepSettings = SweepSettings()) -> tuple[list[SweepRow], float]:
    """Train the base network, then a DAS rotation per (layer, k), and evaluate the baselines.

    Returns:
        ``(rows, behaviour accuracy of the base network on unseen entities)``.
    """
    _, base_accuracy = behaviour_trained_network(settings.base)
    rows: list[SweepRow] = []
    data: CounterfactualDataModule | None = None
    config = IITConfig(behaviour_weight=0.0, freeze_network=True, lr=settings.lr, seed=settings.seed)
    for layer in settings.layers:
        for k in settings.ks:
            task = DASEquality(layer, k, base=settings.base)
            if data is None:
                data = CounterfactualDataModule(
                    task, settings.train_size, settings.val_size, settings.batch_size, seed=settings.seed
                )
            start = time.perf_counter()
            with torch.random.fork_rng():
                torch.manual_seed(settings.seed)
                module = IITModule(task, config)
                pl.Trainer(
                    max_epochs=settings.epochs,
                    logger=False,
                    enable_checkpointing=False,
                    enable_model_summary=False,
                    enable_progress_bar=False,
                ).fit(module, data)
            seconds = time.perf_counter() - start
            result = evaluate_alignment(module, data)
            iia = {v: result[f"iia/{v}"] for v in VARIABLES}
            rows.append(SweepRow("DAS", layer, k, iia, _with_interval(iia, settings.val_size), seconds=seconds))
        identity = evaluate_alignment(module, data, "identity")  # the last k of the layer
        iia = {v: identity[f"iia/{v}"] for v in VARIABLES}
        rows.append(SweepRow("identity basis", layer, task.k, iia, _with_interval(iia, settings.val_size)))
        rows.append(localist_baseline(module, data, layer))
    return rows, base_accuracy


def format_sweep(rows: Sequence[SweepRow], base_accuracy: float) -> str:
    """A markdown table of the sweep (IIA per variable with 95% Wilson intervals)."""
    lines = [
        f"Behaviour-trained MLP: task accuracy {base_accuracy:.3f} on unseen entities.",
        "",
        "| method | layer | k | IIA WX [95% CI] | IIA YZ [95% CI] | mean | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [f"{r.iia[v]:.3f} [{r.interval[v][0]:.3f}, {r.interval[v][1]:.3f}]" for v in VARIABLES]
        mean = sum(r.iia.values()) / len(r.iia)
        note = r.detail or (f"trained {r.seconds:.1f} s" if r.seconds else "")
        lines.append(f"| {r.method} | {r.layer} | {r.k} | {cells[0]} | {cells[1]} | {mean:.3f} | {note} |")
    return "\n".join(lines)


def plot_heatmap(rows: Sequence[SweepRow], path: str | Path) -> Path:
    """Save a heatmap of DAS IIA (mean over WX, YZ), layers x k, to ``path`` (PNG or SVG)."""
    from matplotlib.figure import (
        Figure,  # no pyplot: the caller's backend and figures are left alone
    )

    das = [r for r in rows if r.method == "DAS"]
    layers = sorted({r.layer for r in das})
    ks = sorted({r.k for r in das})
    grid = torch.full((len(layers), len(ks)), float("nan"))
    for r in das:
        grid[layers.index(r.layer), ks.index(r.k)] = sum(r.iia.values()) / len(r.iia)
    fig = Figure(figsize=(1.2 * len(ks) + 2, 0.8 * len(layers) + 1.5))
    ax = fig.subplots()
    image = ax.imshow(grid.numpy(), vmin=0.5, vmax=1.0, cmap="viridis")
    for i in range(len(layers)):
        for j in range(len(ks)):
            ax.text(j, i, f"{float(grid[i, j]):.2f}", ha="center", va="center", color="white")
    ax.set_xticks(range(len(ks)), [str(k) for k in ks])
    ax.set_yticks(range(len(layers)), [f"layers.{layer}" for layer in layers])
    ax.set_xlabel("rotated dims per variable (k)")
    ax.set_title("DAS IIA (mean of WX, YZ)")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="DAS sweep on a frozen hierarchical-equality MLP")
    parser.add_argument("--quick", action="store_true", help="layer 0 only, k in {4, 8}, fewer pairs and epochs")
    parser.add_argument("--out", type=Path, default=Path("runs/das_equality"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    quiet_lightning()
    torch.set_num_threads(args.threads)
    settings = SweepSettings()
    if args.quick:
        settings = SweepSettings(layers=(0,), ks=(4, 8), epochs=6, train_size=40_000, val_size=2_000)
    start = time.perf_counter()
    rows, accuracy = run_sweep(settings)
    print(format_sweep(rows, accuracy))
    print(f"\nheatmap: {plot_heatmap(rows, args.out / 'das_iia_heatmap.png')}")
    print(f"total time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
