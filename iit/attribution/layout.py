"""A Hugging Face transformer seen through the one family table, and batched reads of places.

Attention methods (rollout, tracing, ALTI) and LRP's transformer rules find blocks, norms,
projections and attention probabilities through `iit.transformers.families` (the table
interventions use; there is no second one) and read them with `collect_places`: one
forward, every place read through `iit.hooks.HookRun`, attention probabilities through
the hook points of `iit.transformers.attention`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from iit.attribution.places import ForwardFn
from iit.coordinates import Coordinate
from iit.errors import CoordinateError
from iit.hooks import HookRun, Inputs, find_module

__all__ = ["TransformerLayout", "collect_places", "transformer_layout"]


@dataclass(frozen=True)
class TransformerLayout:
    """A model's family entry, sizes and an interventionable view for resolving coordinates.

    Attributes:
        model: the Hugging Face model.
        wrapped: a `iit.TransformerInterventionable` of it (resolves coordinates).
        family: its `iit.transformers.families.Family`.
        shape: its `iit.transformers.families.ModelShape`.

    Raises:
        TypeError: a missing or unknown field (dataclass construction); build layouts with
            `transformer_layout`.
    """

    model: nn.Module
    wrapped: Any
    family: Any
    shape: Any

    @property
    def n_layers(self) -> int:
        """Number of blocks."""
        return int(self.shape.n_layers)

    @property
    def parallel(self) -> bool:
        """Whether attention and MLP read the same block input (GPT-NeoX parallel residual)."""
        attr = self.family.parallel_attr
        return bool(attr and getattr(self.model.config, attr, False))

    def path(self, layer: int, relative: str) -> str:
        """Module path of ``relative`` (a family path) inside block ``layer``."""
        block = f"{self.shape.prefix}{self.family.layers}.{layer}"
        return f"{block}.{relative}" if relative else block

    def module(self, layer: int, relative: str) -> nn.Module:
        """The module at ``relative`` inside block ``layer``.

        Raises:
            CoordinateError: the family table does not fit the model (nearest names listed).
        """
        return find_module(dict(self.model.named_modules()), self.path(layer, relative))

    def out_proj(self, layer: int) -> nn.Module:
        """The attention output projection of block ``layer`` (``nn.Linear`` or HF ``Conv1D``)."""
        return self.module(layer, self.family.sites["head_attention_output"].path)

    @contextlib.contextmanager
    def attention_hook_points(self) -> Iterator[None]:
        """Make ``<attention module>.iit_attention_probs`` exist for the block (see
        `iit.transformers.attention.attention_probs_hook_points`)."""
        from iit.transformers.attention import attention_probs_hook_points

        with attention_probs_hook_points(self.model, self.wrapped.attention_modules()):
            yield


def transformer_layout(model: nn.Module) -> TransformerLayout:
    """The layout of a Hugging Face transformer from ``config.model_type``.

    Raises:
        CoordinateError: no config, or a model type outside the family table (lists the
            supported ones; add a Family to `iit.transformers.families.FAMILIES`).
    """
    if not isinstance(model, nn.Module):
        raise CoordinateError(f"a transformer layout needs an nn.Module, got {type(model).__name__}")
    from iit.transformers import TransformerInterventionable

    wrapped = TransformerInterventionable(model)
    return TransformerLayout(model, wrapped, wrapped.family, wrapped.shape)


def collect_places(
    layout: TransformerLayout,
    forward: ForwardFn,
    inputs: Inputs,
    places: Mapping[Hashable, Any],
    *,
    stop_early: bool = True,
) -> tuple[dict[Hashable, Tensor], Any]:
    """Read several places in one forward of ``forward(inputs)`` (no gradients, detached).

    Args:
        layout: the model's layout.
        forward: ``inputs -> output``.
        inputs: the batch (e.g. ``input_ids [batch, seq]``).
        places: key -> `iit.Coordinate` or `iit.TransformerCoordinate`.
        stop_early: stop the forward once every place is read (the output is then ``None``).

    Returns:
        ``(key -> values, model output or None)``; each value ``[batch, ...]`` as read at its
        place (e.g. ``[batch, heads, seq, seq]`` for ``attention_probs``).

    Raises:
        CoordinateError: a place that does not fit.
        HookFiringError: a module that ran zero or several times.
    """
    resolved = [
        (key, place if isinstance(place, Coordinate) else layout.wrapped.resolve(place, inputs))
        for key, place in places.items()
    ]
    needs_probs = any(getattr(p, "component", None) == "attention_probs" for p in places.values())
    hook_points = layout.attention_hook_points() if needs_probs else contextlib.nullcontext()
    with hook_points, torch.no_grad():
        hooks = HookRun(dict(layout.model.named_modules()), resolved, [], stop_early=stop_early)
        output = hooks.run(lambda: forward(inputs))
    return {k: v.detach() for k, v in hooks.values.items()}, output
