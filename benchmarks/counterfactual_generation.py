"""Counterfactual examples per minute: causal_models (vectorised) vs pyvene's per-example
CausalModel, measured side by side in one run.

Each counterfactual example = sample base and source inputs, pick the intervened variable, compute
the base output and the interchange-intervention output. Ours: ``CounterfactualGenerator.generate``;
pyvene: ``CausalModel.run_forward`` + ``run_interchange`` per example, the way its
``generate_counterfactual_dataset`` labels examples (sampling done with Python's ``random``).

Usage: ``.venv/bin/python benchmarks/counterfactual_generation.py [--quick] [--threads N]``
(on a loaded 2-core machine, 2 torch threads can be much slower than 1: compare both).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import torch

import causal_models as cm
from causal_models import standard


def median_rate(fn: Callable[[], int], reps: int) -> float:
    """Median over ``reps`` runs of examples per minute; ``fn`` returns the number of examples."""
    fn()  # warm-up
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t0) * 60.0)
    return statistics.median(rates)


def pyvene_equality(pool: torch.Tensor, n: int) -> Callable[[], int]:
    import pyvene as pv

    entities = [tuple(v) for v in pool.tolist()]
    names = ["W", "X", "Y", "Z", "WX", "YZ", "O"]
    values = {v: entities for v in "WXYZ"}
    values.update(WX=[True, False], YZ=[True, False], O=[True, False])
    parents = {
        "W": [],
        "X": [],
        "Y": [],
        "Z": [],
        "WX": ["W", "X"],
        "YZ": ["Y", "Z"],
        "O": ["WX", "YZ"],
    }
    functions = {v: (lambda e=entities[0]: e) for v in "WXYZ"}
    functions.update(WX=lambda a, b: a == b, YZ=lambda a, b: a == b, O=lambda a, b: a == b)
    peer = pv.CausalModel(names, values, parents, functions)
    rng = random.Random(0)

    def sample() -> dict:
        a, b, c, d = rng.sample(entities, 4)
        pattern = rng.randrange(4)
        return {"W": a, "X": a if pattern >= 2 else b, "Y": c, "Z": c if pattern % 2 else d}

    def run() -> int:
        for _ in range(n):
            base, source = sample(), sample()
            var = rng.choice(["WX", "YZ"])
            peer.run_forward(base)["O"]
            peer.run_interchange(base, {var: source})["O"]
        return n

    return run


def pyvene_digit_sum(n: int) -> Callable[[], int]:
    import pyvene as pv

    names = ["x", "y", "z", "S", "O"]
    values = {v: list(range(10)) for v in "xyz"}
    values.update(S=list(range(19)), O=list(range(28)))
    parents = {"x": [], "y": [], "z": [], "S": ["x", "y"], "O": ["S", "z"]}
    functions = {v: (lambda: 0) for v in "xyz"}
    functions.update(S=lambda a, b: a + b, O=lambda a, b: a + b)
    peer = pv.CausalModel(names, values, parents, functions)
    rng = random.Random(0)

    def run() -> int:
        for _ in range(n):
            base = {v: rng.randrange(10) for v in "xyz"}
            source = {v: rng.randrange(10) for v in "xyz"}
            var = rng.choice(["S", "x", "y", "z"])
            peer.run_forward(base)["O"]
            peer.run_interchange(base, {var: source})["O"]
        return n

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer repetitions")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_ours, n_peer, reps = (20_000, 300, 3) if args.quick else (200_000, 2_000, 5)

    eq = standard.hierarchical_equality(emb_dim=4)
    pool, _ = standard.make_entity_pools(1000, 100, emb_dim=4, seed=0)
    sampler = standard.EqualityPatternSampler(pool)
    ds = standard.digit_sum()

    def ours(model, cfg, smp=None) -> Callable[[], int]:
        gen = cm.CounterfactualGenerator(model, cfg, smp, seed=0)
        return lambda: len(gen.generate(n_ours))

    peers = {
        "hierarchical equality": pyvene_equality(pool.vectors, n_peer),
        "digit sum": pyvene_digit_sum(n_peer),
    }
    rows = [
        (
            "hierarchical equality",
            "one var/example",
            ours(eq, cm.CounterfactualConfig(("WX", "YZ")), sampler),
        ),
        (
            "hierarchical equality",
            "balanced labels",
            ours(eq, cm.CounterfactualConfig(("WX", "YZ"), balance="labels"), sampler),
        ),
        (
            "hierarchical equality",
            "no domain checks",
            ours(eq, cm.CounterfactualConfig(("WX", "YZ"), validate=False), sampler),
        ),
        ("digit sum", "one var/example", ours(ds, cm.CounterfactualConfig(("S", "x", "y", "z")))),
    ]
    print(
        f"counterfactual examples per minute (median of {reps}; ours n={n_ours}, "
        f"pyvene n={n_peer}; torch threads={args.threads})"
    )
    peer_rate = {name: median_rate(fn, reps) for name, fn in peers.items()}
    for name, rate in peer_rate.items():
        print(f"pyvene per-example baseline, {name}: {rate:,.0f} / min")
    print(f"{'model':24s} {'setting':18s} {'ours / min':>14s} {'vs pyvene':>10s}")
    for model, setting, fn_ours in rows:
        r_ours = median_rate(fn_ours, reps)
        print(f"{model:24s} {setting:18s} {r_ours:14,.0f} {r_ours / peer_rate[model]:9.1f}x")


if __name__ == "__main__":
    main()
