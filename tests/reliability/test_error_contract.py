"""The error contract of issue #16, checked over the source tree.

* every error class of ``iit.errors`` is an ``IITError`` and also the builtin the same mistake
  raised before (``except ValueError`` code keeps working);
* no ``raise ValueError / KeyError / TypeError / IndexError`` escapes from ``iit``,
  ``causal_models`` or ``tasks`` (library errors only);
* one "did you mean" helper: ``difflib`` is used in ``causal_models/errors.py`` only;
* ``causal_models`` imports nothing from ``iit`` (the layering that decides where the helper lives).
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import causal_models.errors as cm_errors
import iit.errors as errors
from iit.errors import did_you_mean, unknown_name

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("iit", "causal_models", "tasks")
BUILTINS = {"ValueError", "KeyError", "TypeError", "IndexError"}


def _sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


CLASSES = [obj for _, obj in inspect.getmembers(errors, inspect.isclass) if issubclass(obj, BaseException)]


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
def test_every_error_class_is_an_iit_error_and_a_builtin(cls: type) -> None:
    assert issubclass(cls, errors.IITError)
    if cls is not errors.IITError:
        assert any(issubclass(cls, b) for b in (ValueError, KeyError, TypeError, IndexError, OSError, RuntimeError))


def test_no_bare_builtin_error_is_raised_by_the_library() -> None:
    offenders = []
    for path in _sources(*PACKAGES):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(exc, ast.Name) and exc.id in BUILTINS:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} raise {exc.id}")
    assert not offenders, "use an iit.errors / causal_models.errors class instead:\n" + "\n".join(offenders)


def test_one_did_you_mean_helper() -> None:
    users = []
    for path in _sources(*PACKAGES):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module == "difflib" or "difflib" in names:
                users.append(str(path.relative_to(ROOT)))
    users = [u for u in users if u != "causal_models/errors.py"]
    assert not users, f"use iit.errors.did_you_mean instead of difflib in {users}"
    assert errors.did_you_mean is cm_errors.did_you_mean


def test_causal_models_imports_nothing_from_iit() -> None:
    for path in _sources("causal_models"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.split(".")[0] == "iit", path
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] != "iit" for a in node.names), path


def test_did_you_mean_names_the_nearest_and_only_close_ones() -> None:
    assert did_you_mean("layer.0", ["layers.0", "head", "embed"]) == "; did you mean 'layers.0'?"
    assert did_you_mean("zzz", ["layers.0", "head"]) == ""
    assert did_you_mean("ab", ["abc", "abd", "x"]) in ("; did you mean 'abc' or 'abd'?", "; did you mean 'abd' or 'abc'?")
    assert unknown_name("mx", ["max1", "all"], "mode") == "unknown mode 'mx'; did you mean 'max1'? valid: ['max1', 'all']"
    assert unknown_name("q", ["max1"], "mode") == "unknown mode 'q'; valid: ['max1']"
