"""Layer-wise relevance propagation as modified gradients, with transformer rules.

Relevance at a tensor ``t`` is ``t ⊙ g`` where ``g`` is a *modified* gradient of the target
score. Forward hooks leave every forward value unchanged but reroute the backward pass:

* linear layers (``nn.Linear``, HF ``Conv1D``) follow a `Rule`:
  ``R_j = a_j Σ_k w'_jk R_k / (z'_k + ε·sign(z'_k))`` with ``z' = a W' + b'`` (captum's
  semantics: ``W'`` from `Rule.weight`, the bias kept unless ``zero_bias``);
* element-wise activations (GELU, tanh, sigmoid, SiLU, ...) pass relevance through unchanged
  (identity rule; ReLU's own gradient already does);
* ``nn.LayerNorm`` treats its normaliser σ as a constant (Ali et al. 2022 LN-rule), and RMSNorm
  its ``1/rms`` likewise;
* attention treats its probabilities as constants (AH-rule), read at the attention hook points
  of `iit.transformers.attention` for every family of the table;
* a gated MLP (``down(act(gate(x)) * up(x))``: Llama, Qwen2, Mistral) treats the gate
  ``act(gate(x))`` as a constant, so the product is linear in ``up(x)`` and relevance is
  conserved.

With ε = 0 and all biases zero the network becomes linear in the attributed tensor given the
frozen factors, so relevance is conserved: ``Σ R = f_c``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any, Literal, overload

import torch
from torch import Tensor, nn

from iit.attribution.base import PlaceAttribution, gradients_at
from iit.attribution.places import ForwardFn, Place
from iit.attribution.targets import Target
from iit.errors import ArgumentError, CoordinateError
from iit.hooks import Inputs, find_module
from iit.placement import materialized
from iit.precision import upcast

__all__ = ["LRP", "EpsilonRule", "GammaRule", "Rule", "ZPlusRule", "lrp_rules"]


def _stabilize(z: Tensor, epsilon: float) -> Tensor:
    sign = torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))
    return z + epsilon * sign


class Rule:
    """An LRP rule for linear layers; subclasses override `weight`.

    Args:
        epsilon: stabiliser added to the denominator ``z'`` with its sign (0 maps to +).
        zero_bias: use ``b' = 0`` in ``z'`` (captum's ``set_bias_to_zero``).

    Raises:
        ArgumentError: ``epsilon < 0``.
    """

    def __init__(self, epsilon: float = 1e-9, zero_bias: bool = False):
        if epsilon < 0:
            raise ArgumentError(f"epsilon must be >= 0, got {epsilon}")
        self.epsilon = epsilon
        self.zero_bias = zero_bias

    def weight(self, weight: Tensor) -> Tensor:
        """The weights ``W'`` used to distribute relevance (default: unchanged).

        Args:
            weight: a linear layer's weight, in any layout (``[out, in]`` for ``nn.Linear``,
                ``[in, out]`` for Hugging Face ``Conv1D``); rules act elementwise.

        Returns:
            ``W'``, shaped like ``weight``.
        """
        return weight

    def __repr__(self) -> str:
        return f"{type(self).__name__}(epsilon={self.epsilon}, zero_bias={self.zero_bias})"


class EpsilonRule(Rule):
    """ε-rule: ``W' = W``; ε = 0 gives LRP-0 (= gradient x input on ReLU nets).

    Args:
        epsilon: stabiliser added to the denominator ``z'`` with its sign (0 maps to +).
        zero_bias: use ``b' = 0`` in ``z'`` (captum's ``set_bias_to_zero``).

    Raises:
        ArgumentError: ``epsilon < 0``.
    """


class GammaRule(Rule):
    """γ-rule: ``W' = W + γ W⁺`` (favours positive contributions).

    Args:
        gamma: weight ``γ`` of the positive part.
        epsilon: stabiliser added to the denominator ``z'`` with its sign (0 maps to +).
        zero_bias: use ``b' = 0`` in ``z'`` (captum's ``set_bias_to_zero``).

    Raises:
        ArgumentError: ``gamma < 0`` or ``epsilon < 0``.

    Examples:
        >>> import torch
        >>> from iit.attribution import GammaRule
        >>> GammaRule(gamma=0.5).weight(torch.tensor([[2.0, -1.0]]))
        tensor([[ 3., -1.]])
    """

    def __init__(self, gamma: float = 0.25, epsilon: float = 1e-9, zero_bias: bool = False):
        super().__init__(epsilon, zero_bias)
        if gamma < 0:
            raise ArgumentError(f"gamma must be >= 0, got {gamma}")
        self.gamma = gamma

    def weight(self, weight: Tensor) -> Tensor:
        """``W + γ W⁺``, shaped like ``weight`` (any layout, e.g. ``[out, in]``).

        Args:
            weight: a linear layer's weight.
        """
        return weight + self.gamma * weight.clamp(min=0)


class ZPlusRule(Rule):
    """z⁺-rule (α1β0, deep Taylor for inputs ≥ 0): ``W' = W⁺``.

    Args:
        epsilon: stabiliser added to the denominator ``z'`` with its sign (0 maps to +).
        zero_bias: use ``b' = 0`` in ``z'`` (captum's ``set_bias_to_zero``).

    Raises:
        ArgumentError: ``epsilon < 0``.
    """

    def weight(self, weight: Tensor) -> Tensor:
        """``W⁺ = max(W, 0)``, shaped like ``weight`` (any layout, e.g. ``[out, in]``).

        Args:
            weight: a linear layer's weight.
        """
        return weight.clamp(min=0)


def _conv1d_type() -> type | None:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover
        return None
    return Conv1D


def _activation_types() -> tuple[type, ...]:
    types: list[type] = [nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.Softplus, nn.ELU, nn.LeakyReLU]
    try:
        from transformers import activations
    except ImportError:  # pragma: no cover
        return tuple(types)
    for name in dir(activations):
        obj = getattr(activations, name)
        if isinstance(obj, type) and issubclass(obj, nn.Module) and obj is not nn.Module:
            types.append(obj)
    return tuple(types)


_PASSIVE = (nn.ReLU, nn.Dropout, nn.Identity, nn.Embedding, nn.Flatten)


def _linear_hook(rule: Rule, conv1d: bool) -> Callable[[nn.Module, Any, Tensor], Tensor]:
    def hook(module: nn.Module, args: Any, out: Tensor) -> Tensor:
        with materialized(module):  # accelerate-offloaded weights are meta outside forward
            a = args[0].to(out.device)
            weight = rule.weight(module.weight)
            bias = module.bias
            if bias is not None and rule.zero_bias:
                bias = torch.zeros_like(bias)
            if weight is module.weight and bias is module.bias:
                z = out
            elif conv1d:
                z = a @ weight + (bias if bias is not None else 0.0)
            else:
                z = nn.functional.linear(a, weight, bias)
        ratio = (out / _stabilize(z, rule.epsilon)).detach()
        return z * ratio + (out - z * ratio).detach()

    return hook


def _activation_hook(module: nn.Module, args: Any, out: Tensor) -> Tensor:
    x = args[0]
    ratio = (out / _stabilize(x, 1e-12)).detach()
    return x * ratio + (out - x * ratio).detach()


def _layernorm_hook(module: nn.LayerNorm, args: Any, out: Tensor) -> Tensor:
    x = args[0].to(out.device)
    dims = tuple(range(-len(module.normalized_shape), 0))
    mean = x.mean(dims, keepdim=True)
    sigma = torch.sqrt(x.var(dims, unbiased=False, keepdim=True) + module.eps).detach()
    y = (x - mean) / sigma
    with materialized(module):  # accelerate-offloaded weights are meta outside forward
        if module.weight is not None:
            y = y * module.weight
        if module.bias is not None:
            y = y + module.bias
    return y + (out - y).detach()


def _is_rmsnorm(module: nn.Module) -> bool:
    """Llama-style RMSNorm (``weight * x / rms(x)``; Llama, Qwen2, Mistral, ...)."""
    return type(module).__name__.endswith("RMSNorm") and isinstance(
        getattr(module, "weight", None), Tensor
    )


def _rmsnorm_hook(module: nn.Module, args: Any, out: Tensor) -> Tensor:
    """RMSNorm with its normaliser ``1/rms(x)`` as a constant (the LN-rule without centring)."""
    x = args[0] if args else None
    if not isinstance(x, Tensor):
        return out
    x = x.to(out.device)
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6))
    scale = torch.rsqrt(upcast(x).pow(2).mean(-1, keepdim=True) + eps).to(x.dtype).detach()
    with materialized(module):  # accelerate-offloaded weights are meta outside forward
        y = (x * scale * module.weight).to(out.dtype)
    return y + (out - y).detach()


def _constant_hook(module: nn.Module, args: Any, out: Tensor) -> Tensor:
    """The output as a constant: a gate (``act(gate(x))`` of a gated MLP) or attention
    probabilities (AH-rule) pass relevance through the other factor only."""
    return out.detach()


def _transformer_layout_or_none(model: nn.Module) -> Any:
    """The layout when ``model`` is in the family table; ``None`` for models without a Hugging
    Face config. Raises CoordinateError for a config of a family outside the table."""
    if getattr(getattr(model, "config", None), "model_type", None) is None:
        return None
    from iit.attribution.layout import transformer_layout

    return transformer_layout(model)


@contextmanager
def lrp_rules(
    model: nn.Module,
    *,
    default_rule: Rule | None = None,
    rules: Mapping[str, Rule] | None = None,
    transformer_rules: bool = True,
) -> Iterator[None]:
    """Install LRP rules on ``model`` for the block; all hooks are removed in ``finally``.

    Args:
        model: the model.
        default_rule: rule for every linear layer (default ``EpsilonRule()``).
        rules: per-module overrides, keyed by path in ``model.named_modules()``.
        transformer_rules: detach LayerNorm normalisers and (for HF models) attention probs.

    Raises:
        CoordinateError: a ``rules`` key names no module or no linear layer; a module with
            parameters has no rule (lists the supported types).
    """
    default_rule = default_rule if default_rule is not None else EpsilonRule()
    rules = dict(rules or {})
    conv1d = _conv1d_type()
    linear_types: tuple[type, ...] = (nn.Linear,) + ((conv1d,) if conv1d else ())
    activations = _activation_types()
    for path in rules:
        if not isinstance(find_module(dict(model.named_modules()), path), linear_types):
            raise CoordinateError(f"rules[{path!r}] must name a linear layer (nn.Linear/Conv1D)")
    layout = _transformer_layout_or_none(model) if transformer_rules else None
    gates: set[int] = set()
    if layout is not None and layout.family.gate_activation:
        gates = {id(layout.module(i, layout.family.gate_activation)) for i in range(layout.n_layers)}
    plan: list[tuple[nn.Module, Callable[..., Any]]] = []
    for name, module in model.named_modules():
        if id(module) in gates:
            plan.append((module, _constant_hook))
        elif isinstance(module, linear_types):
            rule = rules.get(name, default_rule)
            plan.append(
                (module, _linear_hook(rule, conv1d is not None and isinstance(module, conv1d)))
            )
        elif isinstance(module, nn.LayerNorm):
            if transformer_rules:
                plan.append((module, _layernorm_hook))
        elif _is_rmsnorm(module):
            if transformer_rules:
                plan.append((module, _rmsnorm_hook))
        elif isinstance(module, activations) and not isinstance(module, nn.ReLU):
            plan.append((module, _activation_hook))
        elif list(module.parameters(recurse=False)) and not isinstance(module, _PASSIVE):
            raise CoordinateError(
                f"LRP has no rule for module {name!r} of type {type(module).__name__}; supported "
                "parametrised modules: nn.Linear, transformers Conv1D, nn.LayerNorm, RMSNorm, "
                "nn.Embedding"
            )
    with ExitStack() as stack:
        for module, hook in plan:
            stack.callback(module.register_forward_hook(hook).remove)
        if layout is not None:
            from iit.transformers.attention import HOOK_POINT

            stack.enter_context(layout.attention_hook_points())
            for attention in layout.wrapped.attention_modules():
                point = getattr(attention, HOOK_POINT)
                stack.callback(point.register_forward_hook(_constant_hook).remove)
        yield


class LRP(PlaceAttribution):
    """Layer-wise relevance propagation onto a place (embeddings by default), ``[batch, ...]``.

    Args:
        model: an ``nn.Module`` built from linear layers, element-wise activations, LayerNorm
            and (Hugging Face) attention.
        layer: the place (see `PlaceAttribution`; default: input embeddings or float inputs).
        layer_input: for a module path, attribute to the module's first input.
        forward: see `Attribution`.
        default_rule: rule for linear layers (default ``EpsilonRule(1e-9)``).
        rules: per-module rule overrides by module path.
        transformer_rules: LN-rule and AH-rule (Ali et al. 2022), on by default.

    Raises:
        CoordinateError: unknown module path, or a module LRP cannot handle.

    Examples:
        A ReLU network with zero biases and ε = 0 conserves relevance: the relevances of a row
        sum to its target score (the gap returned with ``return_convergence_delta`` is 0).

        >>> import torch
        >>> from iit.attribution import LRP, EpsilonRule
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Sequential(
        ...     torch.nn.Linear(4, 8, bias=False), torch.nn.ReLU(), torch.nn.Linear(8, 2, bias=False))
        >>> lrp = LRP(net, default_rule=EpsilonRule(epsilon=0.0))
        >>> relevance, gap = lrp.attribute(torch.randn(3, 4), target=1, return_convergence_delta=True)
        >>> relevance.shape, bool(gap.abs().max() < 1e-5)
        (torch.Size([3, 4]), True)
    """

    has_convergence_delta = True

    def __init__(
        self,
        model: nn.Module,
        *,
        layer: Place = None,
        layer_input: bool = False,
        forward: ForwardFn | None = None,
        default_rule: Rule | None = None,
        rules: Mapping[str, Rule] | None = None,
        transformer_rules: bool = True,
    ):
        super().__init__(model, layer=layer, layer_input=layer_input, forward=forward)
        if not isinstance(model, nn.Module):
            raise CoordinateError(f"LRP needs an nn.Module, got {type(model).__name__}")
        self.module = model
        self.default_rule = default_rule if default_rule is not None else EpsilonRule()
        self.rules = dict(rules or {})
        modules = dict(model.named_modules())
        for path in self.rules:
            find_module(modules, path)
        self.transformer_rules = transformer_rules

    @overload
    def attribute(
        self, inputs: Inputs, target: Target, *, return_convergence_delta: Literal[False] = False
    ) -> Tensor: ...

    @overload
    def attribute(
        self, inputs: Inputs, target: Target, *, return_convergence_delta: Literal[True]
    ) -> tuple[Tensor, Tensor]: ...

    def attribute(
        self, inputs: Inputs, target: Target, *, return_convergence_delta: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Relevance at the place ``[batch, ...]`` (and ``Σ R - f_c`` per row, ``[batch]``).

        Args:
            inputs: the batch (e.g. ``input_ids [batch, seq]``, or a float tensor ``[batch, ...]``).
            target: see `iit.attribution.targets`.
            return_convergence_delta: also return the conservation gap ``Σ R - f_c`` per row.

        Raises:
            TargetError: the target does not give one score per row.
            CoordinateError: the place does not fit.
            HookFiringError: the place did not run exactly once.
        """
        with lrp_rules(
            self.module,
            default_rule=self.default_rule,
            rules=self.rules,
            transformer_rules=self.transformer_rules,
        ):
            x, grad, scores = gradients_at(self.ref, self.forward, inputs, target)
        relevance = x * grad
        if not return_convergence_delta:
            return relevance
        return relevance, relevance.flatten(1).sum(1) - scores
