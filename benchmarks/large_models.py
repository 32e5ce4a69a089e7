"""Large-model benchmark: peak memory and time of an interchange (`intervene`), a DAS step and an
IIT step on a randomly initialised Llama-architecture model, with and without Hugging Face
gradient checkpointing, side by side with pyvene 0.1.8 on the same step.

Model (``--config``):

* ``1b``: the TinyLlama-1.1B shape (hidden 2048, 22 layers, MLP 5632, 32 query / 4 key-value
  heads, vocabulary 32000, untied LM head): 1.10 B parameters; batch 4 x 128.
* ``small``: hidden 256, 4 layers, MLP 688, 8 / 2 heads, vocabulary 4000: 4.8 M parameters;
  batch 4 x 32 (a quick run, and the configuration the tests run).

dtype (``--dtype auto``): bfloat16 when this CPU multiplies bfloat16 matrices faster than float32
(timed here: AMX / AVX512-BF16 make it about 6x faster on this project's machine), float32 otherwise.

The steps (all at layer ``n_layers // 2``, residual stream = the decoder layer's output, last
position; the model computes logits for the last position only, ``logits_to_keep=tensor([seq - 1])``):

* ``intervene``: an interchange from a source run into a base run, under ``torch.no_grad`` (an
  analysis call). Hugging Face skips checkpointing without autograd, so it is measured without.
* ``das``: one DAS step on the frozen model: a low-rank (k=16) rotated interchange, float32
  rotation, cross-entropy of the last position against fixed labels, ``backward``, Adam on the
  rotation. iit: :func:`iit.das_step` (source run without a graph, stopped after the layer);
  pyvene: ``LowRankRotatedSpaceIntervention`` (identical initial rotation; its source run goes
  through the whole model). With checkpointing, ``model.disable_input_require_grads()`` undoes the
  hook that ``gradient_checkpointing_enable`` puts on the embeddings: the model is frozen, so the
  only gradient path starts at the intervention and the layers below it need no backward.
* ``iit``: one IIT step that trains the model's weights: behaviour loss (labels) + IIT loss
  (the interchange with in-batch sources: row ``i`` takes row ``perm[i]``'s activation, and its
  counterfactual label is ``labels[perm[i]]``), gradients through both runs, ``backward``, plain
  SGD. SGD keeps no optimizer state: Adam would add two moment buffers as large as the model (2.2
  GB in bfloat16 here), the same for every library and checkpointing setting, which would only
  dilute the activation memory this benchmark compares. iit: ``collect(..., return_output=True)``
  gives the behaviour output and the activations in one pass, then ``intervene`` with
  ``Activations.rows(perm)`` (two forward passes). pyvene: the same two passes, as favourable to
  pyvene as its API allows: the behaviour run's activation is read by a forward hook and handed to
  ``IntervenableModel(..., source_representations=...)``.

Memory: every (step, checkpointing, library) configuration runs in a fresh subprocess (so no
allocator cache or leftover tensor of another configuration distorts it), builds the model,
runs one warm-up step, then ``malloc_trim``\\s, reads the resident set size (RSS) as the baseline,
resets the kernel's RSS high-water mark (``/proc/self/clear_refs`` "5"; a 1 ms sampling thread
where that is not allowed) and runs the measured step: **peak RSS increase** = high-water mark -
baseline. The model's weights (and Adam / SGD state of earlier steps) are in the baseline; the
figure is what the step itself adds: activations, gradients, temporaries. RSS is what the machine
pays, including allocator overhead; torch's profiler would count only tensor bytes. Independently,
the deterministic **saved activations** column is the bytes of distinct non-parameter storages that
autograd saved for backward during the warm-up step (a ``saved_tensors_hooks`` pack hook; tensors
saved inside a checkpointed layer go to the checkpoint's own hook and are not counted, which is
exactly what checkpointing saves).

Time: the measured step's wall time; medians over ``--reps`` rounds, the configurations of a round
run one after another (interleaved), with ``torch.set_num_threads(2)``. Each subprocess also reports
the warm-up step's loss and gradient norm, so the output shows that checkpointing leaves both
unchanged and that pyvene computes the same loss.

Run ``python benchmarks/large_models.py --config 1b --reps 3`` or ``--config small`` (a few
minutes: most of it is starting Python processes). On this project's shared 2-core machine one
round of the 1b configuration took 5 minutes for the intervene and DAS rows and about 20 for
the IIT rows (each configuration builds the model and runs a warm-up and a measured step).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

# passive OpenMP waiting: on a shared machine, spinning threads distort every timing
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # this checkout's iit, not an installed one

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

Size = Literal["small", "1b"]
Step = Literal["intervene", "das", "iit"]
Library = Literal["iit", "pyvene"]
STEPS: tuple[Step, ...] = ("intervene", "das", "iit")
LIBRARIES: tuple[Library, ...] = ("iit", "pyvene")
MiB = 2**20

# Llama shapes: (hidden, layers, intermediate, heads, kv heads, vocab, batch, seq)
SHAPES: dict[str, tuple[int, int, int, int, int, int, int, int]] = {
    "small": (256, 4, 688, 8, 2, 4000, 4, 32),
    "1b": (2048, 22, 5632, 32, 4, 32000, 4, 128),
}
RANK = 16  # low-rank DAS subspace


@dataclass(frozen=True)
class Spec:
    """One configuration to measure (JSON-serialisable: it is passed to the worker process).

    Attributes:
        size: model shape, a key of :data:`SHAPES`.
        dtype: ``"bfloat16"`` or ``"float32"`` (model weights; DAS rotations stay float32).
        step: ``"intervene"``, ``"das"`` or ``"iit"``.
        library: ``"iit"`` or ``"pyvene"``.
        checkpointing: Hugging Face gradient checkpointing on (non-reentrant, train mode).
        seed: model / data seed (same for every configuration, so losses are comparable).
    """

    size: Size
    dtype: str
    step: Step
    library: Library
    checkpointing: bool
    seed: int = 0

    @property
    def label(self) -> str:
        return f"{self.step:<9} ckpt={'on ' if self.checkpointing else 'off'} {self.library}"


@dataclass
class Result:
    """What one run of a configuration measured.

    Attributes:
        peak_bytes: peak RSS increase during the measured step over the RSS before it.
        seconds: wall time of the measured step.
        saved_bytes: bytes of non-parameter tensors autograd saved for backward (warm-up step).
        loss: loss of the warm-up step (``nan`` for ``intervene``: the max |logit| instead).
        grad_norm: gradient norm after the warm-up step's backward (rotation for DAS, all weights
            for IIT; ``nan`` for ``intervene``).
        peak_method: ``"clear_refs"`` (kernel high-water mark) or ``"sampling"`` (1 ms thread).
        error: the exception text when the configuration could not run (other fields are nan).
    """

    peak_bytes: float = float("nan")
    seconds: float = float("nan")
    saved_bytes: float = float("nan")
    loss: float = float("nan")
    grad_norm: float = float("nan")
    peak_method: str = ""
    error: str = ""


# ---------------------------------------------------------------------------- memory
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _release_free_memory() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def _sampled_peak(peak: list[int], interval: float = 1e-3) -> Iterator[None]:
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss_bytes())


def peak_rss_increase(fn: Callable[[], Any]) -> tuple[Any, int, float, str]:
    """Run ``fn()`` once and measure what it adds to this process's resident memory (Linux).

    Free heap memory is returned to the system first (``malloc_trim``), so the baseline is the
    memory in use; the peak is the kernel's RSS high-water mark, reset just before the call
    (``/proc/self/clear_refs``), or a 1 ms sampling thread where that reset is not permitted.

    Returns:
        ``(fn's result, peak RSS - RSS before the call in bytes, seconds, method)``.

    Raises:
        OSError: without ``/proc`` (not Linux).
    """
    _release_free_memory()
    before = _rss_bytes()
    if _reset_hwm():
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
        return out, _hwm_bytes() - before, seconds, "clear_refs"
    peak = [before]
    with _sampled_peak(peak):
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
    return out, peak[0] - before, seconds, "sampling"


class SavedActivations:
    """Context manager counting the bytes autograd saves for backward (distinct storages, model
    parameters excluded): the activation memory a backward pass will need. Deterministic, unlike
    RSS. Tensors saved inside a checkpointed region are held by the checkpoint's own hooks and
    are not counted (they are recomputed in backward).

    Args:
        exclude: modules whose parameters and buffers are not activations (the model, the
            interventions).

    Example:
        >>> with SavedActivations([model]) as saved:
        ...     loss = model(x).sum()
        >>> saved.bytes
    """

    def __init__(self, exclude: list[nn.Module]) -> None:
        self._skip = {
            t.untyped_storage().data_ptr()
            for m in exclude
            for t in [*m.parameters(), *m.buffers()]
        }
        # storages are held until exit, so no address is freed and reused while counting
        self._seen: dict[int, torch.UntypedStorage] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: Tensor) -> Tensor:
        if not t.is_meta:
            storage = t.untyped_storage()
            if storage.data_ptr() not in self._skip:
                self._seen.setdefault(storage.data_ptr(), storage)
        return t

    total: int = 0  # the count at exit (the storages are released then)

    @property
    def bytes(self) -> int:
        """Bytes counted so far (inside the context)."""
        return sum(storage.nbytes() for storage in self._seen.values())

    def __enter__(self) -> SavedActivations:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)
        self.total = self.bytes
        self._seen.clear()


# ---------------------------------------------------------------------------- model and data
def choose_dtype(verbose: bool = True) -> str:
    """``"bfloat16"`` if a bfloat16 matmul ([512, 2048] @ [2048, 5632]) runs at least 1.5x faster
    than a float32 one on this CPU, else ``"float32"``."""
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(512, 2048, dtype=dtype), torch.randn(2048, 5632, dtype=dtype)
        for _ in range(2):
            a @ b
        t0 = time.perf_counter()
        for _ in range(5):
            a @ b
        times[dtype] = (time.perf_counter() - t0) / 5
    speedup = times[torch.float32] / times[torch.bfloat16]
    if verbose:
        print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}; matmul float32 "
              f"{1e3 * times[torch.float32]:.1f} ms, bfloat16 {1e3 * times[torch.bfloat16]:.1f} ms "
              f"(bfloat16 {speedup:.1f}x faster)")
    return "bfloat16" if speedup >= 1.5 else "float32"


def build_model(size: Size, dtype: str, seed: int) -> nn.Module:
    """A randomly initialised ``LlamaForCausalLM`` of shape ``SHAPES[size]`` in ``dtype``
    (weights created in that dtype: no float32 copy), eval mode, no KV cache."""
    import transformers as tf

    hidden, layers, inter, heads, kv, vocab, _, _ = SHAPES[size]
    config = tf.LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, intermediate_size=inter,
                            num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab,
                            tie_word_embeddings=False, use_cache=False)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        model = tf.LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def make_inputs(size: Size, seed: int) -> tuple[dict, dict, Tensor, Tensor]:
    """Base inputs, source inputs (``input_ids [batch, seq]``, ``logits_to_keep``: the last position), labels
    ``[batch]`` and a permutation ``[batch]`` without fixed points (in-batch IIT sources)."""
    _, _, _, _, _, vocab, batch, seq = SHAPES[size]
    g = torch.Generator().manual_seed(seed + 1)
    # the last position as an index tensor, not ``logits_to_keep=1``: the int form slices the hidden
    # states (a non-contiguous [batch, 1, hidden] view), and torch 2.13's CPU bfloat16 linear with a
    # frozen weight on such a view takes a slow path (1B model's LM head: ~20 s and +500 MiB per call
    # instead of 0.1 s); the index gathers a contiguous copy
    keep = torch.tensor([seq - 1])
    base = {"input_ids": torch.randint(0, vocab, (batch, seq), generator=g), "logits_to_keep": keep}
    source = {"input_ids": torch.randint(0, vocab, (batch, seq), generator=g), "logits_to_keep": keep}
    labels = torch.randint(0, vocab, (batch,), generator=g)
    perm = torch.roll(torch.arange(batch), 1)
    return base, source, labels, perm


def _last_logits_loss(output: Any, labels: Tensor) -> Tensor:
    """Cross-entropy of the last position's logits ``[batch, vocab]`` (in float32)."""
    return nn.functional.cross_entropy(output.logits[:, -1].float(), labels)


def _enable_checkpointing(model: nn.Module, frozen: bool) -> None:
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if frozen:  # the embedding hook would make every layer below the intervention need backward
        model.disable_input_require_grads()


# ---------------------------------------------------------------------------- steps
@dataclass
class Prepared:
    """A configuration ready to run: ``step()`` returns ``(loss or logit scale, grad norm)``."""

    step: Callable[[], tuple[float, float]]
    exclude: list[nn.Module] = field(default_factory=list)


def prepare(spec: Spec) -> Prepared:
    """Build the model, inputs, intervention and optimizer of ``spec``.

    Raises:
        ValueError: unknown step or library.
    """
    from iit import DASBatch, Interchange, LowRankRotatedInterchange, Rotation, das_step
    from iit.transformers import TransformerCoordinate, TransformerInterventionable

    model = build_model(spec.size, spec.dtype, spec.seed)
    base, source, labels, perm = make_inputs(spec.size, spec.seed)
    hidden, layers, _, _, _, _, batch, seq = SHAPES[spec.size]
    layer = layers // 2
    coord = TransformerCoordinate(layer, "block_output", position=seq - 1)
    frozen = spec.step != "iit"
    model.requires_grad_(not frozen)
    if spec.checkpointing:
        _enable_checkpointing(model, frozen)
    if spec.step != "intervene" or spec.checkpointing:
        model.train()  # checkpointing is active in train mode only (Llama has no dropout)
    net = TransformerInterventionable(model)
    locations = [[[seq - 1]] * batch]
    pv: Any = None
    if spec.library == "pyvene":
        import pyvene as pv
    elif spec.library != "iit":
        raise ValueError(f"unknown library {spec.library!r}; valid: {LIBRARIES}")

    def restore_mode(pvm: Any) -> None:
        # pyvene's constructor calls model.eval() and freezes every parameter
        model.train(spec.step != "intervene" or spec.checkpointing)
        model.requires_grad_(not frozen)

    if spec.step == "intervene":
        if spec.library == "iit":
            interchange = Interchange(coord)

            def run() -> Any:
                return net.intervene(base, [interchange], [source])
        else:
            pvm = pv.IntervenableModel({"layer": layer, "component": "block_output"}, model=model)
            restore_mode(pvm)

            def run() -> Any:
                return pvm(base, [source], {"sources->base": (locations, locations)})[1]

        def step() -> tuple[float, float]:
            with torch.no_grad():
                return float(run().logits.abs().max()), float("nan")

        return Prepared(step, [model])

    if spec.step == "das":
        # the same initial [hidden, RANK] orthonormal basis for both libraries
        rotation = Rotation(hidden, RANK, generator=torch.Generator().manual_seed(spec.seed + 2))
        if spec.library == "iit":
            ours = LowRankRotatedInterchange(coord, rotation)
            optimizer = torch.optim.Adam(ours.parameters(), lr=1e-3)
            das_batch = DASBatch(base, [source], labels)

            def step() -> tuple[float, float]:
                loss = das_step(net, [ours], das_batch, _last_logits_loss, optimizer)
                return loss, _grad_norm(ours)

            return Prepared(step, [model, ours])
        theirs = pv.LowRankRotatedSpaceIntervention(embed_dim=hidden, low_rank_dimension=RANK, keep_last_dim=True)
        theirs.rotate_layer.weight = rotation.matrix().detach().clone()
        pvm = pv.IntervenableModel({"layer": layer, "component": "block_output", "intervention": theirs},
                                   model=model)
        restore_mode(pvm)
        optimizer = torch.optim.Adam(theirs.parameters(), lr=1e-3)

        def step() -> tuple[float, float]:
            optimizer.zero_grad(set_to_none=True)
            _, out = pvm(base, [source], {"sources->base": (locations, locations)})
            loss = _last_logits_loss(out, labels)
            loss.backward()
            norm = _grad_norm(theirs)
            optimizer.step()
            return float(loss.detach()), norm

        return Prepared(step, [model, theirs])

    if spec.step != "iit":
        raise ValueError(f"unknown step {spec.step!r}; valid: {STEPS}")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    cf_labels = labels[perm]
    if spec.library == "iit":
        interchange = Interchange(coord)

        def forward() -> Tensor:
            output, acts = net.collect(base, [coord], return_output=True)
            counterfactual = net.intervene(base, [interchange], [acts.rows(perm)])
            return _last_logits_loss(output, labels) + _last_logits_loss(counterfactual, cf_labels)
    else:
        pvm = pv.IntervenableModel({"layer": layer, "component": "block_output"}, model=model)
        restore_mode(pvm)
        block = model.model.layers[layer]

        def forward() -> Tensor:
            read: list[Tensor] = []

            def hook(module: nn.Module, args: Any, output: Any) -> None:
                hidden_states = output[0] if isinstance(output, tuple) else output
                read.append(hidden_states[:, seq - 1 : seq])  # [batch, 1, hidden]: pyvene's unit

            handle = block.register_forward_hook(hook)
            try:
                output = model(**base)
            finally:
                handle.remove()
            _, counterfactual = pvm(base, None, {"sources->base": (locations, locations)},
                                    source_representations=read[0][perm])
            return _last_logits_loss(output, labels) + _last_logits_loss(counterfactual, cf_labels)

    def step() -> tuple[float, float]:
        optimizer.zero_grad(set_to_none=True)
        loss = forward()
        loss.backward()
        norm = _grad_norm(model)
        optimizer.step()
        return float(loss.detach()), norm

    return Prepared(step, [model])


def _grad_norm(module: nn.Module) -> float:
    grads = [p.grad.float().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else float("nan")


def measure(spec: Spec) -> Result:
    """Measure ``spec`` in this process: warm-up step (loss, gradient norm, saved activations),
    then the measured step (peak RSS increase, seconds). Errors are reported in the result."""
    try:
        prepared = prepare(spec)
        with SavedActivations(prepared.exclude) as saved:
            loss, grad_norm = prepared.step()
        _, peak, seconds, method = peak_rss_increase(prepared.step)
    except Exception as error:  # reported, not hidden: the table says why a configuration failed
        return Result(error=f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
    return Result(peak, seconds, saved.total, loss, grad_norm, method)


def measure_fresh(spec: Spec, timeout: float = 3600.0) -> Result:
    """Measure ``spec`` in a fresh Python subprocess (2 threads) and return its result.

    Raises:
        RuntimeError: the worker crashed without printing a result.
    """
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", TRANSFORMERS_VERBOSITY="error",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(asdict(spec))],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return Result(**json.loads(line[len("RESULT "):]))
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    raise RuntimeError(f"worker for {spec.label} exited with {proc.returncode}: {' | '.join(tail)}")


# ---------------------------------------------------------------------------- report
def run_all(specs: list[Spec], reps: int, progress: bool = True) -> dict[Spec, list[Result]]:
    """``reps`` rounds; each round measures every spec once, in a fresh process, in turn
    (the order rotates by one per round so no configuration always runs first)."""
    results: dict[Spec, list[Result]] = {s: [] for s in specs}
    for r in range(reps):
        order = specs[r % len(specs):] + specs[: r % len(specs)]
        for i, spec in enumerate(order):
            t0 = time.perf_counter()
            results[spec].append(measure_fresh(spec))
            if progress:
                res = results[spec][-1]
                what = res.error or f"peak +{res.peak_bytes / MiB:.0f} MiB, {res.seconds:.2f} s"
                print(f"[round {r + 1}/{reps} {i + 1}/{len(order)}] {spec.label}: {what} "
                      f"({time.perf_counter() - t0:.0f} s with start-up)", file=sys.stderr, flush=True)
    return results


def summarize(results: dict[Spec, list[Result]]) -> dict[Spec, Result]:
    """Per spec: median peak / time / saved bytes over the runs (loss and gradient norm of the
    first run; the first error if any run failed)."""
    out = {}
    for spec, runs in results.items():
        failed = [r for r in runs if r.error]
        if failed:
            out[spec] = Result(error=failed[0].error)
            continue
        out[spec] = Result(statistics.median(r.peak_bytes for r in runs), statistics.median(r.seconds for r in runs),
                           statistics.median(r.saved_bytes for r in runs), runs[0].loss, runs[0].grad_norm,
                           runs[0].peak_method)
    return out


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def print_report(summary: dict[Spec, Result], reps: int) -> None:
    """Print the table and the checks (checkpointing reduction, pyvene ratios, equal losses)."""
    print(f"\n| step | checkpointing | library | peak RSS increase MiB | time s | saved activations MiB "
          f"| loss | grad norm | (medians of {reps}) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    for spec, res in summary.items():
        if res.error:
            print(f"| {spec.step} | {'on' if spec.checkpointing else 'off'} | {spec.library} | - | - | - | - | - | "
                  f"could not run: {res.error} |")
            continue
        loss = f"{res.loss:.4f}" if spec.step != "intervene" else f"max logit {res.loss:.3f}"
        print(f"| {spec.step} | {'on' if spec.checkpointing else 'off'} | {spec.library} | "
              f"{res.peak_bytes / MiB:.0f} | {res.seconds:.2f} | {res.saved_bytes / MiB:.1f} | {loss} | "
              f"{res.grad_norm:.4g} | |")

    def get(step: str, ckpt: bool, lib: str) -> Result | None:
        for spec, res in summary.items():
            if (spec.step, spec.checkpointing, spec.library) == (step, ckpt, lib) and not res.error:
                return res
        return None

    print()
    for lib in LIBRARIES:
        for step in ("das", "iit"):
            off, on = get(step, False, lib), get(step, True, lib)
            if off and on:
                cut = 1 - on.peak_bytes / off.peak_bytes
                note = " (target for DAS: >= 40% at <= 1.4x)" if step == "das" else ""
                print(f"{lib} {step} step, checkpointing on vs off: peak memory -{100 * cut:.0f}%, "
                      f"saved activations -{100 * (1 - on.saved_bytes / max(off.saved_bytes, 1)):.0f}%, "
                      f"time x{on.seconds / off.seconds:.2f}{note}; loss equal: {on.loss == off.loss} "
                      f"(rel. diff {_rel(on.loss, off.loss):.1e}), grad norm rel. diff "
                      f"{_rel(on.grad_norm, off.grad_norm):.1e}")
    for step in STEPS:
        for ckpt in (False, True):
            ours, theirs = get(step, ckpt, "iit"), get(step, ckpt, "pyvene")
            if ours and theirs:
                print(f"{step}, checkpointing {'on ' if ckpt else 'off'}: iit / pyvene peak memory "
                      f"{ours.peak_bytes / theirs.peak_bytes:.2f}, time {ours.seconds / theirs.seconds:.2f}; "
                      f"{'max logit' if step == 'intervene' else 'loss'} rel. diff {_rel(ours.loss, theirs.loss):.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=list(SHAPES), default="small", help="model shape")
    parser.add_argument("--reps", type=int, default=3, help="rounds (fresh process per configuration and round)")
    parser.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto")
    parser.add_argument("--steps", nargs="+", choices=list(STEPS), default=list(STEPS))
    parser.add_argument("--libraries", nargs="+", choices=list(LIBRARIES), default=list(LIBRARIES))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.worker:
        import warnings

        warnings.filterwarnings("ignore")
        result = measure(Spec(**json.loads(args.worker)))
        print("RESULT " + json.dumps(asdict(result)), flush=True)
        return
    dtype = choose_dtype() if args.dtype == "auto" else args.dtype
    model = build_model(args.config, dtype, 0)
    n_params = sum(p.numel() for p in model.parameters())
    del model
    hidden, layers, inter, heads, kv, vocab, batch, seq = SHAPES[args.config]
    print(f"# Llama {args.config}: hidden {hidden}, {layers} layers, MLP {inter}, {heads}/{kv} heads, vocab {vocab}: "
          f"{n_params / 1e6:.1f} M parameters, {dtype}; batch {batch} x {seq}; layer {layers // 2} block output, "
          f"last position; DAS rank {RANK}; {args.reps} rounds, fresh process per configuration")
    # Hugging Face checkpoints only with autograd on: an intervene (no_grad) run is the same with it
    specs = [Spec(args.config, dtype, step, lib, ckpt)
             for step in args.steps for ckpt in (False, True) for lib in args.libraries
             if not (ckpt and step == "intervene")]
    if "intervene" in args.steps:
        print("intervene runs under torch.no_grad: Hugging Face does not checkpoint without autograd, so "
              "it is measured without checkpointing only")
    t0 = time.perf_counter()
    summary = summarize(run_all(specs, args.reps))
    print_report(summary, args.reps)
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
