"""Where an attribution lands: places are coordinates, read and written through the hook core.

A place is what interventions address (one vocabulary for both):

* an `iit.Coordinate` (module path, ``io``, output element, `iit.Index`): the
  attribution is shaped like ``coordinate.index.read(hidden)``, e.g. ``[batch, 2, d]`` for
  ``Index.positions(3, 5)``;
* an `iit.TransformerCoordinate` ``(layer, component, position, head, dims)`` on a Hugging
  Face model of a family in `iit.transformers.families.FAMILIES`, resolved for each batch
  (``Tokens`` positions follow the attention mask);
* a module path string (shorthand for ``Coordinate(path)``);
* ``None``: the input embeddings (``model.get_input_embeddings()``) or, for a model without
  them, the float inputs themselves.

Every read and write goes through `iit.hooks.HookRun` (hooks scoped to one call,
removed in ``finally``, each site checked to fire exactly once).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Union

import torch
from torch import Tensor, nn

from iit.coordinates import Coordinate
from iit.errors import CoordinateError
from iit.hooks import HookRun, Inputs, WriteOp, call_model

if TYPE_CHECKING:
    from iit.transformers import TransformerCoordinate

Place = Union[Coordinate, "TransformerCoordinate", str, None]
"""Where an attribution reads and writes: a `Coordinate`, a `TransformerCoordinate`, a module path, or ``None`` for the input embeddings."""
ForwardFn = Callable[[Any], Any]

__all__ = ["ForwardFn", "Place", "PlaceResolver", "default_forward", "repeat_inputs"]

_INPUTS = "<inputs>"


def default_forward(model: Callable[..., Any]) -> ForwardFn:
    """``inputs -> model(inputs)`` (tensor), ``model(*inputs)`` (tuple) or ``model(**inputs)``."""

    def forward(inputs: Inputs) -> Any:
        return call_model(model, inputs)  # type: ignore[arg-type]

    return forward


def repeat_inputs(inputs: Inputs, times: int) -> Inputs:
    """``times`` copies of the batch stacked along dim 0 (copy-major: rows ``k*B .. k*B+B-1``);
    non-tensor values and 0-d tensors are kept as they are."""
    if times == 1:
        return inputs

    def rep(v: Any) -> Any:
        return torch.cat([v] * times) if isinstance(v, Tensor) and v.dim() else v

    if isinstance(inputs, Tensor):
        return rep(inputs)
    if isinstance(inputs, Mapping):
        return {k: rep(v) for k, v in inputs.items()}
    return type(inputs)(rep(v) for v in inputs)


def _is_transformer_coordinate(place: object) -> bool:
    cls = type(place)
    return cls.__name__ == "TransformerCoordinate" and cls.__module__.startswith("iit.transformers")


class PlaceResolver:
    """Resolve a `Place` on one model and read or write the hidden state there.

    Args:
        model: the model (an ``nn.Module``; a plain callable only with ``place=None`` on float
            inputs).
        place: see the module docstring.
        layer_input: for a module path string, the module's first input instead of its output.

    Raises:
        CoordinateError: an unknown module path (nearest names listed), a place of an unknown
            type, a module path for a model that is not an ``nn.Module``, or a
            ``TransformerCoordinate`` for a model outside the family table.
    """

    def __init__(
        self, model: nn.Module | Callable[..., Any], place: Place, *, layer_input: bool = False
    ) -> None:
        self.model = model
        self._transformer: Any = None
        self.place: Coordinate | Any | None
        if place is None:
            getter = getattr(model, "get_input_embeddings", None)
            embeddings = getter() if isinstance(model, nn.Module) and callable(getter) else None
            if isinstance(embeddings, nn.Module):
                name = next(n for n, m in model.named_modules() if m is embeddings)  # type: ignore[union-attr]
                place = name
            elif layer_input:
                raise CoordinateError("layer_input=True needs a module path as the place")
        if isinstance(place, str):
            place = Coordinate(place, io="input" if layer_input else "output")
        if place is not None and not isinstance(model, nn.Module):
            raise CoordinateError(
                f"the place {place!r} needs an nn.Module model, got {type(model).__name__}; "
                "pass the module and use `forward=` for a custom forward"
            )
        if isinstance(place, Coordinate):
            from iit.hooks import find_module

            find_module(self._modules(), place.module)  # unknown path: nearest names
        elif _is_transformer_coordinate(place):
            from iit.transformers import TransformerInterventionable

            self._transformer = TransformerInterventionable(model)  # type: ignore[arg-type]
            self._transformer.validate(place)
        elif place is not None:
            raise CoordinateError(
                f"an attribution place is an iit.Coordinate, an iit.TransformerCoordinate, a "
                f"module path or None (input embeddings), got {type(place).__name__}"
            )
        self.place = place

    @property
    def is_inputs(self) -> bool:
        """Whether the place is the (float) model inputs themselves."""
        return self.place is None

    @property
    def name(self) -> str:
        """A short description for messages."""
        if self.place is None:
            return _INPUTS
        return self.place.describe()

    def _modules(self) -> dict[str, nn.Module]:
        return dict(self.model.named_modules())  # type: ignore[union-attr]

    def coordinate(self, inputs: Inputs) -> Coordinate:
        """The generic coordinate of the place for a run on ``inputs``.

        Raises:
            CoordinateError: the place is the raw inputs, or does not fit ``inputs``.
        """
        if self.place is None:
            raise CoordinateError("the raw inputs have no coordinate")
        if self._transformer is not None:
            return self._transformer.resolve(self.place, inputs)
        return self.place  # type: ignore[return-value]

    @contextlib.contextmanager
    def hook_points(self) -> Iterator[None]:
        """Make the place's hook point exist (attention probabilities) for the block."""
        if self._transformer is None or self.place.component != "attention_probs":
            yield
            return
        from iit.transformers.attention import attention_probs_hook_points

        with attention_probs_hook_points(self.model, self._transformer.attention_modules()):
            yield

    def float_inputs(self, inputs: Inputs) -> Tensor:
        """The inputs as the attribution place (they must be one float tensor).

        Args:
            inputs: the batch, one float tensor ``[batch, ...]``.

        Returns:
            ``inputs`` itself, ``[batch, ...]``.

        Raises:
            CoordinateError: naming what the inputs are and what to pass instead.
        """
        if not isinstance(inputs, Tensor) or not inputs.is_floating_point():
            kind = f"{inputs.dtype} tensor" if isinstance(inputs, Tensor) else type(inputs).__name__
            raise CoordinateError(
                f"cannot attribute to the raw inputs ({kind}): the model has no "
                "get_input_embeddings(); pass layer=<module path or iit.Coordinate> (e.g. the embedding module)"
            )
        return inputs

    def run(
        self,
        forward: ForwardFn,
        inputs: Inputs,
        *,
        read: bool = False,
        apply: Callable[[Tensor], Tensor] | None = None,
        stop_early: bool = False,
    ) -> tuple[Tensor | None, Any]:
        """One forward of ``forward(inputs)`` with the place read and/or rewritten.

        Args:
            forward: ``inputs -> output``.
            inputs: the batch.
            read: return the value at the place (after ``apply``), detached.
            apply: ``values -> new values`` (shaped like the place) written in the run.
            stop_early: stop the forward once the value is read (no writes; output ``None``).

        Returns:
            ``(value or None, model output or None)``; the value is shaped like the place,
            ``[batch, ...]``.

        Raises:
            HookFiringError: the place's module ran zero or several times.
            CoordinateError: the place does not fit the hidden state.
        """
        coord = self.coordinate(inputs)
        writes = [] if apply is None else [WriteOp(coord, apply, name=self.name)]
        reads = [("value", coord)] if read else []
        with self.hook_points():
            modules = self._modules()
            hooks = HookRun(modules, reads, writes, stop_early=stop_early)
            output = hooks.run(lambda: forward(inputs))
        value = hooks.values.get("value")
        return (value.detach() if value is not None else None), output
