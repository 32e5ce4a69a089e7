"""Gradient family: gradient sensitivity, gradient x input, integrated gradients.

All attribute to a place (input embeddings by default, or any module output/input) and return
a tensor shaped like it, e.g. ``[batch, seq, d_model]``. Reduce to tokens with
`iit.attribution.reduce_tokens` (``l2`` for gradients, ``sum`` for grad x input, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, overload

import torch
from torch import Tensor, nn

from iit.attribution.base import (
    PlaceAttribution,
    _rows,
    gradients_at,
    place_tensor,
    place_value,
    repeat_target,
    run_with_value,
)
from iit.attribution.places import ForwardFn, Place, repeat_inputs
from iit.attribution.quadrature import QuadratureMethod, quadrature
from iit.attribution.targets import Target, target_scores
from iit.errors import ArgumentError, CoordinateError
from iit.hooks import Inputs

__all__ = ["InputXGradient", "IntegratedGradients", "Saliency"]


class Saliency(PlaceAttribution):
    """Gradient sensitivity ``∂f_c/∂x`` (``abs=True``: its absolute value, captum's default).

    Returns ``[batch, ...]`` shaped like the attribution place. Token norms (L2, L1, ...) are
    `reduce_tokens` reductions.

    Args:
        model: the model (see `PlaceAttribution`).
        layer: the place (see `PlaceAttribution`; default: input embeddings or float inputs).
        layer_input: for a module path, attribute to the module's first input.
        forward: see `Attribution`.
        abs: return ``|∂f_c/∂x|`` instead of the signed gradient.

    Raises:
        CoordinateError: unknown ``layer`` (with close matches).

    Examples:
        On a linear model ``f(x) = w · x`` the gradient is ``w``:

        >>> import torch
        >>> from iit.attribution import Saliency
        >>> model = torch.nn.Linear(3, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[1.0, -2.0, 3.0]]))
        >>> x = torch.tensor([[2.0, 1.0, 1.0]])
        >>> Saliency(model, abs=False).attribute(x, target=0)
        tensor([[ 1., -2.,  3.]])
        >>> Saliency(model).attribute(x, target=0)
        tensor([[1., 2., 3.]])
    """

    def __init__(
        self,
        model: nn.Module | Callable[..., Any],
        *,
        layer: Place = None,
        layer_input: bool = False,
        forward: ForwardFn | None = None,
        abs: bool = True,
    ):
        super().__init__(model, layer=layer, layer_input=layer_input, forward=forward)
        self.abs = abs

    def attribute(self, inputs: Inputs, target: Target) -> Tensor:
        """Gradient of the target at the place, ``[batch, ...]``.

        Args:
            inputs: the batch (e.g. ``input_ids [batch, seq]``, or a float tensor ``[batch, ...]``).
            target: see `iit.attribution.targets`.

        Raises:
            TargetError: the target does not give one score per row.
            CoordinateError: the place does not fit.
            HookFiringError: the place did not run exactly once.
        """
        _, grad, _ = gradients_at(self.ref, self.forward, inputs, target)
        return grad.abs() if self.abs else grad


class InputXGradient(PlaceAttribution):
    """Gradient x input ``x ⊙ ∂f_c/∂x`` at the place, ``[batch, ...]``.

    Args:
        model: the model (see `PlaceAttribution`).
        layer: the place (see `PlaceAttribution`; default: input embeddings or float inputs).
        layer_input: for a module path, attribute to the module's first input.
        forward: see `Attribution`.

    Raises:
        CoordinateError: unknown ``layer`` (with close matches).

    Examples:
        On a linear model ``f(x) = w · x`` the attribution is ``w ⊙ x`` (summing to ``f(x)``):

        >>> import torch
        >>> from iit.attribution import InputXGradient
        >>> model = torch.nn.Linear(3, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[1.0, -2.0, 3.0]]))
        >>> InputXGradient(model).attribute(torch.tensor([[2.0, 1.0, 1.0]]), target=0)
        tensor([[ 2., -2.,  3.]])
    """

    def attribute(self, inputs: Inputs, target: Target) -> Tensor:
        """Gradient times activation at the place, ``[batch, ...]``.

        Args:
            inputs: the batch (e.g. ``input_ids [batch, seq]``, or a float tensor ``[batch, ...]``).
            target: see `iit.attribution.targets`.

        Raises:
            TargetError: the target does not give one score per row.
            CoordinateError: the place does not fit.
            HookFiringError: the place did not run exactly once.
        """
        x, grad, _ = gradients_at(self.ref, self.forward, inputs, target)
        return x * grad


class IntegratedGradients(PlaceAttribution):
    """Integrated gradients (Sundararajan et al. 2017) at the place, captum semantics.

    ``IG(x) = (x - x') ⊙ Σ_k w_k ∂f_c/∂x (x' + α_k (x - x'))`` with the quadrature of
    `quadrature`. On a module, the module's output is replaced
    by the interpolated points (captum's ``LayerIntegratedGradients``).

    Args:
        model: the model (see `PlaceAttribution`).
        layer: the place (see `PlaceAttribution`; default: input embeddings or float inputs).
        layer_input: for a module path, attribute to the module's first input.
        forward: see `Attribution`.
        n_steps: number of quadrature nodes.
        method: quadrature rule; ``gausslegendre`` (default), captum's Riemann rules
            (``riemann_trapezoid`` with captum's weights), or exact ``trapezoid``.
        internal_batch_size: most rows per forward (steps are batched in chunks of
            ``max(1, internal_batch_size // batch)``); ``None`` runs all steps in one forward.

    Raises:
        ArgumentError: an unknown method (with close matches), too few ``n_steps`` for the
            method, or ``internal_batch_size < 1``.
        CoordinateError: unknown ``layer`` (with close matches).

    Examples:
        For ``f(x) = Σ_i x_i²`` and the zero baseline, ``IG(x)_i = x_i²`` exactly (the
        Gauss-Legendre rule integrates the linear gradient path exactly), and the
        completeness gap ``Σ IG - (f(x) - f(0))`` is 0:

        >>> import torch
        >>> from iit.attribution import IntegratedGradients
        >>> class SumOfSquares(torch.nn.Module):
        ...     def forward(self, x):
        ...         return (x ** 2).sum(-1, keepdim=True)
        >>> ig = IntegratedGradients(SumOfSquares(), n_steps=4)
        >>> ig.attribute(torch.tensor([[2.0, 1.0, -3.0]]), target=0, return_convergence_delta=True)
        (tensor([[4., 1., 9.]]), tensor([0.]))
    """

    has_convergence_delta = True

    def __init__(
        self,
        model: nn.Module | Callable[..., Any],
        *,
        layer: Place = None,
        layer_input: bool = False,
        forward: ForwardFn | None = None,
        n_steps: int = 50,
        method: QuadratureMethod = "gausslegendre",
        internal_batch_size: int | None = None,
    ):
        super().__init__(model, layer=layer, layer_input=layer_input, forward=forward)
        quadrature(method, n_steps)  # validates method and n_steps
        if internal_batch_size is not None and internal_batch_size < 1:
            raise ArgumentError(f"internal_batch_size must be >= 1 or None, got {internal_batch_size}")
        self.n_steps = n_steps
        self.method: QuadratureMethod = method
        self.internal_batch_size = internal_batch_size

    def _baseline(
        self, x: Tensor, baselines: Tensor | float | None, baseline_inputs: Inputs | None
    ) -> Tensor:
        if baselines is not None and baseline_inputs is not None:
            raise ArgumentError("pass at most one of baselines and baseline_inputs")
        if baseline_inputs is not None:
            base = place_tensor(self.ref, self.forward, baseline_inputs)
        elif baselines is None:
            base = torch.zeros_like(x)
        elif isinstance(baselines, (int, float)):
            base = torch.full_like(x, float(baselines))
        else:
            base = baselines.to(x.device, x.dtype)
        if base.shape != x.shape:
            raise CoordinateError(
                f"IG baseline at {self.ref.name!r} has shape {tuple(base.shape)}, expected "
                f"{tuple(x.shape)} (the shape of the attribution place; no broadcasting)"
            )
        return base

    @overload
    def attribute(
        self,
        inputs: Inputs,
        target: Target,
        *,
        baselines: Tensor | float | None = None,
        baseline_inputs: Inputs | None = None,
        return_convergence_delta: Literal[False] = False,
    ) -> Tensor: ...

    @overload
    def attribute(
        self,
        inputs: Inputs,
        target: Target,
        *,
        baselines: Tensor | float | None = None,
        baseline_inputs: Inputs | None = None,
        return_convergence_delta: Literal[True],
    ) -> tuple[Tensor, Tensor]: ...

    def attribute(
        self,
        inputs: Inputs,
        target: Target,
        *,
        baselines: Tensor | float | None = None,
        baseline_inputs: Inputs | None = None,
        return_convergence_delta: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Integrated gradients ``[batch, ...]`` (and the completeness gap ``[batch]``).

        Args:
            inputs: the batch (e.g. ``input_ids [batch, seq]``, or a float tensor ``[batch, ...]``).
            target: see `iit.attribution.targets`.
            baselines: the baseline ``x'`` at the place (tensor of the place's shape, or a
                scalar fill value); default zeros.
            baseline_inputs: alternatively, inputs whose activation at the place is ``x'``
                (e.g. ``[CLS] [MASK]... [SEP]`` token ids).
            return_convergence_delta: also return ``Σ IG - (f(x) - f(x'))`` per row.

        Returns:
            The attributions, shaped like the place (``[batch, ...]``); with
            ``return_convergence_delta`` also the gap per row ``[batch]``.

        Raises:
            CoordinateError: baseline shape differs from the place's shape.
            ArgumentError: both ``baselines`` and ``baseline_inputs`` given.
            TargetError: the target does not give one score per row.
            HookFiringError: the place did not run exactly once.
        """
        # f(x) is needed only for the gap; otherwise stop the forward at the place.
        if return_convergence_delta:
            x, out = place_value(self.ref, self.forward, inputs)
        else:
            x = place_tensor(self.ref, self.forward, inputs)
        base = self._baseline(x, baselines, baseline_inputs)
        alphas, weights = quadrature(self.method, self.n_steps, dtype=x.dtype)
        rows = _rows(self.ref, inputs)
        per_chunk = (
            self.n_steps
            if self.internal_batch_size is None
            else max(1, self.internal_batch_size // rows)
        )
        total = torch.zeros_like(x)
        diff = x - base
        view = (-1,) + (1,) * x.dim()
        for start in range(0, self.n_steps, per_chunk):
            a = alphas[start : start + per_chunk].to(x.device)
            k = a.shape[0]
            points = (base.unsqueeze(0) + a.view(view) * diff.unsqueeze(0)).flatten(0, 1)
            chunk_inputs = points if self.ref.is_inputs else repeat_inputs(inputs, k)
            _, grad, _ = gradients_at(
                self.ref, self.forward, chunk_inputs, repeat_target(target, k), value=points
            )
            w = weights[start : start + k].to(x.device).view(view)
            total = total + (grad.view(k, *x.shape) * w).sum(0)
        attributions = total * diff
        if not return_convergence_delta:
            return attributions
        with torch.no_grad():
            f_x = target_scores(out, target)
            f_base = target_scores(run_with_value(self.ref, self.forward, inputs, base), target)
        delta = attributions.flatten(1).sum(1) - (f_x - f_base)
        return attributions, delta
