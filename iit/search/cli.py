"""``python -m iit.search``: run a search described by a Python function.

    python -m iit.search tasks.das_equality_search:spec --set variable='"WX"' \\
        --out runs/search_equality --heatmap layer,size --featurizer das
    python -m iit.search tasks.das_equality_search:spec --ray auto    # on a Ray cluster

``SPEC`` is ``module:function``; the function returns a `SearchSpec` and takes keyword
arguments given with ``--set name=<JSON value>``. The table is written to ``OUT/table.csv`` and
``OUT/table.parquet``, each finished cell to ``OUT/cells/`` (a rerun skips them), the heatmap to
``OUT/heatmap_<rows>_<columns>.png``; the best cell and the smallest size within ``--margin`` of
the best are printed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from iit.errors import ArgumentError
from iit.search.cells import SearchSettings
from iit.search.methods import Method
from iit.search.problem import CounterfactualSplits, Place, SearchProblem
from iit.search.results import SearchResult
from iit.search.run import search

__all__ = ["SearchSpec", "main", "load_spec"]


@dataclass
class SearchSpec:
    """Everything `iit.search.search` needs, as returned by a spec function.

    Attributes:
        problem: the search problem.
        splits: training, validation and test pairs.
        places: where to search.
        methods: the featurizer methods.
        sizes: the cell sizes.
        settings: settings shared by every cell.

    Raises:
        TypeError: a missing or unknown field.
    """

    problem: SearchProblem
    splits: CounterfactualSplits
    places: Sequence[Place]
    methods: Sequence[Method]
    sizes: Sequence[int]
    settings: SearchSettings = field(default_factory=SearchSettings)


def load_spec(target: str, arguments: Sequence[str] = ()) -> SearchSpec:
    """Call ``module:function`` with ``name=<JSON>`` keyword arguments.

    Raises:
        ArgumentError: a malformed target or argument, or a function that does not return a
            `SearchSpec`.
    """
    if ":" not in target:
        raise ArgumentError(f"SPEC must be 'module:function', got {target!r}")
    module_name, function_name = target.split(":", 1)
    function = getattr(importlib.import_module(module_name), function_name)
    kwargs = {}
    for item in arguments:
        if "=" not in item:
            raise ArgumentError(f"--set takes name=<JSON value>, got {item!r}")
        name, value = item.split("=", 1)
        try:
            kwargs[name] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[name] = value  # a bare string
    spec = function(**kwargs)
    if not isinstance(spec, SearchSpec):
        raise ArgumentError(f"{target} returned {type(spec).__name__}, expected an iit.search.cli.SearchSpec")
    return spec


def summarise(result: SearchResult, margin: float, featurizer: str | None) -> str:
    """The best cell and the smallest size within ``margin`` of the best, as text."""
    best, small = result.best(featurizer), result.smallest_size(margin, featurizer)

    def line(what: str, row) -> str:
        return (
            f"{what}: {row['place']} {row['featurizer']} size {row['size']}: val {row['iia_val']:.3f}, "
            f"test {row['iia_test']:.3f} [{row['iia_test_low']:.3f}, {row['iia_test_high']:.3f}], "
            f"impactful {row['iia_test_impactful']:.3f}, random subspace {row['control_random']:.3f}"
        )

    return "\n".join([line("best", best), line(f"smallest within {margin}", small)])


def main(argv: list[str] | None = None) -> SearchResult:
    """Console entry point ``python -m iit.search SPEC``: run the search a spec function
    returns, save the table (CSV and Parquet) under ``--out``, print it with a summary, and
    draw a heatmap.

    Args:
        argv: command-line arguments (``None``: ``sys.argv``).

    Returns:
        The search result.

    Raises:
        SystemExit: invalid command-line arguments or ``--help`` (argparse).
        ArgumentError: a malformed spec target or ``--set`` argument.
        ImportError: ``--ray`` without Ray installed.
    """
    parser = argparse.ArgumentParser(prog="python -m iit.search", description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", help="module:function returning a SearchSpec")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=JSON", help="keyword argument of the spec function")
    parser.add_argument("--out", type=Path, default=Path("runs/search"))
    parser.add_argument("--ray", default=None, metavar="ADDRESS", help="run cells on Ray (ray.init(address=ADDRESS); 'local' starts one)")
    parser.add_argument("--heatmap", default="layer,size", help="rows,columns of the heatmap ('' for none)")
    parser.add_argument("--featurizer", default=None, help="restrict the summary and the heatmap to one featurizer")
    parser.add_argument("--margin", type=float, default=0.02)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    spec = load_spec(args.spec, args.set)
    executor = None
    if args.ray is not None:
        from iit.search.distributed import RayExecutor

        executor = RayExecutor(None if args.ray == "local" else args.ray)
    start = time.perf_counter()
    result = search(
        spec.problem, spec.splits, spec.places, spec.methods, spec.sizes, spec.settings,
        out_dir=args.out, executor=executor, progress=not args.no_progress,
    )
    seconds = time.perf_counter() - start
    result.save(args.out / "table.csv")
    result.save(args.out / "table.parquet")
    shown = ["place", "featurizer", "size", "iia_val", "iia_test", "iia_test_low", "iia_test_high",
             "iia_test_impactful", "control_random", "control_untrained"]
    print(result.table[shown].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(summarise(result, args.margin, args.featurizer))
    for reason in result.skipped:
        print(f"skipped {reason}")
    if args.heatmap:
        import matplotlib

        matplotlib.use("Agg")
        rows, columns = args.heatmap.split(",")
        path = args.out / f"heatmap_{rows}_{columns}.png"
        from iit.search.plots import plot_heatmap

        plot_heatmap(result, rows, columns, featurizer=args.featurizer, path=path)
        print(f"heatmap: {path}")
    print(f"{len(result.table)} cells in {seconds:.1f} s")
    return result
