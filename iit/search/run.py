"""`search`: sweep places x featurizer methods x sizes for one causal variable.

```python
problem = SearchProblem(Interventionable(net), causal_model, "S", encode_inputs)
splits = CounterfactualSplits.generate(causal_model, "S", (2048, 512, 1024))
result = search(problem, splits, module_places(["layers.0", "layers.1"]),
                [DAS(), PCA(), neurons()], sizes=[1, 2, 4, 8], out_dir="runs/search")
result.table                      # one row per cell: IIA with 95% interval, controls
result.smallest_size(0.02, "das") # the smallest size within 0.02 of the best
```

Cells run in this process by default, or on a Ray cluster (``executor=RayExecutor(...)``,
`iit.search.distributed`) with identical results. With ``out_dir`` every finished cell is
written to ``out_dir/cells/`` (its row as JSON, its intervention as safetensors) and skipped
when the search is run again.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from iit.errors import AlignmentError, ArgumentError
from iit.interventions import Intervention
from iit.search.cells import Cell, SearchSettings, frozen, run_cell
from iit.search.data import PlaceData, collect_place
from iit.search.manifest import check_manifest, search_manifest
from iit.search.methods import Method
from iit.search.problem import CounterfactualSplits, Place, SearchProblem
from iit.search.results import SearchResult

__all__ = ["search", "CellStore", "Executor", "plan_cells", "run_one"]


class CellStore:
    """Finished cells on disk: ``<dir>/cells/<key>.json`` (the row) and ``<key>.safetensors``
    (the scored intervention, when it can be saved).

    Args:
        directory: the search's ``out_dir`` (``cells/`` is made inside it).

    Raises:
        OSError: the folder cannot be made (e.g. a file of that name exists, no permission).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory) / "cells"
        self.directory.mkdir(parents=True, exist_ok=True)

    def has(self, key: str) -> bool:
        """Whether the cell ``key`` is finished (its row is on disk).

        Args:
            key: the cell's key (`iit.search.Cell.key`).
        """
        return (self.directory / f"{key}.json").exists()

    def row(self, key: str) -> dict[str, Any]:
        """The stored row of cell ``key``.

        Args:
            key: the cell's key.

        Raises:
            FileNotFoundError: the cell is not finished.
            json.JSONDecodeError: a damaged row file.
        """
        return json.loads((self.directory / f"{key}.json").read_text())

    def intervention_path(self, key: str) -> Path:
        """Where cell ``key``'s intervention is (or would be) stored.

        Args:
            key: the cell's key.
        """
        return self.directory / f"{key}.safetensors"

    def save(self, key: str, row: dict[str, Any], intervention_bytes: bytes | None) -> None:
        """Write atomically: the intervention first, the row (which marks the cell done) last."""
        if intervention_bytes is not None:
            _atomic_write(self.intervention_path(key), intervention_bytes)
        _atomic_write(self.directory / f"{key}.json", json.dumps(row, sort_keys=True).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def intervention_to_bytes(intervention: Intervention) -> bytes | None:
    """The intervention as a safetensors file's bytes (``None`` if it cannot be saved)."""
    from iit.errors import InterventionError
    from iit.serialization import save_interventions

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cell.safetensors"
        try:
            save_interventions(path, {"cell": intervention})
        except InterventionError:
            return None
        return path.read_bytes()


def plan_cells(places: Sequence[Place], methods: Sequence[Method], sizes: Sequence[int]) -> list[Cell]:
    """Every (place, method, size), in that nesting order.

    Raises:
        ArgumentError: nothing to sweep, repeated place or method names, or sizes < 1.
    """
    if not places or not methods or not sizes:
        raise ArgumentError(f"a search needs places, methods and sizes; got {len(places)}, {len(methods)}, {len(sizes)}")
    for what, names in (("place", [p.name for p in places]), ("method", [m.name for m in methods])):
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ArgumentError(f"{what} names must be unique; repeated: {dup}")
    bad = [s for s in sizes if isinstance(s, bool) or not isinstance(s, int) or s < 1]
    if bad or len(set(sizes)) != len(sizes):
        raise ArgumentError(f"sizes must be distinct ints >= 1, got {list(sizes)}")
    return [Cell(p, m, s) for p in places for m in methods for s in sizes]


def check_places(problem: SearchProblem, splits: CounterfactualSplits, places: Sequence[Place]) -> None:
    """Resolve every place's coordinate on two training bases (module names first, without a
    forward; then one forward reading all places, which checks their indices), so that a bad
    place fails before the first cell runs.

    Raises:
        CoordinateError: a place whose module does not exist (the nearest names listed) or whose
            index does not fit the hidden state.
    """
    example = problem.encode_inputs(splits.train.select(torch.arange(min(2, len(splits.train)))).base)
    for place in places:
        problem.model.check_coordinate(place.coordinate, example)
    with torch.no_grad():
        problem.model.collect(example, [p.coordinate for p in places])


def run_one(
    problem: SearchProblem, splits: CounterfactualSplits, cell: Cell, settings: SearchSettings, data: PlaceData | None = None
) -> tuple[dict[str, Any] | None, bytes | None, str | None, PlaceData]:
    """Run one cell from scratch (what an executor does): ``(row, intervention bytes, skip
    reason, place data)``; the row is ``None`` when the cell is skipped.

    Args:
        problem: the search problem.
        splits: the counterfactual splits.
        cell: the cell to run.
        settings: settings shared by every cell.
        data: the place data of the previous cell, reused when the place is the same.

    Raises:
        InterventionError: a method that cannot build its intervention at the place.
        CoordinateError: a place whose coordinate does not fit the model.
    """
    with frozen(problem, settings.threads):
        if data is None or data.place != cell.place:
            data = collect_place(problem, splits, cell.place, settings.fit.eval_batch_size)
        largest = cell.method.max_size(data)
        if cell.size > largest:
            reason = f"{cell.key(problem.variable)}: size {cell.size} > {largest} features at {cell.place.name}"
            return None, None, reason, data
        row, intervention = run_cell(problem, data, cell, settings)
    return row, intervention_to_bytes(intervention), None, data


class Executor(Protocol):
    """Runs cells and yields ``(cell, row, intervention bytes, skip reason)`` as they finish.

    Raises:
        TypeError: instantiating the protocol itself (write a class with a `run` method, e.g.
            `iit.search.distributed.RayExecutor`).
    """

    def run(self, problem: SearchProblem, splits: CounterfactualSplits, cells: Sequence[Cell], settings: SearchSettings) -> Any:
        """Run ``cells``, yielding ``(cell, row, intervention bytes, skip reason)`` per cell.

        Args:
            problem: the search problem.
            splits: the counterfactual splits.
            cells: the cells to run.
            settings: settings shared by every cell.
        """
        ...


class InProcess:
    """Run cells one after the other here, collecting each place's data once."""

    def run(self, problem: SearchProblem, splits: CounterfactualSplits, cells: Sequence[Cell], settings: SearchSettings) -> Any:
        data: PlaceData | None = None
        for cell in cells:
            row, blob, reason, data = run_one(problem, splits, cell, settings, data)
            yield cell, row, blob, reason


def search(
    problem: SearchProblem,
    splits: CounterfactualSplits,
    places: Sequence[Place],
    methods: Sequence[Method],
    sizes: Sequence[int],
    settings: SearchSettings | None = None,
    *,
    out_dir: str | Path | None = None,
    executor: Executor | None = None,
    progress: bool = True,
) -> SearchResult:
    """Sweep ``places x methods x sizes`` for ``problem.variable``.

    Each cell is fitted on ``splits.train`` (trainable methods), selected on
    ``splits.validation`` (best epoch) and scored on ``splits.test``: IIA with a Wilson
    interval, IIA on impactful pairs, and two matched controls (a random orthonormal subspace
    of the same size; the method's untrained intervention).

    Args:
        problem: model, causal model, variable, input encoding, output decoding.
        splits: counterfactual pairs intervening on ``problem.variable``.
        places: coordinate sets (`iit.search.module_places`,
            `iit.search.transformer_places`).
        methods: featurizer methods (`iit.search.DAS`, `iit.search.PCA`,
            `iit.search.neurons`, `iit.search.sae`).
        sizes: feature counts per cell (larger than a place allows: skipped and listed).
        settings: fitting settings and the seed (the same seed gives the same table).
        out_dir: keep finished cells there and skip them on a rerun; ``out_dir/manifest.json``
            records what they were computed from (model weights, splits, settings, variable,
            place coordinates, method configs) and a rerun with other ones is refused.
        executor: where cells run (default: this process;
            `iit.search.distributed.RayExecutor` for a Ray cluster).
        progress: show a progress bar over cells.

    Returns:
        `iit.search.SearchResult` (rows in cell order).

    Raises:
        AlignmentError: splits for another variable.
        ArgumentError: an empty / repeated sweep or bad sizes.
        ManifestMismatchError: ``out_dir`` holds cells of a search with other settings, splits,
            model weights, variable, or another coordinate / config under a place / method name.
        CoordinateError: a place that does not resolve on the model (checked before any cell runs).
    """
    settings = settings or SearchSettings()
    if splits.variable != problem.variable:
        raise AlignmentError(f"the splits intervene on {splits.variable!r} but the search is for {problem.variable!r}")
    cells = plan_cells(places, methods, sizes)
    check_places(problem, splits, places)
    if out_dir is not None:
        check_manifest(out_dir, search_manifest(problem, splits, places, methods, settings))
    store = CellStore(out_dir) if out_dir is not None else None
    keys = [c.key(problem.variable) for c in cells]
    rows: dict[str, dict[str, Any]] = {}
    blobs: dict[str, bytes | None] = {}
    skipped: list[str] = []
    pending = [c for c, k in zip(cells, keys) if store is None or not store.has(k)]
    for k in keys:
        if store is not None and store.has(k):
            rows[k] = store.row(k)
    bar = tqdm(total=len(cells), initial=len(cells) - len(pending), desc=f"search {problem.variable}", disable=not progress)
    try:
        for cell, row, blob, reason in (executor or InProcess()).run(problem, splits, pending, settings):
            key = cell.key(problem.variable)
            if row is None:
                skipped.append(reason or key)
            else:
                rows[key], blobs[key] = row, blob
                if store is not None:
                    store.save(key, row, blob)
            bar.update(1)
            bar.set_postfix_str(key, refresh=False)
    finally:
        bar.close()
    interventions = _load_interventions(problem, [k for k in keys if k in rows], blobs, store)
    table = SearchResult.table_from_rows([rows[k] for k in keys if k in rows])
    return SearchResult(table, interventions, skipped)


def _load_interventions(
    problem: SearchProblem, keys: list[str], blobs: dict[str, bytes | None], store: CellStore | None
) -> dict[str, Intervention]:
    from iit.serialization import load_interventions

    out: dict[str, Intervention] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in keys:
            if store is not None and store.intervention_path(key).exists():
                path = store.intervention_path(key)
            elif blobs.get(key) is not None:
                path = Path(tmp) / f"{key}.safetensors"
                path.write_bytes(blobs[key])  # type: ignore[arg-type]
            else:
                continue
            out[key] = load_interventions(path, problem.model)["cell"].eval()
    return out
