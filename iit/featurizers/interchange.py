"""Interchange on chosen features of a featurizer.

For base values ``b``, source values ``s`` (``[batch, ..., d]``) and a featurizer ``F``, the
features ``i`` in the chosen set are taken from the source, the others from the base, and the
reconstruction error from the *anchor* run (the base, or the source with
``interchange_error=True``)::

    mixed = where(chosen, F.encode(s), F.encode(b))
    out   = anchor + F.decode(mixed) - F.decode(F.encode(anchor))

This is ``F.inverse(mixed, error(anchor))`` written so that it is exact in the two limits:
when ``mixed`` equals the anchor's features nothing changes (``out == anchor``, bit for bit),
so an SAE's imperfect reconstruction never leaks into the intervened run, and interchanging all
features together with the error writes the source exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from iit.errors import InterventionError
from iit.featurizers.base import Featurizer
from iit.interventions import Intervention

__all__ = ["FeatureInterchange", "feature_indices"]


def feature_indices(features: Sequence[int] | tuple[int, int] | range, n_features: int) -> tuple[int, ...]:
    """Normalise a feature choice: a ``range``, a ``(start, stop)`` pair given as ``range``, or a
    sequence of distinct indices in ``[0, n_features)``.

    Raises:
        InterventionError: an empty, repeated or out-of-range choice.
    """
    idx = tuple(int(i) for i in features)
    if not idx:
        raise InterventionError("choose at least one feature")
    if len(set(idx)) != len(idx):
        raise InterventionError(f"feature indices must be distinct, got {idx}")
    bad = [i for i in idx if not 0 <= i < n_features]
    if bad:
        raise InterventionError(f"feature indices {bad} are outside [0, {n_features})")
    return idx


class FeatureInterchange(Intervention):
    """Interchange features ``features`` of ``featurizer`` from a source run into the base run.

    Args:
        coordinate: where (the slot's last axis has the featurizer's ``d`` entries).
        featurizer: any :class:`~iit.featurizers.Featurizer` (trainable ones train with the
            intervention: DAS is ``FeatureInterchange(c, RotationFeaturizer(d, k), range(k))``).
        features: the chosen feature indices (e.g. ``range(k)``).
        interchange_error: take the reconstruction error from the source instead of the base.
        source: source slot.
        source_coordinate: where to read in the source run (default: ``coordinate``).

    Raises:
        InterventionError: a bad source slot or feature choice.
    """

    needs_source: ClassVar[bool] = True

    def __init__(
        self,
        coordinate: Any,
        featurizer: Featurizer,
        features: Sequence[int] | range,
        *,
        interchange_error: bool = False,
        source: int = 0,
        source_coordinate: Any = None,
    ) -> None:
        super().__init__(coordinate)
        if isinstance(source, bool) or not isinstance(source, int) or source < 0:
            raise InterventionError(f"source must be a source index >= 0, got {source!r}")
        if not isinstance(featurizer, Featurizer):
            raise InterventionError(f"featurizer must be an iit Featurizer, got {type(featurizer).__name__}")
        self.featurizer = featurizer
        self.features = feature_indices(features, featurizer.n_features)
        self.interchange_error = bool(interchange_error)
        self.source = source
        self.source_coordinate = coordinate if source_coordinate is None else source_coordinate
        chosen = torch.zeros(featurizer.n_features, dtype=torch.bool)
        chosen[list(self.features)] = True
        self.register_buffer("chosen", chosen, persistent=False)

    def mix(self, f_base: Tensor, f_source: Tensor) -> Tensor:
        """Features written: source features where chosen, base features elsewhere."""
        return torch.where(self.chosen.to(f_base.device), f_source, f_base)

    def forward(self, base: Tensor, source: Tensor | None) -> Tensor:
        """``base``, ``source``: ``[batch, ..., d]``; returns ``[batch, ..., d]`` in base's dtype.

        Raises:
            InterventionError: no source values.
            InterventionShapeError: a last axis other than ``d`` or differing base / source shapes.
        """
        if source is None:
            raise InterventionError(f"{type(self).__name__} at {self.where_text()} needs source values")
        where = f"{type(self).__name__} at {self.where_text()}"
        self.featurizer.check_width(base, where)
        if source.shape != base.shape:
            raise InterventionError(f"{where}: base values {tuple(base.shape)} and source values {tuple(source.shape)} differ")
        with torch.autocast(device_type=base.device.type, enabled=False):
            f_base, f_source = self.featurizer.encode(base), self.featurizer.encode(source)
            mixed = self.mix(f_base, f_source)
            anchor, f_anchor = (source, f_source) if self.interchange_error else (base, f_base)
            delta = self.featurizer.decode(mixed) - self.featurizer.decode(f_anchor)
            out = anchor.to(delta.dtype) + delta
        return out.to(base.dtype)

    def extra_repr(self) -> str:
        shown = f"{len(self.features)} of {self.featurizer.n_features}"
        return f"{super().extra_repr()}, features={shown}, interchange_error={self.interchange_error}"
