"""Call-scoped forward hooks: one pass-through dispatcher per ``(module, io)`` site, shared by
every `iit.hooks.HookRun` that uses the site.

* **Call scoping.** The run of the current call lives in a `contextvars.ContextVar`
  (per thread, per asyncio task). A dispatcher acts for that run only; plain calls and other
  calls on the same model (other threads, other tasks) pass through it untouched.
* **Reference counting.** A dispatcher is registered (under a lock) when the first run needs its
  site and removed when the last one lets it go, so the model keeps exactly its own hooks.
* **Activation checkpointing.** A run whose hooks fired inside a checkpointed region (the
  ``torch.utils.checkpoint`` frame of a non-reentrant checkpoint, the ``ctx`` of a reentrant one)
  records that region. While the region can still be recomputed (its frame / ``ctx`` is alive,
  i.e. the autograd graph still needs it), the run keeps its dispatchers; during the
  recomputation in backward, the dispatcher finds the region being recomputed and replays that
  run's reads and writes there (same values, same autograd ops), without counting it as a
  second call. When the graph is freed, the region dies and the run's dispatchers are released.

Checkpoint regions are recognised through ``torch.utils.checkpoint`` internals (the saved-tensor
hooks of a non-reentrant checkpoint, the stack frame of ``CheckpointFunction`` for a reentrant
one; tested against the pinned torch). Not supported: nested checkpoints (a checkpoint inside a
checkpointed region) and other saved-tensor hooks (e.g. ``save_on_cpu``) opened inside a
non-reentrant checkpointed region.

A dispatcher is added to / removed from ``module._forward_hooks`` in place (so every handle the
user holds keeps working). torch iterates that dict atomically when it calls hooks; only its
exception path (``always_call`` hooks) loops over it in Python, so a forward failing at the moment
another thread adds or removes a dispatcher on the same module may see that error replaced by
"mutated during iteration". `iit.hooks.HookRun` tells its own early stop and errors apart
from such a replacement.
"""

from __future__ import annotations

import sys
import threading
import weakref
from contextvars import ContextVar
from types import CodeType
from typing import Any, Protocol

import torch
import torch.utils.checkpoint as _ckpt
from torch import nn

__all__ = ["ACTIVE_RUN", "SiteKey", "acquire", "release", "forward_region", "recompute_region", "add_region",
           "reentrant_call", "active_dispatchers"]

SiteKey = tuple[int, str]  # (id(module), "input" | "output")


class _Run(Protocol):
    site_keys: dict[SiteKey, Any]
    live_regions: int
    regions: list[tuple[int, int]]
    ended: bool
    held: list[SiteKey]

    def on_output(self, key: SiteKey, module: nn.Module, args: tuple, output: Any, replay: str | None) -> Any: ...

    def on_input(self, key: SiteKey, module: nn.Module, args: tuple, kwargs: dict, replay: str | None) -> Any: ...


ACTIVE_RUN: ContextVar[Any] = ContextVar("iit_active_hook_run", default=None)


class _Dispatcher:
    __slots__ = ("module", "handle", "users")

    def __init__(self, module: nn.Module, handle: Any) -> None:
        self.module = module  # keeps id(module) valid while registered
        self.handle = handle
        self.users = 0


_lock = threading.Lock()
_dispatchers: dict[SiteKey, _Dispatcher] = {}
# regions that can still be recomputed: id(region object) -> (weakref to it, run, serial)
_regions: dict[int, tuple[weakref.ref, Any, int]] = {}
_serial = 0
# region deaths reported while the lock was busy (finalizers run at arbitrary times)
_dead: list[tuple[int, int]] = []


# ---------------------------------------------------------------------------- dispatchers
def _owner(module: nn.Module, io: str) -> tuple[Any, str | None, SiteKey]:
    """Who acts at this firing: ``(run, None)`` in the run's own call, ``(replayer, "replay" |
    "replay-reentrant")`` in a recomputation of one of its checkpointed regions, else nobody."""
    key = (id(module), io)
    if _regions and torch._C._current_graph_task_id() != -1:
        region = recompute_region()
        if region is not None:
            entry = _regions.get(id(region))
            run = entry[1] if entry is not None and entry[0]() is region else None
            if run is not None and key in run.site_keys:
                return run, "replay" if isinstance(region, _ckpt._CheckpointFrame) else "replay-reentrant", key
            return None, None, key  # a recomputation that is not one of our runs'
    run = ACTIVE_RUN.get()
    if run is not None and key in run.site_keys:
        return run, None, key
    return None, None, key


def _output_dispatch(module: nn.Module, args: tuple, output: Any) -> Any:
    run, replay, key = _owner(module, "output")
    if run is None:
        return None
    return run.on_output(key, module, args, output, replay)


def _input_dispatch(module: nn.Module, args: tuple, kwargs: dict) -> Any:
    run, replay, key = _owner(module, "input")
    if run is None:
        return None
    return run.on_input(key, module, args, kwargs, replay)


def acquire(run: _Run, module: nn.Module, io: str) -> None:
    """Make sure the dispatcher of ``(module, io)`` is registered and count ``run`` as a user
    (recorded in ``run.held`` so that `release` can undo it)."""
    key = (id(module), io)
    with _lock:
        d = _dispatchers.get(key)
        if d is None:
            if io == "output":
                handle = module.register_forward_hook(_output_dispatch)
            else:
                handle = module.register_forward_pre_hook(_input_dispatch, with_kwargs=True)
            d = _dispatchers[key] = _Dispatcher(module, handle)
        d.users += 1
        run.held.append(key)
    _drain()


def _release_locked(run: _Run) -> None:
    while run.held:
        key = run.held.pop()
        d = _dispatchers[key]
        d.users -= 1
        if d.users == 0:
            del _dispatchers[key]
            d.handle.remove()


def release(run: _Run, *, keep_regions: bool = True) -> None:
    """The run's call is over: let go of its dispatchers now, or, if checkpointed regions of
    it can still be recomputed (and ``keep_regions``), when the last of them is freed. A failed
    call passes ``keep_regions=False``: nothing of it can be backpropagated."""
    with _lock:
        run.ended = True
        if not keep_regions:
            for region_id, serial in list(run.regions):
                _forget_locked(region_id, serial)
        if run.live_regions == 0:
            _release_locked(run)
    _drain()


def _region_died(region_id: int, serial: int) -> None:
    if _lock.acquire(blocking=False):
        try:
            _forget_locked(region_id, serial)
        finally:
            _lock.release()
        _drain()
    else:
        _dead.append((region_id, serial))


def _forget_locked(region_id: int, serial: int) -> None:
    entry = _regions.get(region_id)
    if entry is None or entry[2] != serial:
        return
    del _regions[region_id]
    run = entry[1]
    run.regions.remove((region_id, serial))
    run.live_regions -= 1
    if run.ended and run.live_regions == 0:
        _release_locked(run)


def _drain() -> None:
    while _dead and _lock.acquire(blocking=False):
        try:
            while _dead:
                _forget_locked(*_dead.pop())
        finally:
            _lock.release()


def add_region(run: _Run, region: object) -> None:
    """Record that ``run``'s hooks fired inside the checkpointed region ``region`` (kept until
    the region object is freed, i.e. until its autograd graph is gone)."""
    global _serial
    with _lock:
        entry = _regions.get(id(region))
        if entry is not None and entry[0]() is region:
            return
        _serial += 1
        _regions[id(region)] = (weakref.ref(region), run, _serial)
        run.regions.append((id(region), _serial))
        run.live_regions += 1
        serial = _serial
    weakref.finalize(region, _region_died, id(region), serial)


def active_dispatchers() -> int:
    """Number of dispatcher hooks registered right now (for tests)."""
    with _lock:
        return len(_dispatchers)


# ---------------------------------------------------------------------------- checkpoint regions
def _nested_code(owner: Any, name: str) -> CodeType:
    for const in owner.__code__.co_consts:
        if isinstance(const, CodeType) and const.co_name == name:
            return const
    raise RuntimeError(f"torch.utils.checkpoint changed: no {name} in {owner.__qualname__}")


_FORWARD_PACK = _nested_code(_ckpt._checkpoint_hook.__init__, "pack_hook")  # non-reentrant, first pass
_RECOMPUTE_PACK = _nested_code(_ckpt._recomputation_hook.__init__, "pack_hook")  # non-reentrant, recompute
_REENTRANT_FORWARD = _ckpt.CheckpointFunction.forward.__code__
_REENTRANT_BACKWARD = _ckpt.CheckpointFunction.backward.__code__


def _checkpoint_pack_hook(code: CodeType) -> Any:
    """The innermost saved-tensor pack hook if it is ``torch.utils.checkpoint``'s ``code``."""
    hooks = torch._C._autograd._top_saved_tensors_default_hooks(False)
    if hooks is None:
        return None
    fn = hooks[0]
    while hasattr(fn, "__wrapped__"):  # torch._dynamo.disable wrappers
        fn = fn.__wrapped__
    return fn if getattr(fn, "__code__", None) is code else None


def _closure_value(fn: Any, name: str) -> Any:
    code = fn.__code__
    return fn.__closure__[code.co_freevars.index(name)].cell_contents


def _frame_local(code: CodeType, name: str) -> Any:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code is code:
            return frame.f_locals.get(name)
        frame = frame.f_back
    return None


def forward_region(grad_at_start: bool) -> object | None:
    """The checkpointed region the forward is in right now (first pass), or ``None``.

    Non-reentrant: the ``_CheckpointFrame`` of the innermost ``torch.utils.checkpoint``;
    reentrant (only looked for when grad mode was switched off since the call started): the
    ``ctx`` of ``CheckpointFunction``.
    """
    if torch.is_grad_enabled():
        pack = _checkpoint_pack_hook(_FORWARD_PACK)
        return None if pack is None else _closure_value(pack, "frame")
    if grad_at_start:
        return _frame_local(_REENTRANT_FORWARD, "ctx")
    return None


def reentrant_call() -> tuple[Any, Any, tuple] | None:
    """``(ctx, run_function, args)`` of the innermost reentrant checkpoint being run forward."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is _REENTRANT_FORWARD:
            local = frame.f_locals
            return local["ctx"], local["run_function"], local["args"]
        frame = frame.f_back
    return None


def recompute_region() -> object | None:
    """The checkpointed region being recomputed right now (during backward), or ``None``."""
    pack = _checkpoint_pack_hook(_RECOMPUTE_PACK)
    if pack is not None:
        return _closure_value(pack, "target_frame_ref")()
    return _frame_local(_REENTRANT_BACKWARD, "ctx")
