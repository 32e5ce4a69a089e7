"""Attention-based token attributions: attention rollout and layer-wise attention tracing.

Functional cores take stacked attention probabilities ``[layers, batch, heads, seq, seq]``
(row ``i`` = query ``i``); the classes read them from a Hugging Face model of a family in
`iit.transformers.families.FAMILIES` at ``TransformerCoordinate(layer, "attention_probs")``
and return ``[batch, seq]`` token scores for one output position (``[CLS]`` = 0 for encoders,
the last token for decoders).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from iit.attribution.base import Attribution
from iit.attribution.layout import TransformerLayout, collect_places, transformer_layout
from iit.attribution.places import ForwardFn
from iit.attribution.targets import Target
from iit.errors import ArgumentError, CoordinateError, OutOfRangeError
from iit.hooks import Inputs

HeadMode = Literal["per_head", "mean"]

__all__ = [
    "AttentionRollout",
    "AttentionTracing",
    "HeadMode",
    "TokenMethod",
    "attention_rollout",
    "attention_tracing",
    "capture_attentions",
]


def _check_attentions(attentions: Tensor) -> None:
    if attentions.dim() != 5 or attentions.shape[-1] != attentions.shape[-2]:
        raise ArgumentError(
            "attentions must be [layers, batch, heads, seq, seq], got shape "
            f"{tuple(attentions.shape)}"
        )


def attention_rollout(attentions: Tensor, *, residual: bool = True) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020), ``[batch, seq, seq]``.

    Per layer the head mean ``A^l`` (with ``residual``: ``0.5 A^l + 0.5 I``), then
    ``R = Â^L ⋯ Â^2 Â^1`` (later layers multiply from the left). Row ``i`` of ``R`` is how
    much output position ``i`` draws on each input token; rows sum to 1.

    Args:
        attentions: ``[layers, batch, heads, seq, seq]`` probabilities.
        residual: add the identity for the residual connection.

    Returns:
        ``R`` ``[batch, seq, seq]``.

    Raises:
        ArgumentError: wrong shape.

    Examples:
        One layer, one head, two tokens; token 1 attends half to token 0:

        >>> import torch
        >>> from iit.attribution import attention_rollout
        >>> attn = torch.tensor([[1.0, 0.0], [0.5, 0.5]]).reshape(1, 1, 1, 2, 2)
        >>> attention_rollout(attn)
        tensor([[[1.0000, 0.0000],
                 [0.2500, 0.7500]]])
    """
    _check_attentions(attentions)
    mixed = attentions.mean(2)  # [L, B, T, T]
    if residual:
        eye = torch.eye(mixed.shape[-1], dtype=mixed.dtype, device=mixed.device)
        mixed = 0.5 * mixed + 0.5 * eye
    rollout = mixed[0]
    for layer in mixed[1:]:
        rollout = layer @ rollout
    return rollout


def attention_tracing(attentions: Tensor, position: int, *, heads: HeadMode = "per_head") -> Tensor:
    """Layer-wise attention tracing (Wu & Ong 2021), token scores ``[batch, seq]``.

    Start from a one-hot row at ``position`` and push it down the layers,
    ``s ← s · A^l`` for ``l = L..1``. ``heads="per_head"`` reproduces the paper's code: one
    chain per head index (head ``h`` of layer ``l`` feeds head ``h`` of layer ``l-1``), summed
    over heads at the end, no residual term; ``heads="mean"`` chains the head-mean matrices.

    Args:
        attentions: ``[layers, batch, heads, seq, seq]`` probabilities.
        position: the output position traced (negative counts from the end).
        heads: ``"per_head"`` or ``"mean"`` (above).

    Returns:
        Token scores ``[batch, seq]``.

    Raises:
        ArgumentError: wrong shape or unknown head mode.
        OutOfRangeError: ``position`` outside ``[-seq, seq)``.

    Examples:
        >>> import torch
        >>> from iit.attribution import attention_tracing
        >>> attn = torch.tensor([[1.0, 0.0], [0.5, 0.5]]).reshape(1, 1, 1, 2, 2)
        >>> attention_tracing(attn, position=-1)
        tensor([[0.5000, 0.5000]])
    """
    _check_attentions(attentions)
    if heads not in ("per_head", "mean"):
        raise ArgumentError(f"unknown heads mode {heads!r}; valid: ['per_head', 'mean']")
    layers, batch, n_heads, seq, _ = attentions.shape
    if not -seq <= position < seq:
        raise OutOfRangeError(f"position {position} is outside a sequence of {seq} tokens")
    if heads == "mean":
        state = torch.zeros(batch, seq, dtype=attentions.dtype, device=attentions.device)
        state[:, position] = 1.0
        for layer in reversed(range(layers)):
            state = torch.einsum("bq,bqk->bk", state, attentions[layer].mean(1))
        return state
    state = torch.zeros(batch, n_heads, seq, dtype=attentions.dtype, device=attentions.device)
    state[:, :, position] = 1.0
    for layer in reversed(range(layers)):
        state = torch.einsum("bhq,bhqk->bhk", state, attentions[layer])
    return state.sum(1)


def capture_attentions(
    model: nn.Module | TransformerLayout,
    forward: ForwardFn,
    inputs: Inputs,
    *,
    return_output: bool = False,
) -> tuple[Tensor, Any]:
    """Run ``forward(inputs)`` and stack every layer's attention probabilities.

    The probabilities are read at ``TransformerCoordinate(layer, "attention_probs")`` through the
    hook core (grouped-query heads expanded to the query heads). Without ``return_output`` the
    forward stops after the last layer's attention.

    Returns:
        ``(attentions [layers, batch, heads, seq, seq], output or None)``.

    Raises:
        CoordinateError: the model is outside the family table.
        HookFiringError: an attention module did not run exactly once.
    """
    from iit.transformers import TransformerCoordinate

    layout = model if isinstance(model, TransformerLayout) else transformer_layout(model)
    places = {i: TransformerCoordinate(i, "attention_probs") for i in range(layout.n_layers)}
    values, output = collect_places(layout, forward, inputs, places, stop_early=not return_output)
    device = values[0].device  # layers split across devices (accelerate): gather on the first
    return torch.stack([values[i].to(device) for i in range(layout.n_layers)]), output


def default_position(model: Any) -> int:
    """The family's explained position (0 for encoders, -1 for decoders), 0 when unknown."""
    from iit.transformers.families import FAMILIES

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    family = FAMILIES.get(str(model_type))
    return family.explained_position if family is not None else 0


class TokenMethod(Attribution):
    """A method returning token scores ``[batch, seq]`` for one output position.

    Args:
        model: a Hugging Face transformer (``nn.Module`` with a config).
        forward: see `Attribution`.
        position: the output position explained; default the family's (``[CLS]``=0, or the
            last token for GPT-2).

    Raises:
        CoordinateError: ``model`` is not an ``nn.Module``, or its family is outside the
            family table.
    """

    output_kind = "tokens"
    uses_target = False

    def __init__(
        self,
        model: nn.Module | Callable[..., Any],
        *,
        forward: ForwardFn | None = None,
        position: int | None = None,
    ):
        super().__init__(model, forward=forward)
        if not isinstance(model, nn.Module):
            raise CoordinateError(f"{type(self).__name__} needs an nn.Module model")
        self.module: nn.Module = model
        self.layout: TransformerLayout = transformer_layout(model)
        self.position = default_position(model) if position is None else position

    def _row(self, matrices: Tensor) -> Tensor:
        seq = matrices.shape[-1]
        if not -seq <= self.position < seq:
            raise OutOfRangeError(f"position {self.position} is outside a sequence of {seq} tokens")
        return matrices[:, self.position, :]


class AttentionRollout(TokenMethod):
    """Attention rollout row at ``position``: ``[batch, seq]`` (the target is not used).

    Args:
        model: a Hugging Face transformer of a family in `iit.transformers.families.FAMILIES`.
        forward: see `Attribution`.
        position: the output position explained (default: 0 for encoders, the last token for
            decoders).
        residual: add the identity for the residual connection (see `attention_rollout`).

    Raises:
        CoordinateError: ``model`` is not an ``nn.Module``, or its family is outside the
            family table.
    """

    def __init__(
        self,
        model: nn.Module | Callable[..., Any],
        *,
        forward: ForwardFn | None = None,
        position: int | None = None,
        residual: bool = True,
    ):
        super().__init__(model, forward=forward, position=position)
        self.residual = residual

    def matrices(self, inputs: Inputs) -> Tensor:
        """The full rollout ``[batch, seq, seq]``."""
        attentions, _ = capture_attentions(self.layout, self.forward, inputs)
        return attention_rollout(attentions, residual=self.residual)

    def attribute(self, inputs: Inputs, target: Target) -> Tensor:
        """Rollout scores of each input token for the output at ``position``, ``[batch, seq]``.

        Args:
            inputs: the batch (e.g. ``input_ids [batch, seq]`` with an attention mask).
            target: not used (rollout explains a position, not a class).

        Raises:
            CoordinateError: attention cannot be captured.
            HookFiringError: an attention module did not run exactly once.
            OutOfRangeError: ``position`` outside ``[-seq, seq)``.
        """
        return self._row(self.matrices(inputs))


class AttentionTracing(TokenMethod):
    """Layer-wise attention tracing from ``position``: ``[batch, seq]`` (target not used).

    Args:
        model: a Hugging Face transformer of a family in `iit.transformers.families.FAMILIES`.
        forward: see `Attribution`.
        position: the output position explained (default: 0 for encoders, the last token for
            decoders).
        heads: ``"per_head"`` or ``"mean"`` (see `attention_tracing`).

    Raises:
        ArgumentError: an unknown ``heads`` mode.
        CoordinateError: ``model`` is not an ``nn.Module``, or its family is outside the
            family table.
    """

    def __init__(
        self,
        model: nn.Module | Callable[..., Any],
        *,
        forward: ForwardFn | None = None,
        position: int | None = None,
        heads: HeadMode = "per_head",
    ):
        super().__init__(model, forward=forward, position=position)
        if heads not in ("per_head", "mean"):
            raise ArgumentError(f"unknown heads mode {heads!r}; valid: ['per_head', 'mean']")
        self.heads: HeadMode = heads

    def attribute(self, inputs: Inputs, target: Target) -> Tensor:
        """Tracing scores ``[batch, seq]``.

        Args:
            inputs: the batch (e.g. ``input_ids [batch, seq]`` with an attention mask).
            target: not used (tracing explains a position, not a class).

        Raises:
            CoordinateError: attention cannot be captured.
            HookFiringError: an attention module did not run exactly once.
            OutOfRangeError: ``position`` outside ``[-seq, seq)``.
        """
        attentions, _ = capture_attentions(self.layout, self.forward, inputs)
        return attention_tracing(attentions, self.position, heads=self.heads)
