"""Intervention benchmark: cost of iit interventions relative to a plain forward, next to
hand-written hooks, pyvene 0.1.8 and nnsight 0.8.1, measured side by side in one run.

(a) GPT-2-small-shaped model (12 x 768, vocab 50257, random init), batch 32 x 32, interchange of
    the residual stream after block 6 (all positions): iit ``Interventionable.intervene`` with
    ``Interchange`` (default settings), hand-written hooks (full source run; source run stopped
    by an exception after block 6), pyvene, nnsight (two traces; source trace stopped).
    Patched logits of every peer are checked equal to iit's.
(b) BERT-base and a Llama-shaped config (GQA): position-level (last real token, per row) and
    head-level (one head's attention output) interchanges vs hand-written hooks; one DAS
    training step (low-rank k=16 and full rotation, block 6, all positions) vs pyvene's and a
    hand-written one on the GPT-2-shaped model.

Every ratio is median(method) / median(plain forward) over interleaved repetitions (the min/min
ratio is printed next to it: it is robust to a busy machine), with
``torch.set_num_threads(2)``. Run ``python benchmarks/interventions.py`` (``--quick``: small
models, few repetitions).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

# passive OpenMP waiting: on a shared machine, spinning threads distort every timing
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import transformers as tf
from torch import Tensor, nn

from iit import Coordinate, Interchange, Interventionable
from iit.das import DASBatch, das_step
from iit.learned import LowRankRotatedInterchange, RotatedInterchange
from iit.transformers import Tokens, TransformerCoordinate, TransformerInterventionable

torch.set_num_threads(2)


class _Stop(Exception):
    """Raised by the hand-written read hooks to stop a source run after the read layer."""


def bench(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, list[float]]:
    """Seconds of each call of each function, repetitions interleaved (one warm-up call each)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def report(title: str, times: dict[str, list[float]], baseline: str) -> dict[str, float]:
    """Print median (and min, robust to a busy machine) ms and ratios; return median ratios."""
    med = {name: statistics.median(ts) for name, ts in times.items()}
    low = {name: min(ts) for name, ts in times.items()}
    print(f"\n## {title}")
    print(f"| method | median ms | ratio vs {baseline} (median) | min ms | ratio (min) |")
    print("|---|---:|---:|---:|---:|")
    ratios = {}
    for name in times:
        ratios[name] = med[name] / med[baseline]
        print(f"| {name} | {1000 * med[name]:.1f} | **{ratios[name]:.2f}** | {1000 * low[name]:.1f} | "
              f"{low[name] / low[baseline]:.2f} |")
    return ratios


# ---------------------------------------------------------------------------- hand-written
def hook_patch(model: nn.Module, module: nn.Module, base: Any, source: Any, stop: bool,
               select: Callable[[Tensor], Tensor] | None = None,
               write: Callable[[Tensor, Tensor], Tensor] | None = None) -> Any:
    """Hand-written interchange: read ``module``'s output on the source (optionally stopping the
    source run there), write it into the base run."""
    saved: list[Tensor] = []

    def read(m: nn.Module, a: tuple, o: Tensor) -> None:
        saved.append(o if select is None else select(o))
        if stop:
            raise _Stop

    h = module.register_forward_hook(read)
    try:
        model(**source) if isinstance(source, dict) else model(source)
    except _Stop:
        pass
    finally:
        h.remove()

    def patch(m: nn.Module, a: tuple, o: Tensor) -> Tensor:
        return saved[0] if write is None else write(o, saved[0])

    h = module.register_forward_hook(patch)
    try:
        return model(**base) if isinstance(base, dict) else model(base)
    finally:
        h.remove()


def hook_patch_input(model: nn.Module, module: nn.Module, base: dict, source: dict,
                     select: Callable[[Tensor], Tensor], write: Callable[[Tensor, Tensor], Tensor]) -> Any:
    """Hand-written interchange on a module *input* (per-head attention output), source stopped."""
    saved: list[Tensor] = []

    def read(m: nn.Module, a: tuple) -> None:
        saved.append(select(a[0]))
        raise _Stop

    h = module.register_forward_pre_hook(read)
    try:
        model(**source)
    except _Stop:
        pass
    finally:
        h.remove()
    h = module.register_forward_pre_hook(lambda m, a: (write(a[0], saved[0]),) + a[1:])
    try:
        return model(**base)
    finally:
        h.remove()


# ---------------------------------------------------------------------------- part (a)
def part_a(quick: bool, reps: int) -> dict[str, float]:
    import pyvene as pv
    from nnsight import NNsight

    layers, width, heads = (4, 256, 4) if quick else (12, 768, 12)
    B, T, L = (8, 16, 2) if quick else (32, 32, 6)
    vocab = 8000 if quick else 50257
    torch.manual_seed(0)
    cfg = tf.GPT2Config(n_layer=layers, n_embd=width, n_head=heads, vocab_size=vocab)
    model = tf.GPT2LMHeadModel(cfg).eval()
    base = torch.randint(0, vocab, (B, T))
    source = torch.randint(0, vocab, (B, T))
    block = model.transformer.h[L]
    net = Interventionable(model)
    iv = Interchange(Coordinate(f"transformer.h.{L}"))
    pvm = pv.IntervenableModel({"layer": L, "component": "block_output"}, model=model)
    locs = [[list(range(T))] * B]
    nns = NNsight(model)

    def nnsight_run(stop: bool) -> Tensor:
        with nns.trace(source) as tracer:
            h = nns.transformer.h[L].output.save()
            if stop:
                tracer.stop()
        with nns.trace(base):
            nns.transformer.h[L].output = h
            out = nns.output.save()
        return out.logits

    fns = {
        "plain forward": lambda: model(base),
        "iit intervene (Interchange, defaults)": lambda: net.intervene(base, [iv], [source]),
        "hand-written hooks, full source run": lambda: hook_patch(model, block, base, source, stop=False),
        "hand-written hooks, source stopped": lambda: hook_patch(model, block, base, source, stop=True),
        "pyvene vanilla": lambda: pvm({"input_ids": base}, [{"input_ids": source}], {"sources->base": (locs, locs)}),
        "nnsight 2 traces": lambda: nnsight_run(False),
        "nnsight 2 traces, source stopped": lambda: nnsight_run(True),
    }
    with torch.no_grad():
        ours = net.intervene(base, [iv], [source]).logits
        checks = {
            "hand-written": hook_patch(model, block, base, source, stop=True).logits,
            "pyvene": pvm({"input_ids": base}, [{"input_ids": source}], {"sources->base": (locs, locs)})[1].logits,
            "nnsight": nnsight_run(True),
        }
        print(f"\n# (a) GPT-2 {layers}x{width} (vocab {vocab}), batch {B}x{T}, block {L} output, all positions")
        for name, logits in checks.items():
            print(f"max |logits - iit logits| {name}: {(logits - ours).abs().max():.2e}")
        print(f"(patch effect: max |iit - plain| = {(ours - model(base).logits).abs().max():.2f})")
        times = bench(fns, reps)
    ratios = report("(a) intervened forward / plain forward", times, "plain forward")
    gap = ratios["iit intervene (Interchange, defaults)"] / ratios["hand-written hooks, source stopped"] - 1
    print(f"\niit vs hand-written hooks with early-stopped source: {100 * gap:+.1f}% (target <= +5%)")
    return ratios


# ---------------------------------------------------------------------------- part (b)
def _padded(B: int, T: int, vocab: int, seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    for i, n in enumerate(lengths.tolist()):
        mask[i, n:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def part_b_inference(name: str, model: nn.Module, layer_module: nn.Module, o_proj: nn.Module,
                     vocab: int, B: int, T: int, L: int, reps: int) -> None:
    net = TransformerInterventionable(model)
    base, source = _padded(B, T, vocab, 1), _padded(B, T, vocab, 2)
    d = net.shape.d_head
    pos_iv = Interchange(TransformerCoordinate(L, "block_output", position=Tokens.last()))
    head_iv = Interchange(TransformerCoordinate(L, "head_attention_output", head=3))
    last_b = base["attention_mask"].sum(1) - 1
    last_s = source["attention_mask"].sum(1) - 1
    rows = torch.arange(B)

    def write_last(o: Tensor, v: Tensor) -> Tensor:
        o = o.clone()
        o[rows, last_b] = v
        return o

    def write_head(x: Tensor, v: Tensor) -> Tensor:
        x = x.clone()
        x[..., 3 * d : 4 * d] = v
        return x

    def hand_pos() -> Any:
        return hook_patch(model, layer_module, base, source, True, lambda o: o[rows, last_s], write_last)

    def hand_head() -> Any:
        return hook_patch_input(model, o_proj, base, source, lambda x: x[..., 3 * d : 4 * d], write_head)

    fns = {
        "plain forward": lambda: model(**base),
        "iit position-level (Tokens.last)": lambda: net.intervene(base, [pos_iv], [source]),
        "hand-written position-level": hand_pos,
        "iit head-level (head 3)": lambda: net.intervene(base, [head_iv], [source]),
        "hand-written head-level": hand_head,
    }
    with torch.no_grad():
        for a, b in [("iit position-level (Tokens.last)", "hand-written position-level"),
                     ("iit head-level (head 3)", "hand-written head-level")]:
            diff = (fns[a]().last_hidden_state - fns[b]().last_hidden_state).abs().max()
            print(f"{name}: max |{a} - {b}| = {diff:.2e}")
        times = bench(fns, reps)
    report(f"(b) {name}, batch {B}x{T} (padded), layer {L}", times, "plain forward")


def part_b_das(quick: bool, reps: int) -> None:
    import pyvene as pv

    layers, width, heads = (4, 256, 4) if quick else (12, 768, 12)
    B, T, L, k = (8, 16, 2, 16) if quick else (32, 32, 6, 16)
    vocab = 8000 if quick else 50257
    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=layers, n_embd=width, n_head=heads, vocab_size=vocab)).eval()
    model.requires_grad_(False)
    base = {"input_ids": torch.randint(0, vocab, (B, T))}
    source = {"input_ids": torch.randint(0, vocab, (B, T))}
    labels = torch.randint(0, vocab, (B,))
    block = model.transformer.h[L]

    def loss_fn(out: Any, y: Tensor) -> Tensor:
        return nn.functional.cross_entropy(out.logits[:, -1], y)

    net = Interventionable(model)
    coord = Coordinate(f"transformer.h.{L}")
    batch = DASBatch(base, [source], labels)
    results: dict[str, Callable[[], Any]] = {"plain forward (no_grad)": lambda: _nograd(model, base)}
    for kind in ("low-rank k=16", "full rotation, 16 dims"):
        torch.manual_seed(1)
        if kind.startswith("low"):
            ours = LowRankRotatedInterchange(coord, width, k)
            theirs_iv = pv.LowRankRotatedSpaceIntervention(embed_dim=width, low_rank_dimension=k, keep_last_dim=True)
        else:
            ours = RotatedInterchange(coord, width, dims=(0, k))
            theirs_iv = pv.RotatedSpaceIntervention(embed_dim=width, keep_last_dim=True)
            theirs_iv.set_interchange_dim(k)
        ours.rotation.weight = theirs_iv.rotate_layer.weight.detach().clone()
        hand = copy.deepcopy(ours)  # hand-written loop uses its own copy of the rotation
        pvm = pv.IntervenableModel({"layer": L, "component": "block_output", "intervention": theirs_iv}, model=model)
        locs = [[list(range(T))] * B]
        opt_ours = torch.optim.Adam(ours.parameters(), lr=1e-3)
        opt_theirs = torch.optim.Adam(pvm.get_trainable_parameters() if hasattr(pvm, "get_trainable_parameters") else theirs_iv.parameters(), lr=1e-3)
        opt_hand = torch.optim.Adam(hand.parameters(), lr=1e-3)

        def step_ours(ours: nn.Module = ours, opt: Any = opt_ours) -> float:
            return das_step(net, [ours], batch, loss_fn, opt)

        def step_theirs(pvm: Any = pvm, opt: Any = opt_theirs, locs: Any = locs) -> float:
            opt.zero_grad()
            _, out = pvm(base, [source], {"sources->base": (locs, locs)})
            loss = loss_fn(out, labels)
            loss.backward()
            opt.step()
            return float(loss.detach())

        def step_hand(hand: nn.Module = hand, opt: Any = opt_hand) -> float:
            opt.zero_grad()
            saved: list[Tensor] = []

            def read(m: nn.Module, a: tuple, o: Tensor) -> None:
                saved.append(o)
                raise _Stop

            h = block.register_forward_hook(read)
            try:
                with torch.no_grad():
                    model(**source)
            except _Stop:
                pass
            finally:
                h.remove()
            w = hand.rotation.weight  # materialised once
            cols = w if w.shape[1] == k else w[:, :k]

            def patch(m: nn.Module, a: tuple, o: Tensor) -> Tensor:
                return o + ((saved[0] - o) @ cols) @ cols.T

            h = block.register_forward_hook(patch)
            try:
                loss = loss_fn(model(**base), labels)
            finally:
                h.remove()
            loss.backward()
            opt.step()
            return float(loss.detach())

        # correctness: the same loss from the same weights
        l_ours, l_theirs, l_hand = step_ours(), step_theirs(), step_hand()
        print(f"DAS {kind}: first-step loss iit {l_ours:.6f}, pyvene {l_theirs:.6f}, hand-written {l_hand:.6f}")
        results[f"iit das_step, {kind}"] = step_ours
        results[f"pyvene step, {kind}"] = step_theirs
        results[f"hand-written step, {kind}"] = step_hand
    times = bench(results, reps)
    ratios = report(f"(b) DAS training step (src fwd + base fwd/bwd + Adam), GPT-2 {layers}x{width}, {B}x{T}",
                    times, "plain forward (no_grad)")
    for kind in ("low-rank k=16", "full rotation, 16 dims"):
        ours_r = ratios[f"iit das_step, {kind}"]
        print(f"{kind}: iit/pyvene = {ours_r / ratios[f'pyvene step, {kind}']:.2f} (target <= 1.00), "
              f"iit/hand-written = {ours_r / ratios[f'hand-written step, {kind}']:.2f} (target <= 1.10)")


def _nograd(model: nn.Module, base: dict) -> Any:
    with torch.no_grad():
        return model(**base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small models, few repetitions")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per method")
    parser.add_argument("--part", choices=["a", "b", "all"], default="all")
    args = parser.parse_args()
    reps = args.reps or (3 if args.quick else 5)
    if args.part in ("a", "all"):
        part_a(args.quick, reps)
    if args.part in ("b", "all"):
        B, T = (8, 16) if args.quick else (32, 32)
        layers, width, heads = (4, 256, 4) if args.quick else (12, 768, 12)
        torch.manual_seed(0)
        bert = tf.BertModel(tf.BertConfig(num_hidden_layers=layers, hidden_size=width, num_attention_heads=heads,
                                          intermediate_size=4 * width)).eval()
        L = layers // 2
        print(f"\n# (b) BERT {layers}x{width}")
        part_b_inference("BERT", bert, bert.encoder.layer[L], bert.encoder.layer[L].attention.output.dense,
                         30522, B, T, L, reps)
        llama = tf.LlamaModel(tf.LlamaConfig(num_hidden_layers=layers, hidden_size=width, num_attention_heads=heads,
                                             num_key_value_heads=heads // 4, intermediate_size=(8 * width) // 3,
                                             vocab_size=32000)).eval()
        print(f"\n# (b) Llama-shaped {layers}x{width}, {heads} heads / {heads // 4} kv heads")
        part_b_inference("Llama", llama, llama.layers[L], llama.layers[L].self_attn.o_proj, 32000, B, T, L, reps)
        part_b_das(args.quick, reps)


if __name__ == "__main__":
    main()
