"""Semiring backward (max-product, entropy) vs autograd's backward on a BERT-shaped model.

    python benchmarks/semiring.py [--quick] [--repeats N]

Model: 4-layer BERT encoder (hidden 256, 4 heads, FFN 1024), 32 tokens, batch 1, float32,
sources = the input embeddings. Times (medians of ``--repeats`` runs, ``torch.set_num_threads(2)``):

* autograd: ``loss.backward()`` only (the forward is timed separately);
* semiring walk: the reverse walk only, on an already traced and executed graph;
* semiring total: trace (make_fx) + forward + walk, i.e. one ``semiring_backward`` call.

Memory: bytes held for the backward pass: autograd's saved tensors (parameters excluded) vs
the semiring pass's stored node values plus the peak of its live states.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

sys.path.insert(0, ".")
from iit.attribution.semiring import SemiringConfig  # noqa: E402
from iit.attribution.semiring.backward import _walk  # noqa: E402
from iit.attribution.semiring.trace import trace_computation  # noqa: E402

SOURCE = "embeddings.word_embeddings"


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


def autograd_backward(model, inputs) -> float:
    captured = []
    h = model.embeddings.word_embeddings.register_forward_hook(
        lambda _m, _a, o: captured.append(o.detach().requires_grad_()) or captured[-1]
    )
    try:
        loss = target(model(**inputs)).sum()
    finally:
        h.remove()
    t = time.perf_counter()
    loss.backward()
    sync()
    return time.perf_counter() - t


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()
    return total


def memory(model, inputs) -> dict[str, int]:
    """Bytes held for the backward pass: autograd's saved tensors vs the semiring pass's stored
    node values plus the peak of live semiring states."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = []

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        captured = []
        h = model.embeddings.word_embeddings.register_forward_hook(
            lambda _m, _a, o: captured.append(o.detach().requires_grad_()) or captured[-1]
        )
        try:
            target(model(**inputs)).sum()
        finally:
            h.remove()
    out = {"autograd": tensor_bytes(saved)}
    comp = trace_computation(model, inputs, target, (SOURCE,))
    values = [v for n, v in comp.env.items() if n.op != "get_attr"]
    flat = [t for v in values for t in (v if isinstance(v, (tuple, list)) else [v])]
    env_bytes = tensor_bytes(flat)
    for kind in ("max_product", "entropy"):
        live: list[int] = []
        with torch.no_grad():
            _walk(comp, SemiringConfig(kind, sources=(SOURCE,)), live)
        out[kind] = env_bytes + max(live)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="2 layers, 2 repeats")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(2)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    layers = 2 if args.quick else args.layers
    repeats = 2 if args.quick else args.repeats
    hidden, seq = 256, 32
    model, inputs = build(layers, hidden, seq, device)
    times: dict[str, list[float]] = {"autograd backward": [], "forward": []}
    for _ in range(repeats):
        t = time.perf_counter()
        with torch.no_grad():
            model(**inputs)
        sync()
        times["forward"].append(time.perf_counter() - t)
        times["autograd backward"].append(autograd_backward(model, inputs))
    for kind in ("max_product", "entropy"):
        config = SemiringConfig(kind, sources=(SOURCE,))
        walk, total = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            comp = trace_computation(model, inputs, target, (SOURCE,))
            t1 = time.perf_counter()
            with torch.no_grad():
                _walk(comp, config)
            sync()
            t2 = time.perf_counter()
            walk.append(t2 - t1)
            total.append(t2 - t0)
        times[f"{kind} walk"], times[f"{kind} total"] = walk, total
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = med["autograd backward"]
    print(f"device={device} layers={layers} hidden={hidden} seq={seq} repeats={repeats}")
    for k, v in med.items():
        print(f"  {k:<22} {v * 1e3:9.1f} ms   ratio vs autograd backward {v / ref:7.2f}x")
    mem = memory(model, inputs)
    for kind, m in mem.items():
        print(f"  held for backward {kind:<12} {m / 2**20:8.2f} MiB   ratio vs autograd {m / mem['autograd']:6.2f}x")


if __name__ == "__main__":
    main()
