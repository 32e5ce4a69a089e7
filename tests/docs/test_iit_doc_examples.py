"""The docstring examples of the intervention core, the transformer coordinates, training and
search run and give the outputs they show (so CI runs them with the rest of the suite)."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch

MODULES = [
    "iit.coordinates",
    "iit.interventions",
    "iit.interventionable",
    "iit.learned",
    "iit.das",
    "iit.alignment",
    "iit.outputs",
    "iit.hooks",
    "iit.serialization",
    "iit.trainable",
    "iit.transformers.coordinates",
    "iit.transformers.families",
    "iit.transformers.interventionable",
    "iit.transformers.positions",
    "iit.training.data",
    "iit.training.evaluation",
    "iit.training.inputs",
    "iit.training.metrics",
    "iit.training.objectives",
    "iit.search.mib",
    "iit.search.problem",
    "iit.search.results",
    "iit.search.stats",
]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    # the examples seed torch's global generator; the rest of the suite must not see that
    with torch.random.fork_rng():
        result = doctest.testmod(importlib.import_module(name), optionflags=FLAGS)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (see the output)"


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
