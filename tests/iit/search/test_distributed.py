"""The search on a local 2-worker Ray equals the in-process search, and resumes the same way."""

from __future__ import annotations

import pandas as pd
import pytest

from iit.search import DAS, FitSettings, SearchSettings, neurons, search

ray = pytest.importorskip("ray")
from iit.search.distributed import RayExecutor  # noqa: E402

pytestmark = pytest.mark.slow
SETTINGS = SearchSettings(fit=FitSettings(epochs=3, batch_size=64, lr=0.05), seed=1)


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def test_ray_equals_in_process_and_resumes(local_ray, problem, splits, places, tmp_path) -> None:
    methods, sizes = [DAS(), neurons()], [1, 2]
    here = search(problem, splits, places, methods, sizes, SETTINGS, progress=False)
    there = search(problem, splits, places, methods, sizes, SETTINGS, out_dir=tmp_path, executor=RayExecutor(), progress=False)
    pd.testing.assert_frame_equal(here.table.drop(columns="seconds"), there.table.drop(columns="seconds"))
    assert set(there.interventions) == set(here.interventions)
    assert len(list((tmp_path / "cells").glob("*.json"))) == len(here.table)
    again = search(problem, splits, places, methods, sizes, SETTINGS, out_dir=tmp_path, executor=RayExecutor(), progress=False)
    pd.testing.assert_frame_equal(again.table, there.table)
