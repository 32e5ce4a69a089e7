"""Where an attribution lands, and the hooks that read or replace a hidden state there.

The single entry point :func:`resolve_layer` turns a user's ``where`` (a module path, or ``None``
for the input embeddings) into ``(module, io)``; :func:`replace_at` is the one hook helper every
method uses. Both keep hooks strictly scoped: every handle is removed in ``finally``.

Inputs are a ``Tensor`` (batch first) or a mapping of named tensors (``input_ids``,
``attention_mask``, ...; all batch first). :func:`default_forward` calls ``model(inputs)`` or
``model(**inputs)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from iit.coordinates import Coordinate
from iit.errors import ArgumentError, CoordinateError, HookFiringError
from iit.hooks import call_model
from iit.hooks import find_module as _find_module

Inputs = Tensor | Mapping[str, Tensor]
ForwardFn = Callable[[Any], Any]
IO = Literal["output", "input"]

__all__ = [
    "ForwardFn",
    "IO",
    "Inputs",
    "LayerRef",
    "batch_size",
    "default_forward",
    "find_module",
    "repeat_inputs",
    "replace_at",
    "resolve_layer",
]


@dataclass(frozen=True)
class LayerRef:
    """A resolved attribution place: a module's output (or first input), or the raw inputs.

    ``module is None`` means "the model inputs themselves" (only for float tensor inputs).
    """

    module: nn.Module | None
    io: IO
    name: str


def find_module(model: nn.Module, path: str) -> nn.Module:
    """Return ``model``'s submodule named ``path`` in ``named_modules()``.

    Raises:
        CoordinateError: if no module has that name; lists the closest valid names.
    """
    return _find_module(dict(model.named_modules()), path)


def resolve_layer(
    model: nn.Module | Callable[..., Any], where: str | Coordinate | None, *, layer_input: bool = False
) -> LayerRef:
    """Resolve where to attribute to.

    Args:
        model: the model (an ``nn.Module``, or a plain callable when ``where`` is ``None``).
        where: a module path from ``model.named_modules()`` (attribute to its output, or to its
            first positional input with ``layer_input=True``), an :class:`iit.Coordinate` naming
            a whole hidden state (``io`` and a tensor or tuple element 0 output; read a slice of
            the result with ``coordinate.index.read(attributions)``), or ``None`` for the input
            embeddings: ``model.get_input_embeddings()`` when the model has it, else the inputs
            themselves (which must then be a float tensor).
        layer_input: attribute to the module's first input instead of its output.

    Returns:
        A :class:`LayerRef`.

    Raises:
        CoordinateError: unknown module path (with close matches), a path given for a model
            that is not an ``nn.Module``, or a coordinate with an index or another output element.
    """
    if isinstance(where, Coordinate):
        if not where.index.is_all or where.output not in (None, 0):
            raise CoordinateError(
                f"attribution places are whole hidden states; got {where.describe()}: use "
                f"Coordinate({where.module!r}, io={where.io!r}) and read the slice of the result "
                "with coordinate.index.read(attributions)"
            )
        layer_input, where = where.io == "input", where.module
    io: IO = "input" if layer_input else "output"
    if where is None:
        getter = getattr(model, "get_input_embeddings", None)
        if isinstance(model, nn.Module) and callable(getter):
            embeddings = getter()
            if isinstance(embeddings, nn.Module):
                name = next((n for n, m in model.named_modules() if m is embeddings), "embeddings")
                return LayerRef(embeddings, io, name)
        if layer_input:
            raise CoordinateError("layer_input=True needs a module path in `layer`")
        return LayerRef(None, "input", "<inputs>")
    if not isinstance(model, nn.Module):
        raise CoordinateError(
            f"layer={where!r} needs an nn.Module model, got {type(model).__name__}; "
            "pass the module and use `forward=` for a custom forward"
        )
    return LayerRef(find_module(model, where), io, where)


def default_forward(model: Callable[..., Any]) -> ForwardFn:
    """Return ``inputs -> model(inputs)`` (tensor) or ``model(**inputs)`` (mapping)."""

    def forward(inputs: Inputs) -> Any:
        return call_model(model, inputs)

    return forward


def batch_size(inputs: Inputs) -> int:
    """Number of rows of ``inputs`` (dim 0 of every tensor).

    Raises:
        ValueError: empty mapping, a non-tensor value, or tensors with different batch sizes.
    """
    if isinstance(inputs, Tensor):
        if inputs.dim() == 0:
            raise ArgumentError("inputs must have a batch dimension, got a 0-d tensor")
        return inputs.shape[0]
    if not inputs:
        raise ArgumentError("inputs mapping is empty; pass e.g. {'input_ids': ids}")
    sizes = {}
    for key, value in inputs.items():
        if not isinstance(value, Tensor) or value.dim() == 0:
            raise ArgumentError(
                f"inputs[{key!r}] must be a batched tensor, got {type(value).__name__}"
            )
        sizes[key] = value.shape[0]
    if len(set(sizes.values())) != 1:
        raise ArgumentError(f"all inputs must share the batch size (dim 0), got {sizes}")
    return next(iter(sizes.values()))


def repeat_inputs(inputs: Inputs, times: int) -> Inputs:
    """Stack ``times`` copies of the batch along dim 0 (copy-major: rows ``k*B .. k*B+B-1``)."""
    if isinstance(inputs, Tensor):
        return torch.cat([inputs] * times) if times > 1 else inputs
    return {k: torch.cat([v] * times) if times > 1 else v for k, v in inputs.items()}


def _first_tensor(value: Any, what: str) -> tuple[Tensor, Callable[[Tensor], Any]]:
    """Split a module output into (tensor, rebuild) where rebuild puts a new tensor back."""
    if isinstance(value, Tensor):
        return value, lambda t: t
    if isinstance(value, tuple) and value and isinstance(value[0], Tensor):
        return value[0], lambda t: (t, *value[1:])
    raise CoordinateError(
        f"{what} is a {type(value).__name__}, not a tensor or a tuple starting with a tensor"
    )


@contextmanager
def replace_at(
    ref: LayerRef, fn: Callable[[Tensor], Tensor], *, max_calls: int = 1
) -> Iterator[list[int]]:
    """While active, pass the tensor at ``ref`` through ``fn`` (``[batch, ...] -> same shape``).

    Yields a one-element list counting how often the hook fired. The hook is removed in
    ``finally`` (also when the forward raises).

    Raises:
        HookFiringError: if the module runs more than ``max_calls`` times in the block.
        CoordinateError: if the hooked value is not a tensor (or tuple starting with one), or the
            input has no positional tensor argument.
        ValueError: if ``ref.module`` is ``None`` (the inputs are not reached by a hook).
    """
    if ref.module is None:
        raise ArgumentError("replace_at needs a module; raw inputs are replaced by the caller")
    calls = [0]

    def count() -> None:
        calls[0] += 1
        if calls[0] > max_calls:
            raise HookFiringError(
                f"module {ref.name!r} ran {calls[0]} times in one forward (expected at most "
                f"{max_calls}); attribute to a module that runs once (no weight tying/reuse)"
            )

    def new_value(tensor: Tensor) -> Tensor:
        out = fn(tensor)
        if out.shape != tensor.shape:
            raise CoordinateError(
                f"replacement at {ref.name!r} has shape {tuple(out.shape)}, expected "
                f"{tuple(tensor.shape)}"
            )
        return out

    if ref.io == "output":

        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            count()
            tensor, rebuild = _first_tensor(output, f"the output of {ref.name!r}")
            return rebuild(new_value(tensor))

        handle = ref.module.register_forward_hook(hook)
    else:

        def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> Any:
            count()
            if not args or not isinstance(args[0], Tensor):
                raise CoordinateError(
                    f"module {ref.name!r} got no positional tensor input; attribute to its "
                    "output (layer_input=False) or to the module that produces the input"
                )
            return (new_value(args[0]), *args[1:])

        handle = ref.module.register_forward_pre_hook(pre_hook)
    try:
        yield calls
    finally:
        handle.remove()


def check_fired(ref: LayerRef, calls: list[int]) -> None:
    """Raise :class:`HookFiringError` if the hook at ``ref`` never ran."""
    if ref.module is not None and calls[0] == 0:
        raise HookFiringError(
            f"module {ref.name!r} never ran in the forward; check `layer` and `forward`"
        )
