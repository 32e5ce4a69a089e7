"""TX-Ray data collection: per-neuron activation -> feature distributions over a dataset.

For every token position of every batch, a module's activation vector ``[N]`` is recorded
together with the position's discrete feature (a token id, a POS-tag id, ...). Two modes:

* ``"max1"`` (the paper's choice): the position is credited only to its most active neuron,
  with that neuron's activation as mass;
* ``"all"``: every neuron is credited with its activation, clamped at 0.

A neuron's distribution is its mass per feature normalised to sum to one (the released code
averages normalised activations per token instead, which does not sum to one; we follow the
paper's "activation mass normalised to a distribution").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from iit.attribution.targets import output_tensor
from iit.errors import (
    ArgumentError,
    ArgumentTypeError,
    CoordinateError,
    HookFiringError,
    did_you_mean,
    unknown_name,
)

__all__ = ["TXRayConfig", "NeuronDistributions", "record_distributions", "accumulate"]


@dataclass(frozen=True)
class TXRayConfig:
    """What to record.

    Attributes:
        module: name in ``model.named_modules()`` whose output ``[batch, seq, N]`` (or
            ``[batch, N]``) holds the neuron activations.
        num_features: size of the feature vocabulary (feature ids lie in ``[0, num_features)``).
        mode: ``"max1"`` or ``"all"`` (see module docs).
        feature_key: batch key of the feature ids ``[batch, seq]`` (or ``[batch]``).
        input_keys: batch keys passed to the model as keyword arguments.
        mask_key: batch key of a ``[batch, seq]`` 0/1 mask of positions to count, or None.
    """

    module: str
    num_features: int
    mode: Literal["max1", "all"] = "max1"
    feature_key: str = "input_ids"
    input_keys: tuple[str, ...] = ("input_ids",)
    mask_key: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("max1", "all"):
            raise ArgumentError(unknown_name(self.mode, ["max1", "all"], "TX-Ray mode"))
        if self.num_features < 1:
            raise ArgumentError(f"num_features must be >= 1, got {self.num_features}")
        if not isinstance(self.input_keys, tuple):
            raise ArgumentTypeError(f"input_keys must be a tuple, got {type(self.input_keys).__name__}")


@dataclass
class NeuronDistributions:
    """Accumulated activation mass per (neuron, feature).

    Attributes:
        mass: ``[N, F]`` summed credited activation.
        counts: ``[N, F]`` number of credited positions.
        mode: the recording mode.
    """

    mass: Tensor
    counts: Tensor
    mode: str

    @property
    def num_neurons(self) -> int:
        return self.mass.shape[0]

    def distributions(self) -> Tensor:
        """``[N, F]`` rows normalised to sum to one (all-zero rows stay zero)."""
        total = self.mass.sum(1, keepdim=True)
        return torch.where(
            total > 0, self.mass / total.clamp_min(1e-300), torch.zeros_like(self.mass)
        )

    def active(self) -> Tensor:
        """``[N]`` bool: the neuron received any mass."""
        return self.mass.sum(1) > 0

    def length(self) -> Tensor:
        """``[N]`` number of distinct features in the neuron's distribution (its support)."""
        return (self.mass > 0).sum(1)

    def activation_mass(self) -> Tensor:
        """``[N]`` each neuron's share of the layer's total mass (sums to one)."""
        per = self.mass.sum(1)
        return per / per.sum().clamp_min(1e-300)


def accumulate(
    acts: Tensor, features: Tensor, mask: Tensor | None, mode: str, num_features: int
) -> tuple[Tensor, Tensor]:
    """Mass and counts ``[N, F]`` contributed by one batch.

    Args:
        acts: activations ``[positions, N]``.
        features: feature ids ``[positions]`` in ``[0, num_features)``.
        mask: ``[positions]`` bool of positions to count, or None.
        mode: ``"max1"`` or ``"all"``.

    Raises:
        ValueError: if a feature id is out of range or shapes disagree.
    """
    P, N = acts.shape
    if features.shape != (P,):
        raise ArgumentError(
            f"features must have shape ({P},) to match activations, got {tuple(features.shape)}"
        )
    if (features < 0).any() or (features >= num_features).any():
        raise ArgumentError(
            f"feature ids must lie in [0, {num_features}); got {features.min()}..{features.max()}"
        )
    if mask is not None:
        acts, features = acts[mask], features[mask]
    acts = acts.detach().to(torch.float64)
    mass = acts.new_zeros(N, num_features)
    counts = acts.new_zeros(N, num_features)
    if mode == "max1":
        value, neuron = acts.max(1)
        flat = neuron * num_features + features
        mass.view(-1).index_add_(0, flat, value.clamp_min(0))
        counts.view(-1).index_add_(0, flat, torch.ones_like(value))
    else:
        pos = acts.clamp_min(0)  # [P, N]
        onehot = torch.nn.functional.one_hot(features, num_features).to(acts.dtype)  # [P, F]
        mass += pos.T @ onehot
        counts += (pos > 0).to(acts.dtype).T @ onehot
    return mass, counts


@torch.no_grad()
def record_distributions(
    model: nn.Module, batches: Iterable[Mapping[str, Tensor]], config: TXRayConfig
) -> NeuronDistributions:
    """Run ``model`` over ``batches`` and accumulate neuron distributions at ``config.module``.

    The model is put in eval mode for the pass and restored afterwards; the forward hook is
    removed in ``finally``.

    Raises:
        CoordinateError: unknown module name (nearest names listed).
        HookFiringError: the module did not run exactly once per batch.
        ValueError: activation / feature / mask shapes disagree, or no batch was given.
    """
    modules = dict(model.named_modules())
    if config.module not in modules:
        raise CoordinateError(
            f"the model has no module {config.module!r}{did_you_mean(config.module, modules, n=4)}"
        )
    seen: list[Tensor] = []
    handle = modules[config.module].register_forward_hook(
        lambda _m, _a, out: seen.append(output_tensor(out))
    )
    was_training = model.training
    mass = counts = None
    try:
        model.eval()
        for batch in batches:
            seen.clear()
            model(**{k: batch[k] for k in config.input_keys})
            if len(seen) != 1:
                raise HookFiringError(
                    f"module {config.module!r} ran {len(seen)} times in one batch"
                )
            acts, feats = seen[0], batch[config.feature_key]
            if acts.dim() != feats.dim() + 1 or acts.shape[:-1] != feats.shape:
                raise ArgumentError(
                    f"activations of {config.module!r} have shape {tuple(acts.shape)}; expected "
                    f"{tuple(feats.shape)} + [neurons] to match {config.feature_key!r}"
                )
            mask = None
            if config.mask_key is not None:
                mask = batch[config.mask_key].reshape(-1).bool()
            m, c = accumulate(
                acts.reshape(-1, acts.shape[-1]), feats.reshape(-1).long().to(acts.device),
                mask, config.mode, config.num_features,
            )  # fmt: skip
            mass = m if mass is None else mass + m
            counts = c if counts is None else counts + c
    finally:
        handle.remove()
        model.train(was_training)
    if mass is None or counts is None:
        raise ArgumentError("batches was empty: nothing to record")
    return NeuronDistributions(mass, counts, config.mode)
