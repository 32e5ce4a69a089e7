"""One forward pass with temporary read / write hooks: the machinery under
:class:`iit.Interventionable`.

A :class:`HookRun` registers at most one hook per ``(module, io)`` site, for the duration of one
call, removes every hook in ``finally`` (also after an exception), checks that each site fired
exactly once, and can stop the forward as soon as every requested value has been read.
Hooks registered by the user or by other libraries are never touched.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from iit.coordinates import Coordinate, check_values
from iit.errors import CoordinateError, HookFiringError, InterventionError, did_you_mean

__all__ = ["Inputs", "HookRun", "WriteOp", "call_model", "batch_size", "find_module"]

# Model inputs: a tensor (``model(x)``), a tuple / list (``model(*args)``) or a dict
# (``model(**kwargs)``, e.g. a tokenizer's output).
Inputs = Tensor | tuple | list | Mapping


def call_model(model: nn.Module, inputs: Inputs) -> Any:
    """Call ``model`` on ``inputs``: ``model(**inputs)`` for a mapping, ``model(*inputs)`` for
    a tuple or list, else ``model(inputs)``."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def batch_size(inputs: Inputs) -> int | None:
    """The batch size of ``inputs``: dim 0 of its first tensor (``None`` if it has none)."""
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
    forward catches it (the rest of the model never runs)."""


@dataclass
class WriteOp:
    """One write at one coordinate of the base run.

    Attributes:
        coordinate: the resolved generic coordinate.
        apply: ``base_values -> new_values`` (the intervention, with its source bound).
        rows: optional bool ``[batch]``: rows where the write happens.
        name: a label for error messages.
    """

    coordinate: Coordinate
    apply: Callable[[Tensor], Tensor]
    rows: Tensor | None = None
    name: str = ""


@dataclass
class _Site:
    module: nn.Module
    path: str
    io: str
    reads: list[tuple[Any, Coordinate]] = field(default_factory=list)
    writes: list[WriteOp] = field(default_factory=list)
    fired: int = 0


def _describe_structure(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"Tensor{list(value.shape)}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k!r}: {_describe_structure(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_describe_structure(v) for v in value) + ")"
    return type(value).__name__


def _select_output(output: Any, coord: Coordinate) -> Tensor:
    sel = coord.output
    try:
        value = output if sel is None else output[sel]
    except (KeyError, IndexError, TypeError):
        value = None
    if not isinstance(value, Tensor):
        raise CoordinateError(
            f"{coord.describe()}: output selector {sel!r} does not give a tensor; module "
            f"{coord.module!r} returns {_describe_structure(output)} (choose output=<int> for a tuple "
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
        f"{coord.module!r} was called with args {_describe_structure(args)} and kwargs "
        f"{_describe_structure(kwargs)}"
    )


class HookRun:
    """Hooks for one forward pass: reads (collect values) and writes (interventions).

    Args:
        modules: ``named_modules()`` of the model, as a dict.
        reads: ``[(key, coordinate)]``: values to collect, returned under ``key``.
        writes: write operations, applied in order (several at one site apply in list order).
        stop_early: stop the forward once every read is done (when there are no writes).

    Raises:
        CoordinateError: unknown module paths (before any forward), bad selectors / indices.
        HookFiringError: a site fired twice or never.
    """

    def __init__(
        self,
        modules: Mapping[str, nn.Module],
        reads: list[tuple[Any, Coordinate]],
        writes: list[WriteOp],
        stop_early: bool,
    ) -> None:
        self.sites: dict[tuple[str, str], _Site] = {}
        for key, coord in reads:
            self._site(modules, coord).reads.append((key, coord))
        for op in writes:
            self._site(modules, op.coordinate).writes.append(op)
        self.stop_early = stop_early and not writes
        self.values: dict[Any, Tensor] = {}
        self._pending_reads = sum(1 for s in self.sites.values() if s.reads)

    def _site(self, modules: Mapping[str, nn.Module], coord: Coordinate) -> _Site:
        key = coord.site
        if key not in self.sites:
            self.sites[key] = _Site(find_module(modules, coord.module), coord.module, coord.io)
        return self.sites[key]

    # ------------------------------------------------------------------ hook bodies
    def _fire(self, site: _Site) -> None:
        site.fired += 1
        if site.fired > 1:
            raise HookFiringError(
                f"module {site.path!r} ran more than once in one forward pass (a shared or tied "
                "module, a loop over one block, or activation checkpointing re-running it), so a "
                f"coordinate on its {site.io} is ambiguous; anchor the place you mean with its own "
                "nn.Identity module, or disable checkpointing"
            )

    def _transform(self, site: _Site, get: Callable[[Coordinate], Tensor], put: Callable) -> None:
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
            put(op.coordinate, op.coordinate.index.write(hidden, new_values))
        for key, coord in site.reads:
            hidden = get(coord)
            coord.index.check(hidden.shape, coord.describe())
            self.values[key] = coord.index.read(hidden)
        if site.reads:
            self._pending_reads -= 1
            if self.stop_early and self._pending_reads == 0:
                raise StopForward

    def _output_hook(self, site: _Site) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Any) -> Any:
            self._fire(site)
            box = [output]

            def put(coord: Coordinate, new: Tensor) -> None:
                box[0] = _replace_output(box[0], coord, new)

            self._transform(site, lambda c: _select_output(box[0], c), put)
            return box[0] if site.writes else None

        return hook

    def _input_hook(self, site: _Site) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> Any:
            self._fire(site)
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

            self._transform(site, get, put)
            return (tuple(state[0]), state[1]) if site.writes else None

        return hook

    # ------------------------------------------------------------------ running
    def run(self, forward: Callable[[], Any]) -> Any:
        """Run ``forward()`` with the hooks in place; return its output (``None`` if the run
        was stopped early). Collected values are in :attr:`values`."""
        handles = []
        try:
            for site in self.sites.values():
                if site.io == "output":
                    handles.append(site.module.register_forward_hook(self._output_hook(site)))
                else:
                    handles.append(
                        site.module.register_forward_pre_hook(self._input_hook(site), with_kwargs=True)
                    )
            try:
                output = forward()
            except StopForward:
                return None
        finally:
            for handle in handles:
                handle.remove()
        silent = [f"{s.path or '<model>'} ({s.io})" for s in self.sites.values() if s.fired == 0]
        if silent:
            raise HookFiringError(
                f"module(s) {silent} never ran during the forward pass, so their coordinates were "
                "neither read nor written; use modules that the forward actually calls"
            )
        return output
