"""The one attribution interface, its gradient core, and named token-level reductions.

Every method is an `Attribution` with one verb, ``attribute(inputs, target)``. Methods
that attribute to a hidden state (gradients, IG, LRP) return a tensor shaped like that place,
e.g. ``[batch, seq, d_model]`` for input embeddings; methods that score tokens directly
(rollout, tracing, ALTI) return ``[batch, seq]``. Differences are capability properties
(``has_convergence_delta``, ``output_kind``, ``uses_target``), never new verbs.

Token scores from place-shaped attributions come from `reduce_tokens`, whose reductions
are named explicitly (the papers disagree: ALTI uses ``l2`` for gradients, ``sum`` for
gradient x input, ...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

import torch
from torch import Tensor, nn

from iit.attribution.places import ForwardFn, Place, PlaceResolver, default_forward
from iit.attribution.targets import Target, target_scores
from iit.errors import ArgumentError, TargetError, unknown_name
from iit.hooks import Inputs, batch_size

Reduction = Literal["sum", "abs_sum", "abs_of_sum", "l2", "mean", "abs_mean", "clip"]
"""How an attribution of shape ``[batch, seq, d]`` is reduced over its last axis to one score per token."""
OutputKind = Literal["place", "tokens"]

__all__ = [
    "Attribution",
    "OutputKind",
    "PlaceAttribution",
    "Reduction",
    "TokenAttribution",
    "gradients_at",
    "reduce_tokens",
    "repeat_target",
]


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ArgumentError(unknown_name(value, valid, name))


def reduce_tokens(attributions: Tensor, reduction: Reduction, *, normalize: bool = False) -> Tensor:
    """Reduce ``[batch, seq, d]`` attributions to token scores ``[batch, seq]``.

    Reductions over the last dim: ``sum`` (Σ_d a, "dot product" for grad x input), ``abs_sum``
    (Σ_d |a|, the L1 norm), ``abs_of_sum`` (|Σ_d a|), ``l2`` (‖a‖₂), ``mean``, ``abs_mean``
    (mean_d |a|), ``clip`` (max(Σ_d a, 0)). ``normalize=True`` divides each row by Σ_t |s_t|
    (rows of zeros stay zero).

    Args:
        attributions: place-shaped attributions ``[batch, seq, d]``.
        reduction: the name of the reduction over ``d`` (above).
        normalize: divide each row by the sum of its absolute scores.

    Returns:
        Token scores ``[batch, seq]``.

    Raises:
        ArgumentError: unknown reduction (with close matches), or input not 3-D.

    Examples:
        >>> import torch
        >>> from iit.attribution import reduce_tokens
        >>> a = torch.tensor([[[3.0, -4.0], [1.0, 1.0]]])
        >>> reduce_tokens(a, "sum")
        tensor([[-1.,  2.]])
        >>> reduce_tokens(a, "l2")
        tensor([[5.0000, 1.4142]])
        >>> reduce_tokens(a, "abs_sum", normalize=True)
        tensor([[0.7778, 0.2222]])
    """
    _check_choice("reduction", reduction, get_args(Reduction))
    if attributions.dim() != 3:
        raise ArgumentError(
            f"reduce_tokens needs [batch, seq, d] attributions, got shape "
            f"{tuple(attributions.shape)}"
        )
    if reduction == "sum":
        scores = attributions.sum(-1)
    elif reduction == "abs_sum":
        scores = attributions.abs().sum(-1)
    elif reduction == "abs_of_sum":
        scores = attributions.sum(-1).abs()
    elif reduction == "l2":
        scores = attributions.norm(dim=-1)
    elif reduction == "mean":
        scores = attributions.mean(-1)
    elif reduction == "abs_mean":
        scores = attributions.abs().mean(-1)
    else:
        scores = attributions.sum(-1).clamp(min=0)
    if normalize:
        total = scores.abs().sum(-1, keepdim=True)
        scores = scores / torch.where(total == 0, torch.ones_like(total), total)
    return scores


def repeat_target(target: Target, times: int) -> Target:
    """Repeat a per-row tensor target for ``times`` stacked copies of the batch.

    Args:
        target: see `iit.attribution.targets`; a ``[batch]`` tensor becomes ``[times * batch]``,
            other targets are returned as they are.
        times: the number of copies.

    Raises:
        RuntimeError: a 0-d tensor target with ``times > 1`` (``torch.cat`` cannot join 0-d
            tensors).
    """
    if isinstance(target, Tensor) and times > 1:
        return torch.cat([target] * times)
    return target


class Attribution(ABC):
    """Base class: a model, a forward, and ``attribute(inputs, target)``.

    Args:
        model: an ``nn.Module`` (or any callable for methods that need no hooks).
        forward: ``inputs -> output``; default ``model(inputs)`` / ``model(**inputs)``. Pass
            e.g. ``lambda x: wrapped.intervene(x, interventions, sources)`` to explain an
            intervened run.

    Attributes:
        has_convergence_delta: ``attribute`` accepts ``return_convergence_delta=True``.
        output_kind: ``"place"`` (shaped like a hidden state, e.g. ``[batch, seq, d_model]``)
            or ``"tokens"`` (``[batch, seq]``).
        uses_target: whether the result depends on ``target``.

    Raises:
        TypeError: instantiating the abstract base class, or a subclass without ``attribute``.
    """

    has_convergence_delta: ClassVar[bool] = False
    output_kind: ClassVar[OutputKind] = "place"
    uses_target: ClassVar[bool] = True

    def __init__(self, model: nn.Module | Callable[..., Any], *, forward: ForwardFn | None = None):
        self.model = model
        self.forward: ForwardFn = forward if forward is not None else default_forward(model)

    @abstractmethod
    def attribute(self, inputs: Inputs, target: Target) -> Tensor:
        """Attribute ``target`` (see `iit.attribution.targets`) for a batch of inputs.

        Args:
            inputs: the batch (one tensor, e.g. ``input_ids [batch, seq]``, or keyword inputs).
            target: an int class, a ``[batch]`` tensor of classes, or a callable
                ``output -> [batch]`` scores.

        Returns:
            ``[batch, ...]`` shaped like the place (``output_kind == "place"``) or token scores
            ``[batch, seq]`` (``output_kind == "tokens"``).
        """


class PlaceAttribution(Attribution):
    """An attribution onto a hidden state: input embeddings by default, or any place.

    Args:
        model: the model.
        layer: the place (see `iit.attribution.places`): an `iit.Coordinate` (with
            any index: the result is shaped like the indexed values), an
            `iit.TransformerCoordinate`, a module path, or ``None`` = input embeddings
            (``model.get_input_embeddings()``) or, failing that, float inputs themselves.
        layer_input: for a module path, attribute to the module's first input.
        forward: see `Attribution`.

    Raises:
        CoordinateError: unknown ``layer`` (with close matches).
    """

    def __init__(
        self,
        model: nn.Module | Callable[..., Any],
        *,
        layer: Place = None,
        layer_input: bool = False,
        forward: ForwardFn | None = None,
    ):
        super().__init__(model, forward=forward)
        self.ref: PlaceResolver = PlaceResolver(model, layer, layer_input=layer_input)


def place_value(ref: PlaceResolver, forward: ForwardFn, inputs: Inputs) -> tuple[Tensor, Any]:
    """The values at ``ref`` for ``inputs`` and the model output (no gradients)."""
    if ref.is_inputs:
        x = ref.float_inputs(inputs)
        with torch.no_grad():
            return x.detach(), forward(x)
    with torch.no_grad():
        value, out = ref.run(forward, inputs, read=True)
    assert value is not None
    return value, out


def place_tensor(ref: PlaceResolver, forward: ForwardFn, inputs: Inputs) -> Tensor:
    """The values at ``ref`` for ``inputs`` (detached), running the forward only up to it.

    Raises:
        HookFiringError: the place never ran. CoordinateError: the place does not fit.
    """
    if ref.is_inputs:
        return ref.float_inputs(inputs).detach()
    with torch.no_grad():
        value, _ = ref.run(forward, inputs, read=True, stop_early=True)
    assert value is not None
    return value


def run_with_value(ref: PlaceResolver, forward: ForwardFn, inputs: Inputs, value: Tensor) -> Any:
    """Run ``forward(inputs)`` with the values at ``ref`` replaced by ``value`` (no gradients)."""
    with torch.no_grad():
        if ref.is_inputs:
            return forward(value)
        return ref.run(forward, inputs, apply=lambda t: value.to(t.dtype))[1]


def _rows(ref: PlaceResolver, inputs: Inputs) -> int:
    n = ref.float_inputs(inputs).shape[0] if ref.is_inputs else batch_size(inputs)
    if n is None:
        raise TargetError("the inputs have no batch dimension (no tensor with a dim 0)")
    return n


def gradients_at(
    ref: PlaceResolver,
    forward: ForwardFn,
    inputs: Inputs,
    target: Target,
    *,
    value: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradient of the target scores with respect to the values at ``ref``.

    Args:
        ref: where to differentiate (a resolved place, or the float inputs).
        forward: ``inputs -> output``.
        inputs: the batch; for the raw-inputs place a float tensor.
        target: see `iit.attribution.targets`.
        value: optional replacement for the values at ``ref`` (same shape), e.g. IG's
            interpolated points; default the values the forward computes.

    Returns:
        ``(x, grad, scores)``: the values at ``ref`` (``[batch, ...]``), ``∂ Σ scores / ∂x``
        (same shape) and the target scores ``[batch]``.

    Raises:
        TargetError: the target does not give one score per row, or the inputs have no batch axis.
        CoordinateError: the place does not fit.
        HookFiringError: the place did not run exactly once.
    """
    n = _rows(ref, inputs)
    with torch.enable_grad():
        if ref.is_inputs:
            leaf = (value if value is not None else inputs).detach().requires_grad_(True)
            out = forward(leaf)
        else:
            holder: list[Tensor] = []

            def make_leaf(t: Tensor) -> Tensor:
                src = value.to(t.dtype) if value is not None else t
                holder.append(src.detach().requires_grad_(True))
                return holder[0]

            _, out = ref.run(forward, inputs, apply=make_leaf)
            leaf = holder[0]
        scores = target_scores(out, target)
        if scores.shape != (n,):
            raise TargetError(
                f"the target gives scores of shape {tuple(scores.shape)}, expected ({n},) "
                "(one per input row)"
            )
        (grad,) = torch.autograd.grad(scores.sum(), leaf, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(leaf)
    return leaf.detach(), grad, scores.detach()


@dataclass(frozen=True)
class TokenAttribution:
    """A method plus an explicit token reduction: ``(inputs, target) -> [batch, seq]``.

    For token-level methods (``output_kind == "tokens"``) ``reduction`` must be ``None``.

    Attributes:
        method: the attribution method.
        reduction: the `reduce_tokens` reduction of a place method's ``[batch, seq, d]``
            result (``None`` for token methods).
        normalize: divide each row by the sum of its absolute scores.

    Raises:
        ArgumentError: a reduction is missing for a place method, or given for a token method.
    """

    method: Attribution
    reduction: Reduction | None = None
    normalize: bool = False

    def __post_init__(self) -> None:
        if self.method.output_kind == "place" and self.reduction is None:
            raise ArgumentError(
                f"{type(self.method).__name__} returns [batch, seq, d]; pass a reduction, one of "
                f"{list(get_args(Reduction))}"
            )
        if self.method.output_kind == "tokens" and self.reduction is not None:
            raise ArgumentError(
                f"{type(self.method).__name__} already returns token scores; use reduction=None"
            )

    def __call__(self, inputs: Inputs, target: Target) -> Tensor:
        """Token scores ``[batch, seq]``.

        Args:
            inputs: the batch (e.g. ``input_ids [batch, seq]``).
            target: see `iit.attribution.targets`.
        """
        scores = self.method.attribute(inputs, target)
        if self.reduction is not None:
            return reduce_tokens(scores, self.reduction, normalize=self.normalize)
        if self.normalize:
            total = scores.abs().sum(-1, keepdim=True)
            return scores / torch.where(total == 0, torch.ones_like(total), total)
        return scores
