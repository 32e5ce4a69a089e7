"""End-to-end training time: a whole ``Trainer.fit`` of :class:`IITModule` (data module,
per-epoch validation and logging) against a hand-written PyTorch loop doing the same work.

    python benchmarks/training_e2e.py [--quick] [--threads 1]
    python benchmarks/training.py --e2e          # the same

Both sides train the same digit-sum MLP from the same initial weights on the same
precomputed counterfactual pairs (the data module's), with Adam, the same batch size and
epochs, in-batch sources (a random permutation of the batch per step), behaviour + IIT loss,
and evaluate every epoch on the same held-out pairs: task accuracy, IIA on the pairs' own
variables and IIA per variable (every row intervening on that variable). The hand-written loop
uses raw forward hooks, labels written by hand (``x + y + z``) and plain tensor indexing; like
the fit, it keeps each epoch's mean training loss and saves its weights and optimiser state
at the end (the fit's checkpoint). It runs the base and the intervened batch as two forwards, as
a user writes it; the library's default step runs them as one forward over the doubled batch
(``IITConfig.one_pass``), so the row "IIT hand-written, one pass" also times the hand-written loop
with that trick (the ratios are against the two-forward loop).
Setups: the task's MLP (width 96, batch 64: per-step overheads dominate) and a wide MLP
(width 1024, batch 512, 4096 pairs: compute dominates). Rows: IIT and behaviour-only, for
``pl.Trainer`` at Lightning's defaults (progress bar, logger, checkpoint) and for
``iit.training.make_trainer`` (the library's quiet defaults), and the hand-written step and
evaluation inside a ``LightningModule`` fitted by ``make_trainer`` (the floor Lightning's own loop
sets). Methods are interleaved per
repetition; medians are reported, of wall time and of the process's CPU time (on a shared
machine the CPU time is the steadier of the two; with one thread they agree on an idle one).
The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's iit, not an installed one

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from causal_models.data import CounterfactualBatch  # noqa: E402
from iit.training import CounterfactualDataModule, IITConfig, IITModule  # noqa: E402
from tasks.digit_sum import DigitSumMLP  # noqa: E402

VARIABLES = ("x", "y", "z", "S")


def _encode(values: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([values["x"], values["y"], values["z"]], 1)


def _counterfactual_labels(base: dict, source: dict, on: torch.Tensor) -> torch.Tensor:
    """Digit-sum counterfactual output by hand (``on``: bool ``[B, 4]`` over x, y, z, S)."""
    x, y, z = base["x"], base["y"], base["z"]
    xs, ys, zs = source["x"], source["y"], source["z"]
    s = torch.where(on[:, 3], xs + ys, torch.where(on[:, 0], xs, x) + torch.where(on[:, 1], ys, y))
    return s + torch.where(on[:, 2], zs, z)


def _intervened_forward(net, base_tokens, emb_src, h1_src, on, d_embed: int) -> torch.Tensor:
    """Forward on ``base_tokens`` with rows of the embedding slices / ``layers.1[0:d]`` patched
    from the source activations where ``on`` says so."""

    def patch_emb(m, a, o):
        o = o.clone()
        for j in range(3):
            o[on[:, j], d_embed * j : d_embed * (j + 1)] = emb_src[on[:, j], d_embed * j : d_embed * (j + 1)]
        return o

    def patch_h1(m, a, o):
        o = o.clone()
        o[on[:, 3], :d_embed] = h1_src[on[:, 3], :d_embed]
        return o

    hooks = [net.embedded.register_forward_hook(patch_emb), net.layers[1].register_forward_hook(patch_h1)]
    try:
        return net(base_tokens)
    finally:
        for h in hooks:
            h.remove()


def _collecting_forward(net, tokens):
    store: dict[str, torch.Tensor] = {}
    hooks = [
        net.embedded.register_forward_hook(lambda m, a, o: store.__setitem__("emb", o)),
        net.layers[1].register_forward_hook(lambda m, a, o: store.__setitem__("h1", o)),
    ]
    try:
        out = net(tokens)
    finally:
        for h in hooks:
            h.remove()
    return out, store["emb"], store["h1"]


def _one_pass_losses(net, tokens, perm, on, d_embed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Base and intervened outputs from one forward over the doubled batch: at each site the
    second half takes the first half's rows ``perm`` where ``on`` says so."""
    n = tokens.shape[0]

    def patch_emb(m, a, o):
        first, second = o[:n], o[n:]
        mask = torch.cat([on[:, j : j + 1].expand(n, d_embed) for j in range(3)], 1)
        return torch.cat([first, torch.where(mask, first[perm], second)])

    def patch_h1(m, a, o):
        first, second = o[:n], o[n:]
        new = torch.where(on[:, 3:4], first[perm][:, :d_embed], second[:, :d_embed])
        return torch.cat([first, torch.cat([new, second[:, d_embed:]], 1)])

    hooks = [net.embedded.register_forward_hook(patch_emb), net.layers[1].register_forward_hook(patch_h1)]
    try:
        out = net(torch.cat([tokens, tokens]))
    finally:
        for h in hooks:
            h.remove()
    return out[:n], out[n:]


def hand_loss(net, batch: CounterfactualBatch, generator: torch.Generator, iit: bool, d_embed: int,
              one_pass: bool = False) -> torch.Tensor:
    """The hand-written step's loss: behaviour, plus in-batch IIT with raw hooks (two forwards,
    or ``one_pass``: one forward over the doubled batch, as the library's default step)."""
    base = batch.base
    tokens = _encode(base)
    label = base["x"] + base["y"] + base["z"]
    if not iit:
        return F.cross_entropy(net(tokens), label)
    if one_pass:
        perm = torch.randperm(len(batch), generator=generator)
        source = {k: v[perm] for k, v in base.items()}
        out, out_cf = _one_pass_losses(net, tokens, perm, batch.intervened, d_embed)
        return F.cross_entropy(out, label) + F.cross_entropy(out_cf, _counterfactual_labels(base, source, batch.intervened))
    out, emb, h1 = _collecting_forward(net, tokens)
    perm = torch.randperm(len(batch), generator=generator)
    source = {k: v[perm] for k, v in base.items()}
    on = batch.intervened
    out_cf = _intervened_forward(net, tokens, emb[perm], h1[perm], on, d_embed)
    return F.cross_entropy(out, label) + F.cross_entropy(out_cf, _counterfactual_labels(base, source, on))


class HandStepModule(pl.LightningModule):
    """The hand-written step and evaluation inside Lightning (``make_trainer``, same data loader):
    what Lightning's loop itself costs, without any of iit's step."""

    def __init__(self, net, val: CounterfactualBatch, lr: float, iit: bool, d_embed: int, batch_size: int) -> None:
        super().__init__()
        self.net, self.val, self.lr, self.iit, self.d_embed, self.eval_batch = net, val, lr, iit, d_embed, max(batch_size, 512)
        self.generator = torch.Generator().manual_seed(0)
        self.loss_sum, self.count = torch.zeros(()), 0

    def training_step(self, batch: CounterfactualBatch, batch_idx: int) -> torch.Tensor:
        loss = hand_loss(self.net, batch, self.generator, self.iit, self.d_embed)
        self.loss_sum = self.loss_sum + loss.detach() * len(batch)
        self.count += len(batch)
        return loss

    def on_train_epoch_end(self) -> None:
        metrics = hand_evaluate(self.net, self.val, self.eval_batch, self.d_embed)
        self.log_dict({"train_loss": self.loss_sum / self.count, **{f"val/{k}": v for k, v in metrics.items()}})
        self.loss_sum, self.count = torch.zeros(()), 0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)


def hand_step_fit(task, data: CounterfactualDataModule, epochs: int, lr: float, iit: bool, root: str) -> None:
    """:class:`HandStepModule` fitted by ``make_trainer`` on the data module's training loader."""
    from iit.training import make_trainer

    module = HandStepModule(task.build_network(), data.val_data, lr, iit, task.d_embed, data.batch_size)
    make_trainer(task, max_epochs=epochs, root=root).fit(module, train_dataloaders=data.train_dataloader())


def hand_fit(net, train: CounterfactualBatch, val: CounterfactualBatch, epochs: int, batch_size: int, lr: float,
             iit: bool, d_embed: int, seed: int = 0, save_to: str | None = None, one_pass: bool = False) -> dict[str, float]:
    """The hand-written loop: shuffled batches, behaviour (+ in-batch IIT) loss, Adam, the
    epoch's mean loss and a full evaluation every epoch, the weights and optimiser state saved
    at the end (to ``save_to``). Returns the last epoch's metrics."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n = len(train)
    metrics: dict[str, float] = {}
    for _ in range(epochs):
        net.train()
        loss_sum = torch.zeros(())
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            batch = train.select(order[start : start + batch_size])
            loss = hand_loss(net, batch, generator, iit, d_embed, one_pass)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(batch)
        metrics = {"train_loss": float(loss_sum) / n, **hand_evaluate(net, val, max(batch_size, 512), d_embed)}
    if save_to is not None:
        torch.save({"state_dict": net.state_dict(), "optimizer": opt.state_dict()}, save_to)
    return metrics


def hand_evaluate(net, val: CounterfactualBatch, batch_size: int, d_embed: int) -> dict[str, float]:
    """Task accuracy, IIA on the pairs' own variables and per variable, by hand."""
    net.eval()
    hits = {"task": 0, "iia": 0, **{v: 0 for v in VARIABLES}}
    with torch.no_grad():
        for start in range(0, len(val), batch_size):
            batch = val.select(torch.arange(start, min(start + batch_size, len(val))))
            base, source = batch.base, batch.sources[0]
            tokens = _encode(base)
            out = net(tokens)
            hits["task"] += int((out.argmax(-1) == base["x"] + base["y"] + base["z"]).sum())
            _, emb, h1 = _collecting_forward(net, _encode(source))
            ons = {"iia": batch.intervened}
            for j, v in enumerate(VARIABLES):
                one = torch.zeros_like(batch.intervened)
                one[:, j] = True
                ons[v] = one
            for name, on in ons.items():
                out_cf = _intervened_forward(net, tokens, emb, h1, on, d_embed)
                hits[name] += int((out_cf.argmax(-1) == _counterfactual_labels(base, source, on)).sum())
    net.train()
    return {k: v / len(val) for k, v in hits.items()}


def iit_fit(task, data: CounterfactualDataModule, config: IITConfig, epochs: int, quiet: bool, root: str) -> dict:
    """A whole fit with the library: ``iit.training.trainer`` (quiet) or ``pl.Trainer`` defaults."""
    module = IITModule(task, config)
    if quiet:
        from iit.training import make_trainer

        trainer = make_trainer(task, max_epochs=epochs, root=root)
    else:
        trainer = pl.Trainer(max_epochs=epochs, default_root_dir=root)
    trainer.fit(module, data)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def measure(hidden: int, batch_size: int, train_size: int, epochs: int, reps: int, modes: list[str]) -> dict[str, float]:
    task = DigitSumMLP(hidden=hidden)
    data = CounterfactualDataModule(task, train_size=train_size, val_size=2_000, batch_size=batch_size, seed=0)
    data.setup("fit")
    lr = 2e-3
    iit_cfg = IITConfig(lr=lr)
    beh_cfg = replace(iit_cfg, iit_weight=0.0)
    runs: dict[str, object] = {}
    for kind, cfg, is_iit in (("IIT", iit_cfg, True), ("behaviour", beh_cfg, False)):
        for mode in modes:
            runs[f"{kind} {mode}"] = (lambda cfg=cfg, mode=mode, root=None: iit_fit(
                task, data, cfg, epochs, mode == "make_trainer", root))
        runs[f"{kind} hand step in make_trainer"] = (lambda is_iit=is_iit, root=None: hand_step_fit(
            task, data, epochs, lr, is_iit, root))
        runs[f"{kind} hand-written"] = (lambda is_iit=is_iit, root=None: hand_fit(
            task.build_network(), data.train_data, data.val_data, epochs, batch_size, lr, is_iit, task.d_embed,
            save_to=f"{root}.pt"))
        if is_iit:
            runs["IIT hand-written, one pass"] = (lambda root=None: hand_fit(
                task.build_network(), data.train_data, data.val_data, epochs, batch_size, lr, True, task.d_embed,
                save_to=f"{root}.pt", one_pass=True))
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory() as root:
        for rep in range(reps):
            for i, (name, run) in enumerate(runs.items()):
                torch.manual_seed(0)
                start, start_cpu = time.perf_counter(), time.process_time()
                run(root=f"{root}/{rep}-{i}")
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    med = {name: statistics.median(ts) for name, ts in wall.items()}
    med_cpu = {name: statistics.median(ts) for name, ts in cpu.items()}
    print(f"\ndigit-sum MLP width {hidden}, batch {batch_size}, {train_size} pairs, {epochs} epochs, "
          f"validation every epoch on 2000 pairs; median of {reps} fits")
    print(f"{'run':<36}{'wall s':>9}{'x hand':>9}{'CPU s':>9}{'x hand':>9}")
    for kind in ("IIT", "behaviour"):
        hand, hand_cpu = med[f"{kind} hand-written"], med_cpu[f"{kind} hand-written"]
        extra = ["IIT hand-written, one pass"] if kind == "IIT" else []
        for name in [f"{kind} {m}" for m in modes] + [f"{kind} hand step in make_trainer", f"{kind} hand-written"] + extra:
            print(f"{name:<36}{med[name]:>9.2f}{med[name] / hand:>9.2f}{med_cpu[name]:>9.2f}{med_cpu[name] / hand_cpu:>9.2f}")
    return med


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repetitions")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", default="make_trainer,pl.Trainer defaults")
    parser.add_argument("--only", choices=["small", "wide"], default=None)
    parser.add_argument("--reps", type=int, default=None, help="fits per row (default 3, --quick 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    modes = args.modes.split(",")
    reps, epochs = (1, 2) if args.quick else (3, 5)
    reps = args.reps or reps
    print(f"{args.threads} thread(s); targets: IIT fit <= 1.3x hand-written (small MLP), <= 1.05x (wide MLP)")
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if args.only in (None, "small"):
        measure(96, 64, 20_000, epochs, reps, modes)
    if args.only in (None, "wide"):
        measure(1024, 512, 4_096, epochs, reps, modes)
    print("load average (1, 5, 15 min) after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
