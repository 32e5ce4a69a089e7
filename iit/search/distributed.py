"""Run a search's cells on a Ray cluster (optional extra ``ray``).

```python
import ray
ray.init(address="auto")          # or ray.init(num_cpus=2) for a local one
result = search(problem, splits, places, methods, sizes, executor=RayExecutor())
```

Each cell is one Ray task: the problem and the splits are put in the object store once; a task
collects its place's activations, fits and scores its cell exactly as
`iit.search.run.run_one` does in process (same per-cell seed, same thread count), and returns
its row and its intervention's safetensors bytes. The driver writes finished cells to
``out_dir`` as they arrive, so an interrupted distributed search resumes like a local one, and
the table equals the in-process table.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from iit.errors import ArgumentError
from iit.search.cells import Cell, SearchSettings
from iit.search.problem import CounterfactualSplits, SearchProblem
from iit.search.run import run_one

__all__ = ["RayExecutor"]


def _remote_cell(
    problem: SearchProblem, splits: CounterfactualSplits, cell: Cell, settings: SearchSettings
) -> tuple[dict[str, Any] | None, bytes | None, str | None]:
    row, blob, reason, _ = run_one(problem, splits, cell, settings)
    return row, blob, reason


class RayExecutor:
    """Fan cells out over Ray.

    Args:
        address: passed to ``ray.init(address=...)`` when Ray is not initialised yet
            (``None``: start a local Ray; ``"auto"``: join the running cluster).
        cpus_per_cell: CPUs Ray reserves per cell task (match ``SearchSettings.threads``).

    Raises:
        ImportError: Ray is not installed (``pip install iit[ray]``).
        ArgumentError: ``cpus_per_cell <= 0``.
    """

    def __init__(self, address: str | None = None, *, cpus_per_cell: float = 1.0) -> None:
        try:
            import ray  # noqa: F401
        except ImportError as err:
            raise ImportError("RayExecutor needs Ray: pip install 'iit[ray]'") from err
        if cpus_per_cell <= 0:
            raise ArgumentError(f"cpus_per_cell must be > 0, got {cpus_per_cell}")
        self.address, self.cpus_per_cell = address, cpus_per_cell

    def run(
        self, problem: SearchProblem, splits: CounterfactualSplits, cells: Sequence[Cell], settings: SearchSettings
    ) -> Iterator[tuple[Cell, dict[str, Any] | None, bytes | None, str | None]]:
        """Submit every cell, then yield ``(cell, row, intervention bytes, skip reason)`` as
        tasks finish.

        Args:
            problem: the search problem (put in Ray's object store once).
            splits: the counterfactual splits (put in the object store once).
            cells: the cells to run.
            settings: settings shared by every cell.

        Raises:
            ConnectionError: (from Ray) no cluster at ``address``.
        """
        import ray

        if not cells:
            return
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        task = ray.remote(num_cpus=self.cpus_per_cell, max_retries=1)(_remote_cell)
        problem_ref, splits_ref = ray.put(problem), ray.put(splits)
        pending = {task.remote(problem_ref, splits_ref, cell, settings): cell for cell in cells}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    cell = pending.pop(ref)
                    row, blob, reason = ray.get(ref)
                    yield cell, row, blob, reason
        finally:
            for ref in pending:  # stopped early (error, interrupt): cancel what is left
                ray.cancel(ref, force=True)
