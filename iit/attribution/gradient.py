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

        Raises:
            TargetError, CoordinateError, HookFiringError: see `gradients_at`.
        """
        _, grad, _ = gradients_at(self.ref, self.forward, inputs, target)
        return grad.abs() if self.abs else grad


class InputXGradient(PlaceAttribution):
    """Gradient x input ``x ⊙ ∂f_c/∂x`` at the place, ``[batch, ...]``."""

    def attribute(self, inputs: Inputs, target: Target) -> Tensor:
        """Gradient times activation at the place, ``[batch, ...]``.

        Raises:
            TargetError, CoordinateError, HookFiringError: see `gradients_at`.
        """
        x, grad, _ = gradients_at(self.ref, self.forward, inputs, target)
        return x * grad


class IntegratedGradients(PlaceAttribution):
    """Integrated gradients (Sundararajan et al. 2017) at the place, captum semantics.

    ``IG(x) = (x - x') ⊙ Σ_k w_k ∂f_c/∂x (x' + α_k (x - x'))`` with the quadrature of
    `quadrature`. On a module, the module's output is replaced
    by the interpolated points (captum's ``LayerIntegratedGradients``).

    Args:
        model, layer, layer_input, forward: see `PlaceAttribution`.
        n_steps: number of quadrature nodes.
        method: quadrature rule; ``gausslegendre`` (default), captum's Riemann rules
            (``riemann_trapezoid`` with captum's weights), or exact ``trapezoid``.
        internal_batch_size: most rows per forward (steps are batched in chunks of
            ``max(1, internal_batch_size // batch)``); ``None`` runs all steps in one forward.

    Raises:
        ValueError: bad method / n_steps / internal_batch_size.
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
            inputs: the batch.
            target: see `iit.attribution.targets`.
            baselines: the baseline ``x'`` at the place (tensor of the place's shape, or a
                scalar fill value); default zeros.
            baseline_inputs: alternatively, inputs whose activation at the place is ``x'``
                (e.g. ``[CLS] [MASK]... [SEP]`` token ids).
            return_convergence_delta: also return ``Σ IG - (f(x) - f(x'))`` per row.

        Raises:
            CoordinateError: baseline shape differs from the place's shape.
            ValueError: both ``baselines`` and ``baseline_inputs`` given.
            TargetError, HookFiringError: see `gradients_at`.
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
