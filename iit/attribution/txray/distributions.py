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

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from iit.coordinates import Coordinate
from iit.errors import (
    ArgumentError,
    ArgumentTypeError,
    CoordinateError,
    NamingError,
    unknown_name,
)

__all__ = ["TXRayConfig", "NeuronDistributions", "record_distributions", "accumulate"]


@dataclass(frozen=True)
class TXRayConfig:
    """What to record.

    Attributes:
        place: where the neuron activations ``[batch, seq, N]`` (or ``[batch, N]``) are: an
            `iit.Coordinate` (any index that keeps the batch and sequence axes, e.g.
            ``Index.dims(0, 64)`` for 64 neurons), an `iit.TransformerCoordinate` on a
            Hugging Face model (e.g. ``TransformerCoordinate(3, "mlp_hidden")``), or a module
            path (its output). Read with `iit.Interventionable.collect`.
        num_features: size of the feature vocabulary (feature ids lie in ``[0, num_features)``).
        mode: ``"max1"`` or ``"all"`` (see module docs).
        feature_key: batch key of the feature ids ``[batch, seq]`` (or ``[batch]``).
        input_keys: batch keys passed to the model as keyword arguments.
        mask_key: batch key of the ``[batch, seq]`` 0/1 attention mask, or None: positions
            where it is 0 are not counted, and a model whose forward takes ``attention_mask``
            always receives it there (also when ``input_keys`` does not name it).
    """

    place: Any
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
        if isinstance(self.place, str):
            object.__setattr__(self, "place", Coordinate(self.place))

    def model_inputs(self, batch: Mapping[str, Tensor], takes_mask: bool = True) -> dict[str, Tensor]:
        """The model's keyword inputs for ``batch``: ``input_keys``, plus the mask as
        ``attention_mask`` when ``mask_key`` is set and the model takes one (``takes_mask``).

        Raises:
            NamingError: a key missing from the batch (naming the keys it has).
        """
        keys = [*self.input_keys, *([self.mask_key] if self.mask_key else [])]
        missing = [k for k in keys if k not in batch]
        if missing:
            raise NamingError(f"batch has no {missing}; it has {sorted(batch)}")
        inputs = {k: batch[k] for k in self.input_keys}
        if self.mask_key is not None and takes_mask:
            inputs["attention_mask"] = batch[self.mask_key]
        return inputs


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
        ArgumentError: if a feature id is out of range or shapes disagree.
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


def _accepts_attention_mask(model: nn.Module) -> bool:
    """Whether ``model.forward`` takes an ``attention_mask`` argument (or ``**kwargs``)."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "attention_mask" or p.kind is p.VAR_KEYWORD for p in params)


def _interventionable(model: nn.Module, place: Any) -> Any:
    from iit.interventionable import Interventionable

    if isinstance(place, Coordinate):
        return Interventionable(model)
    if type(place).__name__ == "TransformerCoordinate":
        from iit.transformers import TransformerInterventionable

        return TransformerInterventionable(model)
    raise CoordinateError(
        f"TXRayConfig.place must be an iit.Coordinate, an iit.TransformerCoordinate or a module "
        f"path, got {type(place).__name__}"
    )


@torch.no_grad()
def record_distributions(
    model: nn.Module, batches: Iterable[Mapping[str, Tensor]], config: TXRayConfig
) -> NeuronDistributions:
    """Run ``model`` over ``batches`` and accumulate neuron distributions at ``config.place``.

    Activations are read with `iit.Interventionable.collect` (hooks scoped to each call,
    each site checked to fire exactly once, the forward stopped after the place). The model is
    put in eval mode for the pass and restored afterwards.

    Raises:
        CoordinateError: unknown module or a place that does not fit (nearest names listed).
        HookFiringError: the place's module did not run exactly once per batch.
        NamingError: a batch lacks a configured key.
        ArgumentError: activation / feature / mask shapes disagree, or no batch was given.
    """
    wrapped = _interventionable(model, config.place)
    takes_mask = _accepts_attention_mask(model)
    was_training = model.training
    mass = counts = None
    try:
        model.eval()
        for batch in batches:
            inputs = config.model_inputs(batch, takes_mask)
            activations = wrapped.collect(inputs, [config.place], detach=True)
            acts, feats = activations[config.place], batch[config.feature_key]
            where = config.place.describe()
            if acts.dim() != feats.dim() + 1 or acts.shape[:-1] != feats.shape:
                raise ArgumentError(
                    f"activations at {where} have shape {tuple(acts.shape)}; expected "
                    f"{tuple(feats.shape)} + [neurons] to match {config.feature_key!r}"
                )
            mask = None
            if config.mask_key is not None:
                mask = batch[config.mask_key].reshape(-1).bool().to(acts.device)
            m, c = accumulate(
                acts.reshape(-1, acts.shape[-1]), feats.reshape(-1).long().to(acts.device),
                mask, config.mode, config.num_features,
            )  # fmt: skip
            mass = m if mass is None else mass + m
            counts = c if counts is None else counts + c
    finally:
        model.train(was_training)
    if mass is None or counts is None:
        raise ArgumentError("batches was empty: nothing to record")
    return NeuronDistributions(mass, counts, config.mode)
