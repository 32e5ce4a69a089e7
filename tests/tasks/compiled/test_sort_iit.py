"""Strict IIT of a small transformer on tracr's sort: the causal model is the RASP program
(checked by brute force, and against RASP evaluation with ``target_pos`` overridden when tracr is
installed), and a short strict-IIT run puts ``target_pos`` where the alignment says."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import pytest
import pytorch_lightning as pl
import torch

from iit.errors import ArgumentError
from iit.training import CounterfactualDataModule, IITConfig, IITModule
from iit.training.cli import evaluate_alignment, format_intervals
from tasks.compiled.sort_iit import DistinctTokens, SortStrictTransformer, sort_causal_model
from tasks.registry import TASKS


def _evaluate(model, seqs, p_source=None):
    values = {f"t{i}": torch.tensor([s[i] for s in seqs]) for i in range(len(seqs[0]))}
    if p_source is not None:
        source = {f"t{i}": torch.tensor([s[i] for s in p_source]) for i in range(len(seqs[0]))}
        p = model.run(source)["P"]
        return model.do(values, {"P": p})
    return model.run(values)


def test_causal_model_is_sort_by_brute_force() -> None:
    model = sort_causal_model(vocab=5, length=3, read_rank=2)
    seqs = list(itertools.permutations(range(5), 3))
    out = _evaluate(model, seqs)
    for s, p, o in zip(seqs, out["P"].tolist(), out["O"].tolist()):
        ranks = [sorted(s).index(t) for t in s]
        assert p == sum(r * 3**i for i, r in enumerate(ranks))
        assert o == sorted(s)[2]


def test_causal_model_matches_rasp_with_target_pos_overridden() -> None:
    pytest.importorskip("tracr")
    from tracr.compiler import lib
    from tracr.rasp import rasp

    program = lib.make_sort_unique(rasp.tokens, rasp.tokens)
    stack, target_pos = [program], None
    while stack:
        expr = stack.pop()
        if expr.label.startswith("target_pos"):
            target_pos = expr
        stack.extend(expr.children)
    assert target_pos is not None

    class Override(rasp.DefaultRASPEvaluator):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def evaluate(self, expr, xs):
            return list(self.value) if expr.label == target_pos.label else super().evaluate(expr, xs)

    model = sort_causal_model(vocab=6, length=4, read_rank=1)
    seqs = list(itertools.permutations(range(6), 4))
    rng = random.Random(0)
    bases, sources = rng.choices(seqs, k=200), rng.choices(seqs, k=200)
    got = _evaluate(model, bases, sources)["O"].tolist()
    plain = _evaluate(model, bases)["O"].tolist()
    for b, s, g, p in zip(bases, sources, got, plain):
        assert g == Override(rasp.evaluate(target_pos, list(s))).evaluate(program, list(b))[1]
        assert p == rasp.evaluate(program, list(b))[1]


def test_distinct_tokens_sampler() -> None:
    draw = DistinctTokens(6, 4)(500, torch.Generator().manual_seed(0))
    tokens = torch.stack([draw[f"t{i}"] for i in range(4)], 1)
    assert all(len(set(row)) == 4 for row in tokens.tolist())
    assert tokens.min() >= 0 and tokens.max() <= 5


def test_bad_sizes_are_rejected() -> None:
    with pytest.raises(ArgumentError, match="length"):
        sort_causal_model(vocab=3, length=4)
    with pytest.raises(ArgumentError, match="read_rank"):
        sort_causal_model(vocab=6, length=4, read_rank=4)
    with pytest.raises(ArgumentError, match="p_width"):
        SortStrictTransformer(d_model=16, p_width=12, token_width=8)


def _fit(config: IITConfig) -> dict[str, float]:
    spec = replace(TASKS["compiled_sort_strict"], train_size=6_000, val_size=1_000, batch_size=128)
    task = SortStrictTransformer(d_model=24, d_mlp=48)
    pl.seed_everything(0, verbose=False)
    module = IITModule(task, config)
    data = CounterfactualDataModule(task, spec.train_size, spec.val_size, spec.batch_size, seed=0)
    pl.Trainer(
        max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    ).fit(module, data)
    return evaluate_alignment(module, data)


def test_strict_iit_puts_target_pos_at_layer_0() -> None:
    strict = _fit(TASKS["compiled_sort_strict"].config)
    assert strict["task_acc"] >= 0.9, strict
    assert strict["iia/P"] >= 0.9 and strict["strict_acc"] >= 0.9, strict
    assert strict["n/iia/P"] == 1_000 and strict["n/task_acc"] == 1_000
    text = format_intervals(strict)
    assert "iia/P " in text and "(n=1000)" in text


def test_behaviour_only_does_not_put_target_pos_there() -> None:
    spec = TASKS["compiled_sort_strict"]
    baseline = _fit(spec.behaviour_config())
    assert baseline["task_acc"] >= 0.9 and baseline["iia/P"] <= 0.6, baseline
