"""The site's build machinery: the API reference covers every public name and refuses an
undocumented one; the notebook executor keeps outputs, names a failing cell and drops widgets."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]


pytest.importorskip("mkdocs")
from site_hooks import executor, hooks, load  # noqa: E402


def test_reference_covers_every_public_name() -> None:
    names = hooks.public_names()
    for package in hooks.PUBLIC_PACKAGES:
        exported = set(importlib.import_module(package).__all__)
        assert {n.name for n in names if n.package == package} == exported
    # each object is rendered on exactly one page, the most specific package defining it
    homes = {}
    for entry in names:
        homes.setdefault(entry.path, set()).add(entry.home)
    assert all(len(h) == 1 for h in homes.values())
    tokens = next(n for n in names if n.package == "iit" and n.name == "Tokens")
    assert tokens.home == "iit.transformers"
    page = hooks._reference_page("iit", names)
    assert "::: iit.interventionable.Interventionable" in page
    assert "[`Tokens`][iit.transformers.positions.Tokens]" in page


def test_reference_refuses_an_undocumented_public_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from mkdocs.exceptions import PluginError

    package = types.ModuleType("iit_docprobe_pkg")
    package.__all__ = ["documented", "bare"]

    def documented() -> None:
        """Has a docstring."""

    def bare() -> None:
        pass

    documented.__module__ = bare.__module__ = "iit_docprobe_pkg"
    package.documented, package.bare = documented, bare
    monkeypatch.setitem(sys.modules, "iit_docprobe_pkg", package)
    monkeypatch.setattr(hooks, "PUBLIC_PACKAGES", ("iit_docprobe_pkg",))
    with pytest.raises(PluginError, match=r"iit_docprobe_pkg\.bare") as caught:
        hooks.public_names()
    assert "documented" not in str(caught.value).replace("without", "")


def _notebook(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# probe")] + [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


def test_executor_keeps_outputs_and_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "probe.ipynb"
    nbformat.write(_notebook("print(6 * 7)", "import matplotlib.pyplot as plt\nplt.plot([0, 1]); plt.show()"), source)
    monkeypatch.setattr(executor, "SOURCE", tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")  # as under dev.py test: the kernel must still show plots
    executed = tmp_path / "out" / "probe.ipynb"
    executor.execute(source, executed)
    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any(o.get("text", "").strip() == "42" for o in outputs)
    assert any("image/png" in o.get("data", {}) for o in outputs), "the plot is not in the executed copy"
    assert executor.up_to_date(source, executed)
    source.write_text(source.read_text().replace("6 * 7", "6 * 8"))
    assert not executor.up_to_date(source, executed)


def test_executor_names_the_failing_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    (tmp_path / "broken.ipynb").write_text(nbformat.writes(_notebook("x = 1", "raise RuntimeError('cell two broke')")))
    monkeypatch.setattr(executor, "SOURCE", tmp_path)
    monkeypatch.setattr(executor, "TARGET", tmp_path / "out")
    monkeypatch.setattr(executor, "ROOT", tmp_path)
    assert executor.main([]) == 1
    err = capsys.readouterr().err
    assert "FAILED: notebooks/broken.ipynb" in err and "cell two broke" in err
    assert not (tmp_path / "out" / "broken.ipynb").exists()


def test_widget_outputs_are_dropped() -> None:
    nb = _notebook("pass")
    nb.cells[1].outputs = [
        nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"}, "text/plain": "HBox()"}),
        nbformat.v4.new_output("stream", name="stdout", text="kept\n"),
    ]
    nb.metadata["widgets"] = {"state": {}}
    assert executor.drop_widgets(nb) == 1
    assert [o.output_type for o in nb.cells[1].outputs] == ["stream"]
    assert "widgets" not in nb.metadata


def test_the_build_command_fails_on_a_broken_link(tmp_path: Path) -> None:
    """`dev.py`'s mkdocs invocation turns a warning (here a link to a missing page) into a failed
    build, and passes once the link is fixed (flags such as --quiet would hide the warning)."""
    import subprocess

    dev = load("iit_dev", ROOT / "dev.py")
    (tmp_path / "docs").mkdir()
    (tmp_path / "mkdocs.yml").write_text("site_name: probe\nvalidation:\n  links:\n    not_found: warn\n")
    page = tmp_path / "docs" / "index.md"
    page.write_text("# Probe\n\nSee [the missing page](missing.md).\n")
    run = lambda: subprocess.run([sys.executable, *dev.MKDOCS_BUILD], cwd=tmp_path, capture_output=True, text=True)  # noqa: E731
    broken = run()
    assert broken.returncode != 0, broken.stderr
    assert "missing.md" in broken.stderr
    page.write_text("# Probe\n\nNo links.\n")
    assert run().returncode == 0
