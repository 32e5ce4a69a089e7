"""The docstring examples (including the "add your own model" example) run and give the outputs
they show."""

import doctest
import importlib

import pytest

MODULES = [
    "causal_models",
    "causal_models.errors",
    "causal_models.domains",
    "causal_models.model",
    "causal_models.engine",
    "causal_models.data",
    "causal_models.drawing",
    "causal_models.standard",
    "causal_models.standard.arithmetic",
    "causal_models.standard.boolean",
    "causal_models.standard.equality",
    "causal_models.standard.pointer",
    "causal_models.standard.pricing",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
