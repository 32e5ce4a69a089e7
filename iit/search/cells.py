"""One cell of a search: a (place, featurizer method, size) fitted on the training pairs,
selected on validation, scored on the held-out test pairs with its matched controls."""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from iit.featurizers import FeatureInterchange, RotationFeaturizer
from iit.interventions import Intervention
from iit.search.data import PlaceData, SplitData
from iit.search.fitting import FitSettings, correct_rows, fit_intervention
from iit.search.methods import Method
from iit.search.problem import Place, SearchProblem
from iit.search.stats import wilson_interval

__all__ = ["Cell", "SearchSettings", "run_cell", "frozen"]


@dataclass(frozen=True)
class SearchSettings:
    """Settings shared by every cell.

    Attributes:
        fit: how trainable cells are fitted (`iit.search.fitting.FitSettings`).
        seed: the one seed; each cell derives its own from it and its key.
        confidence: coverage of the reported intervals.
        threads: torch threads while a cell runs (1 keeps results identical across machines
            and workers).

    Raises:
        TypeError: an unknown field (the fit settings check themselves: `ArgumentError`).
    """

    fit: FitSettings = field(default_factory=FitSettings)
    seed: int = 0
    confidence: float = 0.95
    threads: int = 1


@dataclass(frozen=True)
class Cell:
    """One (place, method, size) of the sweep.

    Attributes:
        place: where.
        method: how the intervention is built (and trained).
        size: the cell's size ``k``.

    Raises:
        TypeError: a missing or unknown field.
    """

    place: Place
    method: Method
    size: int

    def key(self, variable: str) -> str:
        """A file-safe key, unique within a search: ``<variable>__<place>__<method>__k<size>``.

        Args:
            variable: the searched causal variable.
        """
        return f"{variable}__{self.place.name}__{self.method.name}__k{self.size}"


@contextlib.contextmanager
def frozen(problem: SearchProblem, threads: int) -> Iterator[None]:
    """Freeze the model (``requires_grad=False``, eval mode) and set torch's thread count; all
    restored on exit, also after an exception.

    Args:
        problem: the search problem whose wrapped model is frozen.
        threads: torch threads inside the block.

    Raises:
        RuntimeError: (from torch) ``threads < 1``.
    """
    model = problem.model.model
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    old_threads = torch.get_num_threads()
    try:
        model.requires_grad_(False)
        model.eval()
        torch.set_num_threads(threads)
        yield
    finally:
        torch.set_num_threads(old_threads)
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


def _score(prefix: str, correct: torch.Tensor, impactful: torch.Tensor, confidence: float) -> dict[str, Any]:
    n, ok = len(correct), int(correct.sum())
    low, high = wilson_interval(ok, n, confidence)
    row: dict[str, Any] = {f"{prefix}": ok / n, f"{prefix}_low": low, f"{prefix}_high": high}
    n_imp = int(impactful.sum())
    row[f"{prefix}_impactful"] = int((correct & impactful).sum()) / n_imp if n_imp else float("nan")
    return row


def cell_seed(seed: int, key: str) -> int:
    """The cell's own seed (stable across processes and machines)."""
    return zlib.crc32(f"{seed}|{key}".encode()) & 0x7FFFFFFF


def run_cell(
    problem: SearchProblem, data: PlaceData, cell: Cell, settings: SearchSettings
) -> tuple[dict[str, Any], Intervention]:
    """Fit, select and score one cell; call inside `frozen`.

    Args:
        problem: the search problem (model, causal model, variable, encodings).
        data: the place's collected splits.
        cell: the cell to run.
        settings: settings shared by every cell.

    Returns:
        ``(row, scored intervention)``: the row has the place labels, ``featurizer``, ``size``,
        ``d``, ``iia_val``, ``iia_test`` with ``_low`` / ``_high`` (Wilson interval) and
        ``_impactful``, ``control_random`` (a random orthonormal subspace of the same size) and
        ``control_untrained`` (the method's intervention before training; NaN when nothing is
        trained), each with interval, plus ``n_test``, ``n_test_impactful``, ``best_epoch``,
        ``seconds``.

    Raises:
        InterventionError: a size the method cannot build at this place (e.g. larger than
            ``d``), an unknown mask kind, a place without an SAE.
        InterventionShapeError: a built intervention whose width does not fit the place's
            hidden state.
    """
    key = cell.key(problem.variable)
    seed = cell_seed(settings.seed, key)
    start = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        method, size = cell.method, cell.size
        untrained = method.final(method.build(data, size, torch.Generator().manual_seed(seed)), size)
        built = method.build(data, size, torch.Generator().manual_seed(seed))
        info: dict[str, Any] = {"best_epoch": -1}
        if method.trainable:
            scored, info = fit_intervention(
                problem, built, data, settings.fit, torch.Generator().manual_seed(seed + 1),
                final=lambda iv: method.final(iv, size),
            )
        else:
            scored = method.final(built, size)
        random_subspace = FeatureInterchange(
            data.place.coordinate, RotationFeaturizer(data.d, size, generator=torch.Generator().manual_seed(seed + 2)), range(size)
        )
        test: SplitData = data.test
        batch = settings.fit.eval_batch_size
        val_ok = correct_rows(problem, scored, data.validation, batch)
        row: dict[str, Any] = {
            "variable": problem.variable, "place": data.place.name, "layer": data.place.layer,
            "component": data.place.component, "position": data.place.position, "head": data.place.head,
            "featurizer": method.name, "size": size, "d": data.d, "iia_val": float(val_ok.float().mean()),
        }
        row.update(_score("iia_test", correct_rows(problem, scored, test, batch), test.impactful, settings.confidence))
        row.update(_score("control_random", correct_rows(problem, random_subspace, test, batch), test.impactful, settings.confidence))
        if method.trainable:
            row.update(_score("control_untrained", correct_rows(problem, untrained, test, batch), test.impactful, settings.confidence))
        else:
            row.update({k: float("nan") for k in ("control_untrained", "control_untrained_low", "control_untrained_high", "control_untrained_impactful")})
    row.update({"n_test": len(test), "n_test_impactful": int(test.impactful.sum()), "best_epoch": info["best_epoch"],
                "seed": seed, "seconds": time.perf_counter() - start})
    return row, scored
