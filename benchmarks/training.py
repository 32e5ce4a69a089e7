"""IIT training-step cost: iit vs a hand-written loop with raw hooks, in-batch vs three-pass.

    python benchmarks/training.py [--quick] [--threads 1]
    python benchmarks/training.py --e2e [--quick]   # whole fits: see benchmarks/training_e2e.py

Task: the default digit-sum MLP (x, y, z -> embedding slices, S -> layers.1 [0:32)), one
variable per row, at the task's width (96: per-op overhead dominates) and at width 1024 with
batch 1024 (compute dominates). Every timed step = losses + backward + Adam step. Methods are interleaved per
repetition and the median of the repetitions is reported.

Rows:
* iit in-batch:        IITModule.compute_losses, sources = a permutation of the base rows (one forward
                      over the doubled batch, IITConfig.one_pass)
* hand in-batch:       in-batch sources in two passes with raw forward hooks and hand-written labels
* iit three-pass:      IITModule with in_batch_sources=False (base, source, counterfactual passes)
* hand three-pass:     the same three passes with raw hooks
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's iit, not an installed one

import torch
import torch.nn.functional as F

from causal_models import CounterfactualGenerator  # noqa: E402
from iit.training import IITConfig, IITModule  # noqa: E402
from tasks.digit_sum import DigitSumMLP  # noqa: E402


def hand_written_step(net, opt, batch, perm, three_pass: bool) -> float:
    """Behaviour + IIT loss with raw hooks: embedding slices for x, y, z; layers.1[0:32] for S."""
    enc = lambda v: torch.stack([v["x"], v["y"], v["z"]], 1)  # noqa: E731
    base = batch.base
    source = batch.sources[0] if three_pass else {k: v[perm] for k, v in base.items()}
    store: dict[str, torch.Tensor] = {}
    hooks = [
        net.embedded.register_forward_hook(lambda m, a, o: store.__setitem__("emb", o)),
        net.layers[1].register_forward_hook(lambda m, a, o: store.__setitem__("h1", o)),
    ]
    out_b = net(enc(base))
    if three_pass:
        net(enc(source))
    for h in hooks:
        h.remove()
    emb_src, h1_src = (store["emb"], store["h1"]) if three_pass else (store["emb"][perm], store["h1"][perm])
    on = batch.intervened  # columns x, y, z, S
    x, y, z = base["x"], base["y"], base["z"]
    xs, ys, zs = source["x"], source["y"], source["z"]
    s = torch.where(on[:, 3], xs + ys, torch.where(on[:, 0], xs, x) + torch.where(on[:, 1], ys, y))
    label_cf = s + torch.where(on[:, 2], zs, z)

    def patch_emb(m, a, o):
        o = o.clone()
        for j in range(3):
            rows = on[:, j]
            o[rows, 32 * j : 32 * (j + 1)] = emb_src[rows, 32 * j : 32 * (j + 1)]
        return o

    def patch_h1(m, a, o):
        o = o.clone()
        o[on[:, 3], :32] = h1_src[on[:, 3], :32]
        return o

    hooks = [net.embedded.register_forward_hook(patch_emb), net.layers[1].register_forward_hook(patch_h1)]
    out_cf = net(enc(base))
    for h in hooks:
        h.remove()
    loss = F.cross_entropy(out_b, x + y + z) + F.cross_entropy(out_cf, label_cf)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def iit_step(module, opt, batch, generator) -> float:
    loss = module.compute_losses(batch, generator)["total"]
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--e2e", action="store_true", help="time whole fits against a hand-written loop")
    args = parser.parse_args()
    if args.e2e:
        import training_e2e

        training_e2e.main(["--threads", str(args.threads)] + (["--quick"] if args.quick else []))
        return
    torch.set_num_threads(args.threads)
    reps, steps = (3, 4) if args.quick else (7, 12)
    for hidden, batch in ((96, 256), (1024, 1024)):
        measure(hidden, batch, reps, steps, args.threads)


def measure(hidden: int, batch_size: int, reps: int, steps: int, threads: int) -> None:
    """Time the four methods on a digit-sum MLP of width ``hidden`` and print the ratios."""
    task = DigitSumMLP(hidden=hidden)
    model = task.causal_model()
    batches = [
        CounterfactualGenerator(model, task.counterfactual_config(), seed=i).generate(batch_size) for i in range(steps)
    ]
    runs = {
        "iit in-batch (1 pass)": IITModule(task, IITConfig(in_batch_sources=True)),
        "iit three-pass": IITModule(task, IITConfig(in_batch_sources=False)),
    }
    hand_nets = {"hand in-batch (2 passes)": task.build_network(), "hand three-pass": task.build_network()}
    opts = {name: torch.optim.Adam(m.parameters(), 1e-3) for name, m in {**runs, **hand_nets}.items()}
    times: dict[str, list[float]] = {name: [] for name in opts}
    for rep in range(reps + 1):  # the first repetition warms up
        for name in opts:
            start = time.perf_counter()
            for i, batch in enumerate(batches):
                generator = torch.Generator().manual_seed(i)
                if name in runs:
                    iit_step(runs[name], opts[name], batch, generator)
                else:
                    perm = torch.randperm(len(batch), generator=generator)
                    hand_written_step(hand_nets[name], opts[name], batch, perm, "three" in name)
            if rep:
                times[name].append((time.perf_counter() - start) / steps)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"\ndigit-sum MLP hidden {hidden}, batch {batch_size}, {threads} thread(s), median of {reps} x {steps} steps")
    print(f"{'method':<28}{'ms/step':>10}{'examples/s':>12}")
    for name, t in med.items():
        print(f"{name:<28}{1000 * t:>10.2f}{batch_size / t:>12.0f}")
    print(f"iit in-batch / hand in-batch      = {med['iit in-batch (1 pass)'] / med['hand in-batch (2 passes)']:.3f}  (target <= 1.15)")
    print(f"iit three-pass / hand three-pass  = {med['iit three-pass'] / med['hand three-pass']:.3f}  (target <= 1.15)")
    print(f"iit in-batch / iit three-pass     = {med['iit in-batch (1 pass)'] / med['iit three-pass']:.3f}  (target <= 0.75)")


if __name__ == "__main__":
    main()
