"""Execute the notebooks of ``notebooks/`` into ``docs/tutorials/`` (with their outputs), for the site.

    python docs/execute_notebooks.py [--force] [NAME ...]

Each notebook runs top to bottom in a fresh kernel, in the ``notebooks/`` folder, with a per-cell
timeout; the executed copy (outputs and plots included) is written to ``docs/tutorials/<name>.ipynb``
(ignored by git), where the site's tutorials are rendered from. A copy whose notebook is unchanged
since it was executed (same SHA-256 of the source notebook and of this script, kept in the copy's
metadata, along with a hash of the library's code: ``iit/``, ``causal_models/`` and ``tasks/``) is
not executed again unless ``--force``. This is also the test that the notebooks run:
the first failing cell stops the run with the notebook's name, the cell's number and its error,
and the exit status is 1.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "notebooks"
TARGET = ROOT / "docs" / "tutorials"
CELL_TIMEOUT_S = 900
LIBRARY = ("iit", "causal_models", "tasks")


def fingerprint(notebook: Path) -> str:
    """SHA-256 of the notebook, this script and the library's Python files (changed code re-runs
    every notebook: the outputs shown are always what the code produces)."""
    digest = hashlib.sha256(notebook.read_bytes())
    digest.update(Path(__file__).read_bytes())
    for package in LIBRARY:
        for path in sorted((ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def up_to_date(notebook: Path, executed: Path) -> bool:
    if not executed.exists():
        return False
    metadata = nbformat.read(executed, as_version=4).metadata.get("iit_docs", {})
    return metadata.get("source_sha256") == fingerprint(notebook)


WIDGET_TYPES = ("application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json")


def drop_widgets(nb: nbformat.NotebookNode) -> int:
    """Remove Jupyter widget outputs (e.g. tqdm's notebook bars) in place: a static page would load
    the widget library from a CDN to draw them. Returns how many outputs went."""
    dropped = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = [o for o in cell.outputs if not any(kind in o.get("data", {}) for kind in WIDGET_TYPES)]
        dropped += len(cell.outputs) - len(kept)
        cell.outputs = kept
    nb.metadata.pop("widgets", None)
    return dropped


def execute(notebook: Path, executed: Path) -> float:
    """Run ``notebook`` in a fresh kernel and write the executed copy; return the seconds taken.

    Raises:
        CellExecutionError: a cell failed (the copy is not written).
    """
    nb = nbformat.read(notebook, as_version=4)
    # the kernel inherits the environment: MPLBACKEND=Agg (set for the test run) would replace the
    # kernel's inline backend and the executed copy would hold no plots
    backend = os.environ.pop("MPLBACKEND", None)
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(SOURCE)}},
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])  # no start-up chatter
    try:
        client.execute()
    finally:
        if backend is not None:
            os.environ["MPLBACKEND"] = backend
    drop_widgets(nb)
    nb.metadata["iit_docs"] = {"source_sha256": fingerprint(notebook)}
    executed.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, executed)
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebook names (default: all of notebooks/*.ipynb)")
    parser.add_argument("--force", action="store_true", help="execute even unchanged notebooks")
    args = parser.parse_args(argv)
    notebooks = sorted(SOURCE.glob("*.ipynb"))
    if args.names:
        known = {p.stem: p for p in notebooks}
        unknown = [n for n in args.names if n.removesuffix(".ipynb") not in known]
        if unknown:
            parser.error(f"unknown notebooks {unknown}; valid: {sorted(known)}")
        notebooks = [known[n.removesuffix(".ipynb")] for n in args.names]
    for notebook in notebooks:
        executed = TARGET / notebook.name
        if not args.force and up_to_date(notebook, executed):
            print(f"  {notebook.name}: unchanged, kept {executed.relative_to(ROOT)}", flush=True)
            continue
        print(f"  {notebook.name}: executing ...", flush=True)
        try:
            seconds = execute(notebook, executed)
        except CellExecutionError as error:
            print(f"FAILED: notebooks/{notebook.name}\n{error}", file=sys.stderr, flush=True)
            return 1
        print(f"  {notebook.name}: ran in {seconds:.0f} s -> {executed.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
