"""The code of the documentation pages runs, and their links resolve.

For every markdown page under ``docs/`` (except the generated ``docs/reference/`` and the
notebooks' ``docs/tutorials/``), the ```` ```python ```` fenced blocks are executed in page order
in one fresh namespace per page (pages are independent; blocks of one page share names), in a
temporary working directory, with ``torch.manual_seed(0)`` set before the first block; the
family table ``iit.transformers.FAMILIES``, the environment variables and the warning filters are
restored after each page (pages may register a family or seed Lightning).

Convention for code that cannot run here (several GPUs, a cluster): put the line
``<!-- no-run -->`` directly above the fence (an HTML comment: the site does not show it, and
the block is rendered like any Python block). Such a block is compiled (a syntax check) but not
executed. Fences of other languages (``bash``, ``text``) are never executed.

Links: every relative markdown link ``[text](target)`` (and image ``![alt](target)``) of a page
must name an existing file (the anchor part is ignored); the API reference pages, generated at build time by
``docs/hooks.py``, count as existing. Absolute links (``http(s)://``) are not followed.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pytest
import torch
from site_hooks import hooks

from iit.transformers import FAMILIES

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SKIPPED_FOLDERS = ("reference", "tutorials")
GENERATED = {f"reference/{name}.md" for name in ("index", *hooks.PUBLIC_PACKAGES)} | {
    f"tutorials/{nb.name}" for nb in (ROOT / "notebooks").glob("*.ipynb")  # executed at build time
}
FENCE = re.compile(r"^(?P<indent>[ ]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ ]*$", re.M | re.S)
NO_RUN = "<!-- no-run -->"
LINK = re.compile(r"\[[^\]\n]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")


def pages() -> list[Path]:
    """Every hand-written markdown page of the site."""
    return sorted(
        p for p in DOCS.rglob("*.md") if p.relative_to(DOCS).parts[0] not in SKIPPED_FOLDERS
    )


def python_blocks(text: str, *, skipped: bool = False) -> list[tuple[int, str]]:
    """``(line number, code)`` of every executed ```` ```python ```` block, in page order
    (with ``skipped=True``: of the blocks under a ``<!-- no-run -->`` line instead)."""
    blocks = []
    for match in FENCE.finditer(text):
        info = match["info"].split()
        if not info or info[0] not in ("python", "py"):
            continue
        before = [line.strip() for line in text[: match.start()].splitlines() if line.strip()]
        if (bool(before) and before[-1] == NO_RUN) != skipped:
            continue
        indent = len(match["indent"])
        body = "\n".join(line[indent:] for line in match["body"].splitlines())
        blocks.append((text.count("\n", 0, match.start()) + 2, body))
    return blocks


def _page_id(page: Path) -> str:
    return str(page.relative_to(DOCS))


def test_fence_parser() -> None:
    text = "a\n```python\nx = 1\n```\n<!-- no-run -->\n```python\nboom()\n```\n```bash\nls\n```\n  ```python\n  y = 2\n  ```\n"
    assert python_blocks(text) == [(3, "x = 1"), (13, "y = 2")]
    assert python_blocks(text, skipped=True) == [(7, "boom()")]


@pytest.mark.parametrize("page", pages(), ids=_page_id)
def test_skipped_code_compiles(page: Path) -> None:
    """Blocks that are not run are still valid Python."""
    for line, code in python_blocks(page.read_text(), skipped=True):
        compile(code, f"{page.relative_to(ROOT)}:{line}", "exec")


def test_there_are_pages() -> None:
    names = {_page_id(p) for p in pages()}
    assert {"index.md", "getting-started.md", "errors/index.md"} <= names


@pytest.mark.parametrize("page", [p for p in pages() if python_blocks(p.read_text())], ids=_page_id)
def test_page_code_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(page.read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    torch.manual_seed(0)
    namespace: dict[str, object] = {"__name__": f"docs_page_{page.stem}"}
    threads = torch.get_num_threads()
    families = dict(FAMILIES)  # a page may register a family; later pages see the built-in table
    environ = dict(os.environ)  # pl.seed_everything sets PL_GLOBAL_SEED, which later code reads
    try:
        with warnings.catch_warnings():
            for line, code in blocks:
                compiled = compile(code, f"{page.relative_to(ROOT)}:{line}", "exec")
                exec(compiled, namespace)  # noqa: S102 - the documentation's own code
    finally:
        torch.set_num_threads(threads)
        FAMILIES.clear()
        FAMILIES.update(families)
        os.environ.clear()
        os.environ.update(environ)


def broken_links(page_id: str, text: str) -> list[str]:
    """The relative link targets of a page (path ``page_id`` under ``docs/``) that name no file."""
    text = FENCE.sub("", text)  # links inside code are not links
    text = re.sub(r"`[^`\n]*`", "", text)
    broken = []
    for match in LINK.finditer(text):
        target = match["target"].split("#", 1)[0]
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue
        resolved = os.path.normpath(os.path.join(os.path.dirname(page_id), target)).replace(os.sep, "/")
        if resolved not in GENERATED and not (DOCS / resolved).is_file():
            broken.append(match["target"])
    return broken


def test_link_checker() -> None:
    text = "[a](index.md) [b](../index.md#x) [c](missing.md) [d](https://example.org) `[e](nope.md)` ![img](x.png)"
    assert broken_links("concepts/iit.md", text) == ["index.md", "missing.md", "x.png"]
    assert broken_links("concepts/iit.md", "[r](../reference/iit.training.md)") == []


@pytest.mark.parametrize("page", pages(), ids=_page_id)
def test_page_links_resolve(page: Path) -> None:
    broken = broken_links(_page_id(page), page.read_text())
    assert not broken, f"{_page_id(page)} links to missing files: {broken}"
