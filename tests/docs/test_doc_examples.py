"""The docstring examples of every module of ``iit`` and ``causal_models`` run and give the outputs
they show: the doctests run with the rest of the suite (and so in CI)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import torch

PACKAGES = ("iit", "causal_models")
MIN_MODULES_WITH_EXAMPLES = 45  # a broken walk (no modules found) must not pass


def modules_with_examples() -> list[str]:
    """Every module of the packages (found by walking them, so a new module is covered) whose
    docstrings hold ``>>>`` examples."""
    names = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            module = importlib.import_module(info.name)
            if any(test.examples for test in doctest.DocTestFinder().find(module)):
                names.append(info.name)
        if doctest.DocTestFinder().find(root)[0].examples:
            names.append(package)
    return sorted(names)


MODULES = modules_with_examples()
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    # the examples seed torch's global generator; the rest of the suite must not see that
    with torch.random.fork_rng():
        result = doctest.testmod(importlib.import_module(name), optionflags=FLAGS)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (see the output)"


def test_the_walk_finds_the_modules() -> None:
    assert len(MODULES) >= MIN_MODULES_WITH_EXAMPLES, MODULES
    assert {"iit.interventionable", "causal_models.model", "iit.attribution.gradient"} <= set(MODULES)


def test_a_wrong_example_fails() -> None:
    """The runner reports a wrong output (a runner that never compares would pass everything)."""

    def probe() -> None:
        """
        >>> from iit import Index
        >>> Index.dims(0, 2) == Index.dims(0, 3)
        True
        """

    test = doctest.DocTestFinder().find(probe, "probe", globs={})[0]
    runner = doctest.DocTestRunner(optionflags=FLAGS, verbose=False)
    runner.run(test, out=lambda text: None)
    assert runner.failures == 1
