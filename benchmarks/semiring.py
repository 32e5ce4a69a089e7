"""Semiring backward (real, max-product, entropy) vs autograd's backward on a BERT-shaped model.

    python benchmarks/semiring.py [--quick] [--repeats N] [--no-compile]

Model: 4-layer BERT encoder (hidden 256, 4 heads, FFN 1024), 32 tokens, batch 1, float32,
sources = the input embeddings. Times are medians of ``--repeats`` runs (``torch.set_num_threads(2)``, ``--threads``),
all measured side by side in this one run:

* autograd: the backward alone, ``torch.autograd.grad(loss, source)`` with frozen parameters
  (the same quantity the semiring pass computes; the ratios' unit); a training
  ``loss.backward()`` that also fills every parameter's gradient is printed beside it;
* walk: the semiring reverse walk only, on an already traced and executed graph, with
  ``record_path=False`` (values only); ``eager`` = plain PyTorch ops, ``compiled`` = the whole
  walk as one program fused by ``torch.compile`` (``SemiringConfig(compile=True)``; compiled
  once per semiring in a warm-up call, not timed; a timed call includes finding the program
  for its graph structure and its inputs);
* total: one ``semiring_backward`` call (the recorded forward + the walk), against autograd's
  forward with the source requiring grad + its backward (``x fwd+bwd``).

Memory: bytes held for the backward pass. autograd: its saved tensors (parameters excluded) with
frozen parameters (printed beside: with parameter gradients); semiring: the peak, over the walk,
of live states plus stored forward values (each released after its last reader), with
``record_path=False``; for max-product also with ``record_path=True`` (every node's state kept
for path recovery); compiled: see :func:`compiled_peak_bytes`. Transient temporaries inside
one op are not counted on either side.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

sys.path.insert(0, ".")
from iit.semiring import SemiringCache, SemiringConfig  # noqa: E402
from iit.semiring.backward import _held_bytes, _walk, run_walk  # noqa: E402
from iit.semiring.trace import trace_computation  # noqa: E402

SOURCE = "embeddings.word_embeddings"


#: the parameter transforms and compiled programs every timed walk reuses (as a SemiringBackprop
#: would keep them)
CACHE = SemiringCache()


def build(layers: int, hidden: int, seq: int, device: str):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=1000, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=4 * hidden, max_position_embeddings=64, attn_implementation="eager",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    model = BertModel(config).eval().to(device)
    ids = torch.randint(0, 1000, (1, seq), device=device)
    return model, {"input_ids": ids}


def target(out):
    return out.last_hidden_state[:, 0].sum(-1)


def _source_forward(model, inputs):
    """Forward with the word-embedding output as a fresh leaf; returns (loss, leaf)."""
    captured = []
    h = model.embeddings.word_embeddings.register_forward_hook(
        lambda _m, _a, o: captured.append(o.detach().requires_grad_()) or captured[-1]
    )
    try:
        loss = target(model(**inputs)).sum()
    finally:
        h.remove()
    return loss, captured[0]


def autograd_backward(model, inputs, with_params: bool = False) -> float:
    """Seconds of autograd's backward alone: ``torch.autograd.grad`` to the source (what the
    semiring pass computes) with frozen parameters, or ``with_params`` an ordinary training
    ``backward`` that also fills every parameter's gradient."""
    model.requires_grad_(with_params)
    try:
        loss, leaf = _source_forward(model, inputs)
        sync()
        t = time.perf_counter()
        if with_params:
            loss.backward()
        else:
            torch.autograd.grad(loss, leaf)
        sync()
        return time.perf_counter() - t
    finally:
        model.zero_grad(set_to_none=True)
        model.requires_grad_(False)


def autograd_forward_backward(model, inputs) -> float:
    """Seconds of a forward that records autograd's graph (frozen parameters, source leaf
    requiring grad) plus ``torch.autograd.grad`` to the source: what one call costs a user."""
    model.requires_grad_(False)
    sync()
    t = time.perf_counter()
    loss, leaf = _source_forward(model, inputs)
    torch.autograd.grad(loss, leaf)
    sync()
    return time.perf_counter() - t


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def autograd_saved_bytes(model, inputs, with_params: bool = False) -> int:
    """Bytes of the tensors autograd saves for the backward (parameters excluded); with frozen
    parameters (source gradient only) or ``with_params`` (training: also the layer inputs that
    the weight gradients need)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = []

    def pack(t):
        saved.append(t)
        return t

    model.requires_grad_(with_params)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            _source_forward(model, inputs)
    finally:
        model.requires_grad_(False)
    return _held_bytes(saved, params)


def semiring_peak_bytes(model, inputs, config: SemiringConfig) -> int:
    comp = trace_computation(model, inputs, target, (SOURCE,))
    held: list[int] = []
    with torch.no_grad():
        _walk(comp, config, held)
    return max(held)


def compiled_peak_bytes(model, inputs, config: SemiringConfig) -> int:
    """Peak bytes of a compiled walk: its recorded program run op by op (each temporary freed
    after its last use, every input and the sources held until the end, measured while each
    op's inputs and output coexist; parameters and their cached transforms excluded).
    Inductor's fused code materialises fewer temporaries, so this is an estimate from above
    of what the compiled program holds."""
    from iit.semiring import compiled_walk as cw

    comp = trace_computation(model, inputs, target, (SOURCE,))
    with torch.no_grad():
        run_walk(trace_computation(model, inputs, target, (SOURCE,)), config, CACHE)  # (compiled)
    program = CACHE.walks.last()  # the one just used
    gm = program.run._orig_mod
    values = cw._flatten(comp)
    transforms = cw._transform_inputs(program.transforms, values.params)
    owned = {t.untyped_storage().data_ptr() for t in [*values.params, *transforms]}
    last = {a: i for i, n in enumerate(gm.graph.nodes) for a in n.all_input_nodes}
    args = iter(cw.program_args(program, values))
    outside = [comp.env[n] for n in comp.sources.values()]  # the caller keeps the sources
    env, live, peak = {}, {}, 0
    with torch.no_grad():
        for i, n in enumerate(gm.graph.nodes):
            if n.op == "output":
                break
            if n.op == "placeholder":
                env[n] = live[n] = next(args)  # held by the caller until the program returns
                continue
            if n.op == "get_attr":
                env[n] = live[n] = getattr(gm, n.target)
            else:
                a = torch.fx.node.map_arg(n.args, env.__getitem__)
                k = torch.fx.node.map_arg(n.kwargs, env.__getitem__)
                env[n] = live[n] = n.target(*a, **k)
            peak = max(peak, _held_bytes([*live.values(), *outside], owned))  # inputs + output
            for x in n.all_input_nodes:
                if last.get(x) == i and x.op != "placeholder":
                    live.pop(x, None)
    return peak


CONFIGS = {
    "real": ("real", "scalar"),
    "max_product (scalar)": ("max_product", "scalar"),
    "max_product (op)": ("max_product", "op"),
    "entropy": ("entropy", "scalar"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="2 layers, 2 repeats")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--no-compile", action="store_true", help="eager walks only")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    layers = 2 if args.quick else args.layers
    repeats = 2 if args.quick else args.repeats
    hidden, seq = 256, 32
    model, inputs = build(layers, hidden, seq, device)
    modes = (False,) if args.no_compile else (False, True)
    walk: dict[str, list[float]] = {}
    total: dict[str, list[float]] = {}
    for compiled in modes:  # warm-up: builds the kernel, compiles the walks (not timed)
        for name, (semiring, granularity) in CONFIGS.items():
            if compiled:
                print(f"compiling the {name} walk (once) ...", flush=True)
            config = SemiringConfig(
                semiring, granularity, sources=(SOURCE,), record_path=False, compile=compiled
            )
            with torch.no_grad():
                run_walk(trace_computation(model, inputs, target, (SOURCE,)), config, CACHE)
    for with_params in (False, True):
        autograd_backward(model, inputs, with_params)  # warm-up
    ref: list[float] = []
    ref_params: list[float] = []
    ref_total: list[float] = []
    for _ in range(repeats):  # interleaved, so drift hits every method alike
        ref.append(autograd_backward(model, inputs))
        ref_params.append(autograd_backward(model, inputs, with_params=True))
        ref_total.append(autograd_forward_backward(model, inputs))
        for compiled in modes:
            for name, (semiring, granularity) in CONFIGS.items():
                key = f"{name}, {'compiled' if compiled else 'eager'}"
                config = SemiringConfig(
                    semiring, granularity, sources=(SOURCE,), record_path=False, compile=compiled
                )
                t0 = time.perf_counter()
                comp = trace_computation(model, inputs, target, (SOURCE,))
                t1 = time.perf_counter()
                with torch.no_grad():
                    run_walk(comp, config, CACHE)
                sync()
                t2 = time.perf_counter()
                walk.setdefault(key, []).append(t2 - t1)
                total.setdefault(key, []).append(t2 - t0)
    base, base_total = statistics.median(ref), statistics.median(ref_total)
    print(f"device={device} layers={layers} hidden={hidden} seq={seq} repeats={repeats}")
    print(
        f"autograd backward: {base * 1e3:.1f} ms (median; autograd.grad to the source, frozen "
        f"parameters = the walk's unit); with parameter gradients (loss.backward()): "
        f"{statistics.median(ref_params) * 1e3:.1f} ms; forward + backward: "
        f"{base_total * 1e3:.1f} ms (the total's unit)"
    )
    print(
        f"{'semiring backward':<34} {'walk ms':>9} {'x bwd':>7} {'total ms':>9} {'x fwd+bwd':>10}"
    )
    for key in walk:
        w, t = statistics.median(walk[key]), statistics.median(total[key])
        print(f"{key:<34} {w * 1e3:>9.1f} {w / base:>7.2f} {t * 1e3:>9.1f} {t / base_total:>10.2f}")
    saved = autograd_saved_bytes(model, inputs)
    saved_params = autograd_saved_bytes(model, inputs, with_params=True)
    print(
        f"\nheld for the backward: autograd saved tensors {saved / 2**20:.2f} MiB (the unit; "
        f"{saved_params / 2**20:.2f} MiB when parameter gradients are needed too)"
    )
    rows = [(name, s, g, False) for name, (s, g) in CONFIGS.items()]
    rows.append(("max_product (scalar), record_path", "max_product", "scalar", True))
    for name, semiring, granularity, record in rows:
        config = SemiringConfig(semiring, granularity, sources=(SOURCE,), record_path=record)
        peak = semiring_peak_bytes(model, inputs, config)
        print_peak(f"{name}, eager", peak, saved)
    if args.no_compile:
        return
    for name, (semiring, granularity) in CONFIGS.items():
        config = SemiringConfig(
            semiring, granularity, sources=(SOURCE,), record_path=False, compile=True
        )
        print_peak(
            f"{name}, compiled (estimate)", compiled_peak_bytes(model, inputs, config), saved
        )


def print_peak(name: str, peak: int, unit: int) -> None:
    print(f"  {name:<45} peak {peak / 2**20:8.2f} MiB   x autograd {peak / unit:6.2f}")


if __name__ == "__main__":
    main()
