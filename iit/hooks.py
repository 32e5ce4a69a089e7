"""One forward pass with temporary read / write hooks: the machinery under
`iit.Interventionable`.

A `HookRun` acts at ``(module, io)`` sites for the duration of one call, and only for that
call (threads and asyncio tasks sharing the model are not affected; see `iit._dispatch`),
checks that each site fired exactly once (a checkpoint recomputation is not a second firing),
and can stop the forward as soon as every requested value has been read. Its pass-through hooks
are removed when the last run using them ends (also after an exception); hooks registered by
the user or by other libraries are never touched.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import set_device_states

from iit._dispatch import (
    ACTIVE_RUN,
    SiteKey,
    acquire,
    add_region,
    forward_region,
    reentrant_call,
    release,
)
from iit.coordinates import Coordinate, check_values
from iit.errors import CoordinateError, HookFiringError, InterventionError, did_you_mean

__all__ = ["Inputs", "HookRun", "WriteOp", "call_model", "batch_size", "find_module", "describe_structure"]

# Model inputs: a tensor (``model(x)``), a tuple / list (``model(*args)``) or a dict
# (``model(**kwargs)``, e.g. a tokenizer's output).
Inputs = Tensor | tuple | list | Mapping


def call_model(model: nn.Module, inputs: Inputs) -> Any:
    """Call ``model`` on ``inputs``: ``model(**inputs)`` for a mapping, ``model(*inputs)`` for
    a tuple or list, else ``model(inputs)``.

    Args:
        model: the module to call.
        inputs: a tensor, a tuple / list of positional arguments, or a dict of keyword
            arguments.

    Returns:
        The model's output, unchanged.

    Raises:
        TypeError: (from the model) arguments its ``forward`` does not take.
    """
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def batch_size(inputs: Inputs) -> int | None:
    """The batch size of ``inputs``: dim 0 of its first tensor (``None`` if it has none).

    Args:
        inputs: a tensor ``[batch, ...]``, a tuple / list, or a dict of keyword arguments.

    Raises:
        TypeError: ``inputs`` is neither a tensor nor iterable.

    Examples:
        >>> import torch
        >>> batch_size({"attention_mask": torch.ones(3, 5), "use_cache": False})
        3
    """
    if isinstance(inputs, Tensor):
        return inputs.shape[0] if inputs.dim() else None
    values = inputs.values() if isinstance(inputs, Mapping) else inputs
    for value in values:
        if isinstance(value, Tensor) and value.dim():
            return value.shape[0]
    return None


def find_module(modules: Mapping[str, nn.Module], path: str) -> nn.Module:
    """Look a module up by its ``named_modules()`` path.

    Raises:
        CoordinateError: naming the nearest existing paths when ``path`` is unknown.
    """
    try:
        return modules[path]
    except KeyError:
        names = [n for n in modules if n]
        hint = did_you_mean(path, names, n=5) or f"; some valid names: {names[:8]}"
        raise CoordinateError(f"the model has no module {path!r}{hint}") from None


class StopForward(Exception):
    """Raised by a read hook once every requested value is collected; the code that runs the
    forward catches it (the rest of the model never runs). ``run`` is the `HookRun` that
    stopped (``None`` for other users of this exception)."""

    def __init__(self, run: Any = None) -> None:
        super().__init__("iit stopped the forward pass after the last value it needed was read")
        self.run = run


@dataclass
class WriteOp:
    """One write at one coordinate of the base run.

    Attributes:
        coordinate: the resolved generic coordinate.
        apply: ``base_values -> new_values`` (the intervention, with its source bound).
        rows: optional bool ``[batch]``: rows where the write happens.
        name: a label for error messages.
        source: the source values ``apply`` writes from, if any (checked for gradients under
            reentrant checkpointing).

    Raises:
        TypeError: a missing or unknown field (the write is checked when it runs).
    """

    coordinate: Coordinate
    apply: Callable[[Tensor], Tensor]
    rows: Tensor | None = None
    name: str = ""
    source: Tensor | None = None


@dataclass
class _Site:
    module: nn.Module
    path: str
    io: str
    reads: list[tuple[Any, Coordinate]] = field(default_factory=list)
    writes: list[WriteOp] = field(default_factory=list)
    fired: int = 0


def describe_structure(value: Any, tensor_text: Callable[[Tensor], str] | None = None) -> str:
    """A one-line picture of a nested value for error messages: ``Tensor[3, 8]`` for a tensor
    (or ``tensor_text(t)``), one entry per element / key for tuples, lists and mappings, the type
    name otherwise.

    Args:
        value: the value to describe.
        tensor_text: how a tensor is written (default: ``Tensor[<shape>]``).

    Raises:
        RecursionError: a self-containing structure.

    Examples:
        >>> import torch
        >>> describe_structure((torch.zeros(2, 3), {"past": None}))
        "(Tensor[2, 3], {'past': NoneType})"
    """
    if isinstance(value, Tensor):
        return f"Tensor{list(value.shape)}" if tensor_text is None else tensor_text(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k!r}: {describe_structure(v, tensor_text)}" for k, v in value.items()) + "}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(describe_structure(v, tensor_text) for v in value) + ")"
    return type(value).__name__


def _select_output(output: Any, coord: Coordinate) -> Tensor:
    sel = coord.output
    try:
        # a selector on a plain tensor output would index its rows: refused, not applied
        value = output if sel is None else (None if isinstance(output, Tensor) else output[sel])
    except (KeyError, IndexError, TypeError):
        value = None
    if not isinstance(value, Tensor):
        raise CoordinateError(
            f"{coord.describe()}: output selector {sel!r} does not give a tensor; module "
            f"{coord.module!r} returns {describe_structure(output)} (choose output=<int> for a tuple "
            "element, output=<str> for a dict key)"
        )
    return value


def _replace_output(output: Any, coord: Coordinate, new: Tensor) -> Any:
    sel = coord.output
    if sel is None:
        return new
    if isinstance(output, tuple):
        return output[:sel] + (new,) + output[sel + 1 :]
    if isinstance(output, list):
        return output[:sel] + [new] + output[sel + 1 :]
    copy = type(output)(**{**output, sel: new}) if type(output) is not dict else {**output, sel: new}
    return copy


def _input_position(module: nn.Module, name: str) -> int | None:
    try:
        params = list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return None
    return params.index(name) if name in params else None


def _select_input(module: nn.Module, args: tuple, kwargs: dict, coord: Coordinate) -> tuple[str, Any]:
    """Where the selected input lives: ``("arg", i)`` or ``("kwarg", name)``."""
    sel = coord.output
    if sel is None:
        sel = 0
    if isinstance(sel, int):
        if sel < len(args) and isinstance(args[sel], Tensor):
            return ("arg", sel)
    else:
        if sel in kwargs and isinstance(kwargs[sel], Tensor):
            return ("kwarg", sel)
        pos = _input_position(module, sel)
        if pos is not None and pos < len(args) and isinstance(args[pos], Tensor):
            return ("arg", pos)
    raise CoordinateError(
        f"{coord.describe()}: input selector {coord.output!r} does not give a tensor; module "
        f"{coord.module!r} was called with args {describe_structure(args)} and kwargs "
        f"{describe_structure(kwargs)}"
    )


class _Captured(BaseException):
    """Ends the re-run of a reentrant checkpointed region once its read site was reached."""

    def __init__(self, run: Any, result: Any) -> None:
        super().__init__()
        self.run = run
        self.result = result


class _Replayer:
    """The part of a `HookRun` that outlives its call while a checkpointed region of it
    can be recomputed: its sites (replayed in backward) and its dispatcher bookkeeping."""

    def __init__(self, sites: dict[tuple[str, str], _Site], site_keys: dict[SiteKey, _Site]) -> None:
        self.sites = sites
        self.site_keys = site_keys
        self.held: list[SiteKey] = []
        self.regions: list[tuple[int, int]] = []
        self.live_regions = 0
        self.ended = False

    def on_output(self, key: SiteKey, module: nn.Module, args: tuple, output: Any, replay: str | None) -> Any:
        return HookRun._replay_shell(self).on_output(key, module, args, output, replay or "replay")

    def on_input(self, key: SiteKey, module: nn.Module, args: tuple, kwargs: dict, replay: str | None) -> Any:
        return HookRun._replay_shell(self).on_input(key, module, args, kwargs, replay or "replay")


def _shares_storage(a: Tensor, b: Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


class HookRun:
    """Hooks for one forward pass: reads (collect values) and writes (interventions).

    The hooks are call-scoped (see `iit._dispatch`): they act only for the call that runs
    `run`, in its thread or asyncio task; other calls on the same model meanwhile run
    untouched. Under activation checkpointing the run's reads and writes are replayed when
    backward recomputes a checkpointed region (a recomputation is not a second call).

    Values read are never a tensor the model can still change in place: a value that shares
    memory with the hidden state is copied (``clone``, differentiable) unless the forward stops
    right after it is read. A full replacement of a hidden state is never a tensor someone else
    keeps (copied when it is the source values, a view or a parameter). An error raised inside a hook is recorded and
    raised again after the forward, even if the model caught it.

    Args:
        modules: ``named_modules()`` of the model, as a dict.
        reads: ``[(key, coordinate)]``: values to collect, returned under ``key``.
        writes: write operations, applied in order (several at one site apply in list order).
        stop_early: stop the forward once every read is done (when there are no writes).

    Raises:
        CoordinateError: unknown module paths (before any forward), bad selectors / indices.
        HookFiringError: a site fired twice or never.
        InterventionError: the model caught the early stop and then changed a collected value.
    """

    def __init__(
        self,
        modules: Mapping[str, nn.Module],
        reads: list[tuple[Any, Coordinate]],
        writes: list[WriteOp],
        stop_early: bool,
    ) -> None:
        self.sites: dict[tuple[str, str], _Site] = {}
        self.site_keys: dict[SiteKey, _Site] = {}
        for key, coord in reads:
            self._site(modules, coord).reads.append((key, coord))
        for op in writes:
            self._site(modules, op.coordinate).writes.append(op)
        self.stop_early = stop_early and not writes
        self.values: dict[Any, Tensor] = {}
        self._pending_reads = sum(1 for s in self.sites.values() if s.reads)
        # what the dispatchers and checkpoint recomputations see of this run (iit._dispatch):
        # the sites only, never the values read (they may hold the recomputable graph)
        self.replayer = _Replayer(self.sites, self.site_keys)
        # outcome of the call
        self.error: BaseException | None = None
        self.stopped = False
        self._grad_at_start = False
        self._uncopied: list[tuple[Any, Tensor, int]] = []
        self._capture: _Site | None = None

    @classmethod
    def _replay_shell(cls, replayer: _Replayer) -> HookRun:
        """A run over ``replayer``'s sites that only replays (recomputation in backward)."""
        shell = cls.__new__(cls)
        shell.sites, shell.site_keys = replayer.sites, replayer.site_keys
        shell.stop_early, shell._pending_reads = False, 0
        shell.values, shell._uncopied, shell._capture = {}, [], None
        return shell

    def _site(self, modules: Mapping[str, nn.Module], coord: Coordinate) -> _Site:
        key = coord.site
        if key not in self.sites:
            module = find_module(modules, coord.module)
            site = self.sites[key] = _Site(module, coord.module, coord.io)
            self.site_keys[(id(module), coord.io)] = site
        return self.sites[key]

    # ------------------------------------------------------------------ hook bodies
    # Modes of a hook body:
    #   "first"    the call's own forward: count the firing, read, write, maybe stop;
    #   "replay"   a checkpoint recomputation (or a re-run for gradients): the same autograd
    #              ops, values discarded, no counting ("replay-reentrant": of a reentrant one);
    #   "capture"  the re-run of a reentrant checkpointed region, with grad, up to a read site:
    #              keep the values read there, then end the re-run (`_Captured`);
    #   "captured" the first pass at that site: the values are already there.
    def _fire(self, site: _Site) -> object | None:
        site.fired += 1
        if site.fired > 1:
            raise HookFiringError(
                f"module {site.path!r} ran more than once in one forward pass (a shared or tied "
                "module, or a loop over one block), so a coordinate on its "
                f"{site.io} is ambiguous; anchor the place you mean with its own nn.Identity module"
            )
        region = forward_region(self._grad_at_start)
        if region is not None:
            add_region(self.replayer, region)
        return region

    def _transform(self, site: _Site, get: Callable[[Coordinate], Tensor], put: Callable, mode: str) -> None:
        for op in site.writes:
            hidden = get(op.coordinate)
            where = op.name or op.coordinate.describe()
            op.coordinate.index.check(hidden.shape, where)
            base_values = op.coordinate.index.read(hidden)
            new_values = op.apply(base_values)
            check_values(new_values, base_values, where)
            if op.rows is not None:
                if op.coordinate.index.boolean_mask is not None and op.coordinate.index.per_row:
                    raise InterventionError(
                        f"{where}: a row restriction cannot be combined with a per-row mask index; "
                        "fold the rows into the mask instead"
                    )
                rows = op.rows.to(new_values.device).reshape((-1,) + (1,) * (new_values.dim() - 1))
                new_values = torch.where(rows, new_values, base_values)
            written = op.coordinate.index.write(hidden, new_values)
            if written is new_values and self._foreign(new_values, op.source):
                written = new_values.clone()  # the model may change what it is given in place
            if mode == "replay-reentrant" and hidden.requires_grad and not written.requires_grad:
                # the region's output no longer depends on anything that needs a gradient (as in
                # the first pass); a reentrant checkpoint refuses to backpropagate a recomputation
                # without one, so give it a fresh leaf to send the unused gradient to
                written = written.clone() if written is new_values else written
                written.requires_grad_(True)
            put(op.coordinate, written)
        if not site.reads:
            return
        last = self.stop_early and self._pending_reads == 1 and mode != "capture"
        if mode != "captured":
            for key, coord in site.reads:
                hidden = get(coord)
                coord.index.check(hidden.shape, coord.describe())
                value = coord.index.read(hidden)
                if mode.startswith("replay"):
                    continue  # same autograd ops as the first pass; its values were kept then
                if _shares_storage(value, hidden):
                    if last:  # the forward stops right here: nothing can change it any more
                        self._uncopied.append((key, value, value._version))
                    else:
                        value = value.clone()
                self.values[key] = value
        if mode in ("first", "captured"):
            self._pending_reads -= 1
            if self.stop_early and self._pending_reads == 0:
                self.stopped = True
                raise StopForward(self)

    @staticmethod
    def _foreign(values: Tensor, source: Tensor | None) -> bool:
        """Whether ``values`` may be a tensor someone else keeps: the source values themselves
        (a cached `Activations`, another run's hidden state), a view (e.g. a broadcast
        constant) or a parameter."""
        return (
            values._base is not None
            or (values.is_leaf and values.requires_grad)
            or (source is not None and _shares_storage(values, source))
        )

    def _hook(self, site: _Site, transform: Callable[[str], Any], replay: str | None) -> Any:
        """Run a hook body in the right mode; in the call's own forward, count the firing and
        record any error (raised again after the forward even if the model catches it)."""
        if replay is not None:
            return transform(replay)
        if self._capture is not None:  # re-running a reentrant checkpointed region for gradients
            if site is not self._capture:
                return transform("replay")  # (grad mode is on: a leaf is never made here)
            result = transform("capture")
            raise _Captured(self, result)
        if self.stopped or self.error is not None:
            return None  # the model caught our stop / error and went on: leave it alone
        try:
            region = self._fire(site)
            if region is not None and not torch.is_grad_enabled():  # inside a reentrant checkpoint
                self._check_reentrant_writes(site)
                call = reentrant_call() if site.reads else None
                if call is not None:  # reads under a reentrant checkpoint: get them with grad
                    self._capture_reads(site, call)
                    return transform("captured")
            return transform("first")
        except StopForward:
            raise
        except BaseException as error:
            self.error = error
            raise

    def _check_reentrant_writes(self, site: _Site) -> None:
        for op in site.writes:
            if op.source is not None and op.source.requires_grad:
                raise InterventionError(
                    f"{op.name or op.coordinate.describe()}: module {site.path!r} runs inside a reentrant "
                    "activation checkpoint (torch.utils.checkpoint(..., use_reentrant=True)), where "
                    "gradients cannot reach the source run (backward re-runs the region in a separate "
                    "pass); use use_reentrant=False (PyTorch's recommendation and Hugging Face's "
                    "default) or detach_sources=True"
                )

    def _capture_reads(self, site: _Site, call: tuple[Any, Callable, tuple]) -> None:
        """Re-run the reentrant checkpointed region that contains ``site`` from its start, with
        grad and its RNG state at the start, up to ``site``; keep the values read there (they
        then carry gradients to the region's inputs and parameters)."""
        ctx, function, args = call
        devices = ctx.fwd_devices if ctx.preserve_rng_state and ctx.had_device_in_fwd else []
        self._capture = site
        try:
            with torch.random.fork_rng(devices=devices, enabled=ctx.preserve_rng_state, device_type=ctx.device_type):
                if ctx.preserve_rng_state:
                    torch.set_rng_state(ctx.fwd_cpu_state)
                    if ctx.had_device_in_fwd:
                        set_device_states(ctx.fwd_devices, ctx.fwd_device_states, device_type=ctx.device_type)
                with torch.enable_grad():
                    function(*args)
        except _Captured as done:
            if done.run is not self:
                raise
        finally:
            self._capture = None
        if not all(key in self.values for key, _ in site.reads):
            raise HookFiringError(
                f"module {site.path!r}: re-running its checkpointed region to read it with gradients "
                "did not reach it again; the region's forward is not repeatable"
            )

    def on_output(self, key: SiteKey, module: nn.Module, args: tuple, output: Any, replay: str | None) -> Any:
        """Forward hook body for the site ``key`` (called by the dispatcher)."""
        site = self.site_keys[key]
        box = [output]

        def put(coord: Coordinate, new: Tensor) -> None:
            box[0] = _replace_output(box[0], coord, new)

        def transform(mode: str) -> Any:
            self._transform(site, lambda c: _select_output(box[0], c), put, mode)
            return box[0] if site.writes else None

        return self._hook(site, transform, replay)

    def on_input(self, key: SiteKey, module: nn.Module, args: tuple, kwargs: dict, replay: str | None) -> Any:
        """Forward pre-hook body for the site ``key`` (called by the dispatcher)."""
        site = self.site_keys[key]
        state = [list(args), dict(kwargs)]

        def get(coord: Coordinate) -> Tensor:
            kind, where = _select_input(module, tuple(state[0]), state[1], coord)
            return state[0][where] if kind == "arg" else state[1][where]

        def put(coord: Coordinate, new: Tensor) -> None:
            kind, where = _select_input(module, tuple(state[0]), state[1], coord)
            if kind == "arg":
                state[0][where] = new
            else:
                state[1][where] = new

        def transform(mode: str) -> Any:
            self._transform(site, get, put, mode)
            return (tuple(state[0]), state[1]) if site.writes else None

        return self._hook(site, transform, replay)

    # ------------------------------------------------------------------ running
    def run(self, forward: Callable[[], Any]) -> Any:
        """Run ``forward()`` with the hooks in place for this call only; return its output
        (``None`` if the run was stopped early). Collected values are in `values`.

        Raises:
            HookFiringError: a site fired twice or never.
            InterventionError: the model caught the early stop, then changed a collected value.
            Exception: an error raised inside a hook, also when the model caught it.
        """
        self._grad_at_start = torch.is_grad_enabled()
        try:
            for site in self.sites.values():
                acquire(self.replayer, site.module, site.io)
            token = ACTIVE_RUN.set(self)
            try:
                output = forward()
            except StopForward as stop:
                if stop.run is not self:
                    raise
                output = None
            except BaseException as exc:
                if self.error is not None and exc is not self.error and isinstance(exc, Exception):
                    raise self.error from exc  # the model (or torch) replaced our error by another
                if not (self.stopped and isinstance(exc, Exception)):
                    raise
                # our early stop came back as another exception (the model caught it and raised
                # its own, or torch's exception path met a concurrent hook change): every value
                # was read before the stop, and nothing the forward does after it is a result
                output = None
            finally:
                ACTIVE_RUN.reset(token)
            output = self._check_outcome(output)
        except BaseException:
            release(self.replayer, keep_regions=False)  # a failed call leaves nothing behind
            raise
        release(self.replayer)
        return output

    def _check_outcome(self, output: Any) -> Any:
        """After the forward returned: an error the model swallowed, a swallowed early stop,
        sites that never fired."""
        if self.error is not None:  # the model caught the error and returned
            self.error.add_note("(raised inside an iit hook; the model caught it, iit raises it again)")
            raise self.error
        if self.stopped:
            output = None  # whatever the model returned after catching the stop is not a result
            changed = [k for k, t, v in self._uncopied if t._version != v]
            if changed:
                raise InterventionError(
                    f"the model caught iit's early stop (StopForward) and then changed collected "
                    f"value(s) {[getattr(k, 'describe', lambda k=k: repr(k))() for k in changed]} in "
                    "place; collect with return_output=True or stop_source_early=False for this model"
                )
        silent = [f"{s.path or '<model>'} ({s.io})" for s in self.sites.values() if s.fired == 0]
        if silent:
            raise HookFiringError(
                f"module(s) {silent} never ran during the forward pass, so their coordinates were "
                "neither read nor written; use modules that the forward actually calls"
            )
        return output
