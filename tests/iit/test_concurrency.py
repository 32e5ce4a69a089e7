"""Call-scoped hooks: one model shared by threads and asyncio tasks gives, call for call, exactly
what the same calls give one after another; no hook is left behind."""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from iit import Coordinate, Index, Interchange, Interventionable, ZeroAblation
from iit._dispatch import active_dispatchers
from iit.das import DASBatch, das_step
from iit.learned import RotatedInterchange, Rotation

N_THREADS = 4
N_CALLS = 240


class Yield(nn.Module):
    """Identity that lets other threads run (the GIL is released), so calls interleave."""

    def forward(self, x: Tensor) -> Tensor:
        time.sleep(0)
        return x


class Net(nn.Module):
    """x [batch, 6] -> 3 tanh blocks of width 8 (each followed by a yield point) -> 3 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 8)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(3)])
        self.yields = nn.ModuleList([Yield() for _ in range(3)])
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        for block, pause in zip(self.blocks, self.yields):
            h = pause(block(h))
        return self.head(h)


def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._forward_hooks_with_kwargs)
        for m in model.modules()
    )


@pytest.fixture
def shared() -> Interventionable:
    torch.manual_seed(0)
    net = Net().double().requires_grad_(False)  # frozen: DAS steps train only their rotation
    return Interventionable(net)


def make_calls(net: Interventionable, seed: int) -> list[Callable[[], Any]]:
    """``N_CALLS`` independent calls of five kinds on fresh inputs (and, for DAS, a fresh
    rotation and optimizer each), in a random order."""
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    calls: list[Callable[[], Any]] = []
    for i in range(N_CALLS):
        x = torch.randn(5, 6, generator=gen, dtype=torch.float64)
        s = torch.randn(5, 6, generator=gen, dtype=torch.float64)
        layer = rng.randrange(3)
        kind = ("plain", "collect", "interchange", "zero", "das")[i % 5]
        if kind == "plain":
            calls.append(lambda x=x: net(x))
        elif kind == "collect":
            coords = [Coordinate(f"blocks.{layer}"), Coordinate("embed", Index.dims(2, 5))]
            calls.append(lambda x=x, coords=coords: list(net.collect(x, coords).values()))
        elif kind == "interchange":
            iv = Interchange(Coordinate(f"blocks.{layer}", Index.dims(0, 4)))
            calls.append(lambda x=x, s=s, iv=iv: net.intervene(x, [iv], [s]))
        elif kind == "zero":
            iv = ZeroAblation(Coordinate(f"yields.{layer}", Index.dims(3, 8)))
            calls.append(lambda x=x, iv=iv: net.intervene(x, [iv]))
        else:
            torch.manual_seed(1000 + i)
            das = RotatedInterchange(Coordinate(f"blocks.{layer}"), Rotation(8), (0, 3)).double()
            opt = torch.optim.SGD(das.parameters(), lr=0.1)
            batch = DASBatch(x, [s], torch.randint(0, 3, (5,), generator=gen))
            calls.append(lambda das=das, opt=opt, batch=batch: train_once(net, das, opt, batch))
    rng.shuffle(calls)
    return calls


def train_once(net: Interventionable, das: RotatedInterchange, opt: torch.optim.Optimizer, batch: DASBatch) -> Any:
    """One DAS step (intervened forward, backward, SGD step): the loss and the new parameters."""
    loss = das_step(net, [das], batch, nn.functional.cross_entropy, opt)
    return [loss] + [p.detach().clone() for p in das.parameters()]


def results_equal(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(results_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(results_equal(x, y) for x, y in zip(a, b))
    return a == b


def capture(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as error:  # noqa: BLE001 - a wrong error is a result to compare, too
        return f"{type(error).__name__}: {error}"


@pytest.fixture
def fast_switching() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def sequential(net: Interventionable, seed: int) -> list[Any]:
    return [capture(c) for c in make_calls(net, seed)]


@pytest.mark.parametrize("repetition", range(3))
def test_threads_sharing_one_model_equal_sequential_calls(shared, fast_switching, repetition):
    expected = sequential(shared, repetition)
    assert not any(isinstance(r, str) for r in expected)
    calls = make_calls(shared, repetition)
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(N_THREADS)

    def worker(t: int) -> None:
        start.wait()
        for i in range(t, len(calls), N_THREADS):
            results[i] = capture(calls[i])

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wrong = [i for i, (r, e) in enumerate(zip(results, expected)) if not results_equal(r, e)]
    assert wrong == [], f"{len(wrong)} of {len(calls)} calls differ, e.g. {results[wrong[0]]!r}"
    assert hook_count(shared) == 0 and active_dispatchers() == 0


def test_asyncio_tasks_sharing_one_model_equal_sequential_calls(shared, fast_switching):
    expected = sequential(shared, 7)
    calls = make_calls(shared, 7)

    async def main() -> list[Any]:
        async def task(i: int) -> Any:
            await asyncio.sleep(0)
            if i % 3 == 0:  # interleaved on the event loop's thread, one call at a time
                return capture(calls[i])
            return await asyncio.to_thread(capture, calls[i])  # in a worker thread, concurrently

        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(N_THREADS))
        return await asyncio.gather(*(task(i) for i in range(len(calls))))

    results = asyncio.run(main())
    wrong = [i for i, (r, e) in enumerate(zip(results, expected)) if not results_equal(r, e)]
    assert wrong == [], f"{len(wrong)} of {len(calls)} calls differ, e.g. {results[wrong[0]]!r}"
    assert hook_count(shared) == 0 and active_dispatchers() == 0


def test_a_hook_acts_only_for_its_own_call(shared):
    """Deterministic interleaving: while one thread's intervene is inside the model (paused in
    a hook of its own), another thread's plain call, collect and intervene run untouched."""
    x = torch.randn(4, 6, dtype=torch.float64)
    plain = shared(x)
    collected = shared.collect(x, [Coordinate("blocks.1")])[Coordinate("blocks.1")]
    ablated = shared.intervene(x, [ZeroAblation(Coordinate("blocks.2"))])
    inside, release = threading.Event(), threading.Event()

    class Pause(ZeroAblation):
        def forward(self, base: Tensor, source: Tensor | None) -> Tensor:
            inside.set()
            assert release.wait(10)
            return super().forward(base, source)

    outcome: dict[str, Any] = {}
    paused = threading.Thread(
        target=lambda: outcome.setdefault("paused", shared.intervene(x, [Pause(Coordinate("blocks.0"))]))
    )
    paused.start()
    assert inside.wait(10)
    try:
        assert torch.equal(shared(x), plain)
        assert torch.equal(shared.collect(x, [Coordinate("blocks.1")])[Coordinate("blocks.1")], collected)
        assert torch.equal(shared.intervene(x, [ZeroAblation(Coordinate("blocks.2"))]), ablated)
    finally:
        release.set()
        paused.join()
    reference = shared.intervene(x, [ZeroAblation(Coordinate("blocks.0"))])
    assert torch.equal(outcome["paused"], reference)
    assert hook_count(shared) == 0 and active_dispatchers() == 0


def test_early_stop_of_one_call_never_ends_another(shared):
    """A collect that stops early after ``blocks.1`` is paused between ``blocks.0`` and
    ``blocks.1``; meanwhile a plain call runs through ``blocks.1``: its forward must not be
    stopped (nor its output changed), and the paused collect still gets its value."""
    x = torch.randn(4, 6, dtype=torch.float64)
    plain = shared(x)
    expected = shared.collect(x, [Coordinate("blocks.1")])[Coordinate("blocks.1")]
    inside, release = threading.Event(), threading.Event()

    class Gate(nn.Module):
        def forward(self, h: Tensor) -> Tensor:
            if threading.current_thread().name == "collector":
                inside.set()
                assert release.wait(10)
            return h

    shared.model.yields[0] = Gate()
    out: dict[str, Any] = {}
    t = threading.Thread(
        target=lambda: out.setdefault("values", capture(lambda: shared.collect(x, [Coordinate("blocks.1")]))),
        name="collector",
    )
    t.start()
    assert inside.wait(10)
    try:
        assert torch.equal(shared(x), plain)
    finally:
        release.set()
        t.join()
    assert torch.equal(out["values"][Coordinate("blocks.1")], expected)
    assert hook_count(shared) == 0 and active_dispatchers() == 0
