"""Attribution cost relative to one forward pass, and IG against captum, side by side.

BERT-base shape (12 layers, d=768, 12 heads, random init), batch 8 x 128 tokens, 50 IG steps;
``--quick`` uses a 2-layer d=256 model, batch 4 x 64 and 16 IG steps. Each time is the median
of ``--repeats`` runs with ``torch.set_num_threads(2)``; read the ratios, measured in one run.

    .venv/bin/python benchmarks/attribution.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from captum.attr import LayerIntegratedGradients
from transformers import BertConfig, BertForSequenceClassification

from iit.attribution import (
    ALTI,
    LRP,
    AttentionRollout,
    AttentionTracing,
    InputXGradient,
    IntegratedGradients,
    Saliency,
)


def median_seconds(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    """Median wall time of ``repeats`` calls (after one warm-up call if ``warmup``)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description="attribution cost vs one forward")
    parser.add_argument("--quick", action="store_true", help="small model, for a fast check")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--ig-repeats",
        type=int,
        default=None,
        help="interleaved IG pairs (ours, captum; order alternating); default --repeats",
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    if args.quick:
        config = BertConfig(
            hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024
        )
        batch, seq, steps = 4, 64, 16
    else:
        config = BertConfig()  # BERT-base shape
        batch, seq, steps = 8, 128, 50
    model = BertForSequenceClassification(config).eval()
    ids = torch.randint(1000, 30000, (batch, seq))
    chunk = batch * 10  # rows per forward for IG: 10 steps at a time, same for captum

    def forward() -> object:
        with torch.no_grad():
            return model(ids)

    base = median_seconds(forward, args.repeats)
    print(
        f"BERT layers={config.num_hidden_layers} d={config.hidden_size}, batch {batch} x {seq}, "
        f"IG steps {steps}, threads {torch.get_num_threads()}"
    )
    print(f"one forward: {base * 1000:.1f} ms (median of {args.repeats})")
    methods: dict[str, Callable[[], object]] = {
        "saliency": lambda: Saliency(model).attribute(ids, 1),
        "input_x_gradient": lambda: InputXGradient(model).attribute(ids, 1),
        "lrp (CP-LRP rules)": lambda: LRP(model).attribute(ids, 1),
        "attention rollout": lambda: AttentionRollout(model).attribute(ids, 1),
        "attention tracing": lambda: AttentionTracing(model).attribute(ids, 1),
        "alti (all layers)": lambda: ALTI(model).attribute(ids, 1),
    }
    print(f"{'method':<24} {'seconds':>9} {'x forward':>10}")
    for name, fn in methods.items():
        seconds = median_seconds(fn, args.repeats)
        print(f"{name:<24} {seconds:>9.3f} {seconds / base:>10.2f}")
    ours = IntegratedGradients(model, n_steps=steps, internal_batch_size=chunk)
    captum = LayerIntegratedGradients(
        lambda x: model(x).logits, model.bert.embeddings.word_embeddings
    )
    baseline = torch.zeros_like(ids)

    def run_ours() -> object:
        return ours.attribute(ids, 1, baseline_inputs=baseline)

    def run_captum() -> object:
        return captum.attribute(
            ids, baselines=baseline, target=1, n_steps=steps, internal_batch_size=chunk
        )

    # Interleaved pairs, the order alternating, so drift and the first-run penalty of a noisy
    # machine fall on both sides; the ratio is the median of the per-pair ratios.
    pairs = args.ig_repeats or args.repeats
    t_ours, t_captum = [], []
    for i in range(pairs):
        order = [(run_ours, t_ours), (run_captum, t_captum)]
        for fn, sink in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - start)
    ours_s, captum_s = statistics.median(t_ours), statistics.median(t_captum)
    ratio = statistics.median(o / c for o, c in zip(t_ours, t_captum))
    print(f"{'integrated gradients':<24} {ours_s:>9.3f} {ours_s / base:>10.2f}")
    print(f"{'captum layer IG':<24} {captum_s:>9.3f} {captum_s / base:>10.2f}")
    print(
        f"IG time ours / captum: {ratio:.3f} (target <= 1; median over {pairs} interleaved pairs; "
        f"per pair: {', '.join(f'{o / c:.2f}' for o, c in zip(t_ours, t_captum))})"
    )


if __name__ == "__main__":
    main()
