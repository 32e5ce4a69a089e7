"""Every error class has a documentation page, named in a note on every error it raises."""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path

import pytest

import causal_models.errors as cm_errors
import iit.errors as iit_errors
from causal_models.errors import error_page

ROOT = Path(__file__).resolve().parents[2]
MODULES = (cm_errors, iit_errors)


def error_classes(module: object) -> set[type[BaseException]]:
    """The exception classes a module defines (not the ones it imports)."""
    return {
        obj for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__
    }


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_error_class_is_documented(module: object) -> None:
    assert set(module.DOCUMENTED_ERRORS) == error_classes(module)
    for cls in module.DOCUMENTED_ERRORS:
        page = ROOT / error_page(cls)
        assert page.exists(), f"{cls.__name__} has no page {page}"
        text = page.read_text()
        assert text.startswith(f"# {cls.__name__}"), f"{page} does not open with '# {cls.__name__}'"
        for section in ("Symptom", "Cause", "Fix"):
            assert section in text, f"{page} has no {section!r} section"


def test_every_page_has_an_error_class() -> None:
    pages = {ROOT / error_page(cls) for module in MODULES for cls in module.DOCUMENTED_ERRORS}
    on_disk = set((ROOT / "docs" / "errors").glob("*.md")) - {ROOT / "docs" / "errors" / "index.md"}
    assert on_disk == pages


def test_page_names_are_kebab_case() -> None:
    assert error_page(iit_errors.IITError) == "docs/errors/iit-error.md"
    assert error_page(iit_errors.OutOfRangeError) == "docs/errors/out-of-range-error.md"
    assert error_page(cm_errors.CausalModelError) == "docs/errors/causal-model-error.md"


@pytest.mark.parametrize("cls", [*iit_errors.DOCUMENTED_ERRORS, *cm_errors.DOCUMENTED_ERRORS], ids=lambda c: c.__name__)
def test_raised_errors_name_their_page_without_changing_the_message(cls: type[BaseException]) -> None:
    error = cls("something was wrong")
    assert "something was wrong" in str(error)
    assert "Help" not in str(error)
    assert error.__notes__ == [next(n for n in error.__notes__ if error_page(cls) in n)]
    restored = pickle.loads(pickle.dumps(error))  # the note is not added twice on unpickling
    assert restored.__notes__ == error.__notes__


def test_the_library_raises_errors_with_their_note() -> None:
    """A real error from the library (an unknown coordinate) names the page of its class."""
    import torch

    from iit import Coordinate, Interventionable

    net = Interventionable(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    with pytest.raises(iit_errors.IITError) as caught:
        net.collect(torch.zeros(1, 2), [Coordinate("layers.9")])
    page = error_page(type(caught.value))
    assert any(page in note for note in caught.value.__notes__)
    assert (ROOT / page).exists()
