"""Attribution cost relative to one forward pass, IG against captum, and attribution patching
against exhaustive exact patching, side by side.

``--part existing``: BERT-base shape (12 layers, d=768, 12 heads, random init), batch 8 x 128
tokens, 50 IG steps (``--skip-ig`` leaves IG out); ``--quick`` uses a 2-layer d=256 model, batch
4 x 64 and 16 IG steps. ``--part atp``: AtP over every head x position of a 12-layer GPT-2 shape
(d=768, 12 heads; ``--atp-seq`` tokens, batch 1) against :func:`exact_patching_effects` over the
same coordinates (stacked forwards of ``--max-rows`` rows), with the rank correlation of the two.
Each time is the median of ``--repeats`` runs with ``torch.set_num_threads(2)``; read the
ratios, measured in one run.

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
    parser.add_argument("--part", choices=["existing", "atp", "all"], default="all")
    parser.add_argument("--skip-ig", action="store_true", help="existing part without IG")
    parser.add_argument("--atp-seq", type=int, default=16, help="tokens of the AtP run")
    parser.add_argument("--max-rows", type=int, default=128, help="rows per exact-patching forward")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.part in ("existing", "all"):
        existing(args)
    if args.part in ("atp", "all"):
        patching(args)


def patching(args: argparse.Namespace) -> None:
    """AtP (and AtP*) over all heads x positions against exhaustive exact patching."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from iit.attribution import AtPConfig, attribution_patching, exact_patching_effects
    from iit.transformers import TransformerCoordinate

    torch.manual_seed(0)
    if args.quick:
        config = GPT2Config(n_layer=4, n_embd=256, n_head=4, vocab_size=1000, n_positions=64)
    else:
        config = GPT2Config()  # GPT-2 small shape: 12 layers, d=768, 12 heads
    model = GPT2LMHeadModel(config).eval()
    seq = args.atp_seq
    base = {"input_ids": torch.randint(0, config.vocab_size, (1, seq))}
    source = {"input_ids": torch.randint(0, config.vocab_size, (1, seq))}

    def metric(out: object) -> torch.Tensor:
        return out.logits[:, -1, 11] - out.logits[:, -1, 13]  # type: ignore[attr-defined]

    coords = [
        TransformerCoordinate(layer, "head_attention_output", position=p, head=h)
        for layer in range(config.n_layer)
        for p in range(seq)
        for h in range(config.n_head)
    ]
    atp_s = median_seconds(lambda: attribution_patching(model, base, source, coords, metric), args.repeats)
    star_s = median_seconds(
        lambda: attribution_patching(model, base, source, coords, metric, AtPConfig.atp_star()),
        1,
        warmup=False,
    )
    start = time.perf_counter()
    exact = exact_patching_effects(model, base, source, coords, metric, max_rows=args.max_rows)
    exact_s = time.perf_counter() - start
    estimate = attribution_patching(model, base, source, coords, metric)
    ranks = [t.flatten().argsort().argsort().double() for t in (estimate, exact)]
    rho = float(torch.corrcoef(torch.stack(ranks))[0, 1])
    print(
        f"\nGPT-2 layers={config.n_layer} d={config.n_embd} heads={config.n_head}, {seq} tokens: "
        f"{len(coords)} head x position coordinates, threads {torch.get_num_threads()}"
    )
    print(f"AtP (1 source collect + 1 forward/backward): {atp_s:.3f} s (median of {args.repeats})")
    print(f"AtP* (softmax fix + GradDrop, {config.n_layer} backward passes): {star_s:.3f} s")
    print(f"exact patching ({len(coords)} patched runs, {args.max_rows} rows a forward): {exact_s:.1f} s")
    print(f"time ratio exact / AtP: {exact_s / atp_s:.0f}x; Spearman(AtP, exact) = {rho:.3f}")


def existing(args: argparse.Namespace) -> None:
    """The methods' cost relative to one forward, and IG against captum."""
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
    if args.skip_ig:
        return
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
