"""Docstring contract of the public API: one style (Google), shapes, and Raises sections.

Every class and function in the ``__all__`` of a public package, and every public method or
property those classes define, is checked on its parsed docstring (griffe, the parser the
documentation site uses):

* it has a docstring, written in Google style: griffe parses it without a warning (parameters
  documented one per entry and present in the signature, ``name: description`` pairs) and it has
  no numpydoc section underlines;
* functions and classes named in ``__all__`` have a ``Raises:`` section;
* a function, method or class whose own code raises an exception class lists that class in its
  ``Raises:`` section (classes: what ``__init__`` / ``__post_init__`` raise);
* a callable whose signature takes or returns tensors states their shapes (``[batch, ...]``).
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import logging
import re
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

griffe = pytest.importorskip("griffe")
pytest.importorskip("mkdocs")
import site_hooks  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_PACKAGES = site_hooks.hooks.PUBLIC_PACKAGES  # the packages the site documents
NUMPYDOC_UNDERLINE = re.compile(r"^\s*-{3,}\s*$", re.M)
SHAPE = re.compile(r"\[[^\]\n]*\]")
RAISE_CALL = re.compile(r"^(?:raise\s+)?([A-Z]\w*)(?:\(|$)")


def public_objects() -> dict[str, object]:
    """``{dotted definition path: object}`` for the classes and functions in the packages' ``__all__``."""
    found: dict[str, object] = {}
    for package in PUBLIC_PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            obj = getattr(module, name)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__.split(".")[0] in ("iit", "causal_models"):
                found.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    return found


def public_methods(cls: type) -> Iterator[tuple[str, Callable]]:
    """Public methods and properties a class defines itself (not inherited, not dunder)."""
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property):
            value = value.fget
        elif isinstance(value, (classmethod, staticmethod)):
            value = value.__func__
        if inspect.isfunction(value):
            yield name, value


@functools.lru_cache(maxsize=1)
def griffe_roots() -> dict[str, object]:
    loader = griffe.GriffeLoader(search_paths=[str(ROOT)], docstring_parser=griffe.Parser.google)
    return {name: loader.load(name) for name in ("iit", "causal_models")}


def griffe_object(path: str) -> object:
    root, _, rest = path.partition(".")
    obj = griffe_roots()[root][rest]
    return obj.final_target if obj.is_alias else obj


def parse(path: str) -> tuple[list, list[str]]:
    """The docstring's sections and griffe's warnings about it."""
    obj = griffe_object(path)
    if obj.docstring is None:
        return [], ["no docstring"]
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("griffe")
    logger.addHandler(handler)
    try:
        sections = obj.docstring.parse(griffe.Parser.google)
    finally:
        logger.removeHandler(handler)
    if NUMPYDOC_UNDERLINE.search(obj.docstring.value):
        messages.append("numpydoc section underline (use Google style: 'Args:', 'Returns:', 'Raises:')")
    return sections, messages


def raised_names(func: Callable) -> set[str]:
    """Exception class names a function's own body raises (``raise Name(...)`` / ``raise Name``)."""
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        return set()
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(target, ast.Name) and target.id[:1].isupper():
                names.add(target.id)
            elif isinstance(target, ast.Attribute) and target.attr[:1].isupper():
                names.add(target.attr)
    return names


def documented_raises(sections: list) -> set[str]:
    names = set()
    for section in sections:
        if section.kind.value == "raises":
            for item in section.value:
                names.update(re.findall(r"[A-Za-z_][\w.]*", str(item.annotation)))
    return {n.rsplit(".", 1)[-1] for n in names}


def mentions_tensor(func: Callable) -> bool:
    try:
        annotations = inspect.get_annotations(func)
    except Exception:
        return False
    return any("Tensor" in str(a) for a in annotations.values())


def cases() -> list[tuple[str, Callable | type, bool]]:
    """``(path, object, in __all__)`` for every checked object."""
    out = []
    for path, obj in sorted(public_objects().items()):
        out.append((path, obj, True))
        if inspect.isclass(obj):
            out.extend((f"{path}.{name}", method, False) for name, method in public_methods(obj))
    return out


CASES = cases()


def problems(path: str, obj: Callable | type, exported: bool) -> list[str]:
    sections, messages = parse(path)
    if messages == ["no docstring"]:
        return messages
    found = list(messages)
    kinds = {s.kind.value for s in sections}
    if exported and "raises" not in kinds:
        found.append("no 'Raises:' section")
    own = raised_names(obj) if not inspect.isclass(obj) else set().union(
        *(raised_names(f) for f in (vars(obj).get("__init__"), vars(obj).get("__post_init__")) if inspect.isfunction(f))
    )
    missing = own - documented_raises(sections) - {"NotImplementedError", "StopIteration"}
    if missing:
        found.append(f"raises {sorted(missing)} but its 'Raises:' section does not list them")
    target = obj.__init__ if inspect.isclass(obj) and inspect.isfunction(vars(obj).get("__init__")) else obj
    if inspect.isfunction(target) and mentions_tensor(target):
        text = griffe_object(path).docstring.value
        if inspect.isclass(obj) and "__init__" in vars(obj):
            init_doc = inspect.getdoc(vars(obj)["__init__"]) or ""
            text += init_doc
        if not SHAPE.search(text):
            found.append("takes or returns tensors but states no shape ('[batch, ...]')")
    return found


@pytest.mark.parametrize(("path", "obj", "exported"), CASES, ids=[c[0] for c in CASES])
def test_public_docstring(path: str, obj: Callable | type, exported: bool) -> None:
    found = problems(path, obj, exported)
    assert not found, f"{path}: " + "; ".join(found)


def test_public_names_are_checked() -> None:
    """The check sees the whole public API (a broken enumeration would pass every case)."""
    exported = [c for c in CASES if c[2]]
    assert len(exported) >= 150
    assert "iit.interventionable.Interventionable" in {c[0] for c in exported}
    assert any(c[0].startswith("causal_models.") for c in exported)


def test_checker_catches_a_bad_docstring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A numpydoc docstring without Raises, raising ArgumentError, is flagged on all three counts."""
    package = tmp_path / "iit_docprobe"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent('''
        def f(x: "Tensor", n: int) -> "Tensor":
            """Scale.

            Parameters
            ----------
            x : the values
            """
            if n < 0:
                raise ArgumentError("n")
            return x
    '''))
    loader = griffe.GriffeLoader(search_paths=[str(tmp_path)], docstring_parser=griffe.Parser.google)
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = importlib.import_module("iit_docprobe")
    monkeypatch.setitem(globals(), "griffe_roots", lambda: {"iit": loader.load("iit_docprobe")})
    found = problems("iit.f", probe.f, exported=True)
    text = " ".join(found)
    assert "numpydoc" in text and "no 'Raises:' section" in text and "ArgumentError" in text and "shape" in text
