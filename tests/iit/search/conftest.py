"""Fixtures: the handcrafted :class:`tasks.rotated_sum.RotatedSum`, whose alignment is known:
``S = x + y`` lies along one rotated direction of ``l0`` (no single neuron holds it) and in
neuron 0 of ``l1``."""

from __future__ import annotations

import pytest

from causal_models import standard
from iit import Interventionable
from iit.search import CounterfactualSplits, SearchProblem, module_places
from tasks.rotated_sum import RotatedSum as HandcraftedSum
from tasks.rotated_sum import encode_digits as encode

MAX_DIGIT = 3
__all__ = ["HandcraftedSum", "encode", "MAX_DIGIT"]


@pytest.fixture()
def problem() -> SearchProblem:
    return SearchProblem(Interventionable(HandcraftedSum()), standard.digit_sum(MAX_DIGIT), "S", encode)


@pytest.fixture(scope="session")
def splits() -> CounterfactualSplits:
    return CounterfactualSplits.generate(standard.digit_sum(MAX_DIGIT), "S", (512, 256, 512), seed=0)


@pytest.fixture()
def places() -> list:
    return module_places(["l0", "l1"])
