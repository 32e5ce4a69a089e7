"""Signed max-product matmul kernels vs ``torch.matmul`` on the shapes of a BERT layer backward.

    python benchmarks/tropical_kernel.py [--repeats N] [--unreached F] [--large] [--no-compile]
                                         [--old] [--threads T]

Per shape (float32, state ``[..., i, j]`` x weights ``[..., j, k]``), milliseconds of:

* ``mm``: ``torch.matmul`` of the same shapes (BLAS; the ratios' unit);
* ``cpp``: :func:`signed_max_product_matmul` with the C++ kernel (the ``compiled=False`` default);
* ``torch``: the same with ``backend="torch"`` (chunked torch ops, no compiler at all);
* ``compiled``: ``compiled=True, backend="torch"`` (torch.compile / inductor; compiled in a
  warm-up call);
* ``old``/``old_c`` (``--old``): the previous kernel (signed products reduced with amax / amin) eager / compiled on the
  ``[i, k, j]`` layout the semiring contraction hands it.

Each timing is the median over ``--repeats`` rounds; within a round the variants run one after
another (interleaved), each timed over enough calls to last about 20 ms. ``--unreached F`` marks
a fraction ``F`` of the state unreached (``(-inf, +inf)``) and zeroes 10% of the weights, which
sends the torch and compiled paths through their NaN-checking general form (the C++ kernel has
one form).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

sys.path.insert(0, ".")
from iit.semiring.kernels import signed_products  # noqa: E402
from iit.semiring.tropical import (  # noqa: E402
    cpp_kernel_available,
    signed_max_product_matmul,
)

# (batch, i, j, k): a BERT-style layer backward at 32 tokens (hidden 256, FFN 1024, 4 heads)
SHAPES = [
    ((), 32, 1024, 256),
    ((), 32, 256, 1024),
    ((), 32, 256, 256),
    ((4,), 32, 32, 64),
    ((4,), 32, 64, 32),
    ((), 1, 3, 2),
]
LARGE = [((), 512, 768, 3072)]


def make(batch, i, j, k, unreached, seed=0):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(*batch, i, j, generator=g), torch.randn(*batch, i, j, generator=g)
    s_max, s_min = torch.maximum(a, b), torch.minimum(a, b)
    w = torch.randn(*batch, j, k, generator=g)
    if unreached:
        off = torch.rand(s_max.shape, generator=g) < unreached
        s_max[off], s_min[off] = -torch.inf, torch.inf
        w[torch.rand(w.shape, generator=g) < 0.1] = 0.0
    return s_max, s_min, w


def timings(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median ms per call of each function, interleaved rounds."""
    inner = {}
    for name, fn in fns.items():
        fn()  # warm-up (compiles)
        start = time.perf_counter()
        fn()
        inner[name] = max(1, int(0.02 / max(time.perf_counter() - start, 1e-7)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / inner[name] * 1e3)
    return {name: statistics.median(v) for name, v in samples.items()}


def _old_reduce(w, mx, mn, dims):
    """The previous kernel, kept here as the baseline: signed products, then amax / amin."""
    hi, lo = signed_products(w, mx, mn)
    return hi.amax(dims), lo.amin(dims)


def _old_chunked(w, mx, mn, dims, chunk=1 << 20):
    """Its eager form: chunks over dim 0 of about ``chunk`` products."""
    full = torch.broadcast_shapes(w.shape, mx.shape, mn.shape)
    step = max(1, chunk // max(1, full.numel() // full[0]))
    parts = [
        _old_reduce(*[t[r : r + step] if t.shape[0] != 1 else t for t in (w, mx, mn)], dims)
        for r in range(0, full[0], step)
    ]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def variants(
    s_max: torch.Tensor, s_min: torch.Tensor, w: torch.Tensor, cpp: bool, compile_: bool, old: bool
) -> dict[str, Callable[[], object]]:
    fns: dict[str, Callable[[], object]] = {"mm": lambda: torch.matmul(s_max, w)}
    if cpp:
        fns["cpp"] = lambda: signed_max_product_matmul(s_max, s_min, w, backend="cpp")
    fns["torch"] = lambda: signed_max_product_matmul(s_max, s_min, w, backend="torch")
    if compile_:
        fns["compiled"] = lambda: signed_max_product_matmul(
            s_max, s_min, w, compiled=True, backend="torch"
        )
    if old:
        # the layout MaxProductSemiring.contract builds: [..., i, k, j], reduce the last dim
        wa, mx, mn = w.transpose(-1, -2).unsqueeze(-3), s_max.unsqueeze(-2), s_min.unsqueeze(-2)
        red = (wa.dim() - 1,)
        fns["old"] = lambda: _old_chunked(wa, mx, mn, red)
        if compile_:
            fused = torch.compile(_old_reduce, dynamic=True, fullgraph=True)
            fns["old_c"] = lambda: fused(wa, mx, mn, red)
    return fns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--unreached", type=float, default=0.0)
    parser.add_argument("--large", action="store_true", help="add [512,768] x [768,3072]")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--old", action="store_true", help="also time the previous kernel")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    has_cpp = cpp_kernel_available()  # builds the C++ kernel on the very first run
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, C++ kernel: "
        f"{'yes' if has_cpp else 'no'} ({time.perf_counter() - start:.1f} s to load/build), "
        f"unreached {args.unreached:g}, median of {args.repeats}"
    )
    rows = []
    for batch, i, j, k in SHAPES + (LARGE if args.large else []):
        s_max, s_min, w = make(batch, i, j, k, args.unreached)
        fns = variants(s_max, s_min, w, has_cpp, not args.no_compile, args.old)
        ms = timings(fns, args.repeats)
        name = f"{list(batch) + [i, j]} x {list(batch) + [j, k]}"
        rows.append((name, ms))
        cells = "  ".join(
            f"{key} {value:8.3f}" + ("" if key == "mm" else f" ({value / ms['mm']:5.1f}x)")
            for key, value in ms.items()
        )
        print(f"{name:32s} {cells}", flush=True)


if __name__ == "__main__":
    main()
