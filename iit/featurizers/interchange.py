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

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from iit.errors import ArgumentTypeError, InterventionError
from iit.featurizers.base import Featurizer
from iit.featurizers.rotation import RotationFeaturizer
from iit.interventions import BasisUse, Intervention

__all__ = ["FeatureInterchange", "feature_indices"]


def feature_indices(features: tuple[int, int] | Iterable[int], n_features: int) -> tuple[int, ...]:
    """Normalise a feature choice, with the convention of `iit.RotatedInterchange`'s
    ``dims``: a tuple is a ``(start, stop)`` pair meaning features ``start .. stop - 1``
    (``(0, 4)`` is features 0, 1, 2, 3); a list, ``range`` or any other iterable lists the feature
    indices themselves (``[0, 4]`` is features 0 and 4).

    Returns:
        The distinct indices in ``[0, n_features)``, in the given order.

    Raises:
        ArgumentTypeError: not an iterable, a string, an entry that is not an int (floats are
            not truncated), or a tuple that is not a ``(start, stop)`` pair.
        InterventionError: an empty, repeated or out-of-range choice.

    Examples:
        >>> from iit.featurizers import feature_indices
        >>> feature_indices((0, 4), n_features=8)
        (0, 1, 2, 3)
        >>> feature_indices([0, 4], n_features=8)
        (0, 4)
    """
    if isinstance(features, (str, bytes, Tensor)) or not isinstance(features, Iterable):
        raise ArgumentTypeError(
            f"features must be a (start, stop) tuple or a list / range of feature indices, got "
            f"{type(features).__name__} {features!r}"
        )
    items = list(features)
    bad_type = [v for v in items if isinstance(v, bool) or not isinstance(v, int)]
    if bad_type:
        raise ArgumentTypeError(f"feature indices must be ints, got {bad_type[0]!r} ({type(bad_type[0]).__name__}) in {features!r}")
    if isinstance(features, tuple):
        if len(items) != 2:
            raise ArgumentTypeError(
                f"a tuple of features is a (start, stop) pair as in RotatedInterchange's dims, got {features!r}; "
                "pass a list or range to list feature indices"
            )
        start, stop = items
        if not 0 <= start < stop <= n_features:
            raise InterventionError(
                f"features (start, stop) must satisfy 0 <= start < stop <= {n_features}, got {features!r}"
            )
        return tuple(range(start, stop))
    idx = tuple(int(i) for i in items)
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
        featurizer: any `Featurizer` (trainable ones train with the
            intervention: DAS is ``FeatureInterchange(c, RotationFeaturizer(d, k), range(k))``).
        features: the chosen features: a ``(start, stop)`` tuple (as RotatedInterchange's
            ``dims``: ``(0, 4)`` is features 0..3), or a list / ``range`` of indices
            (``[0, 4]`` is features 0 and 4); see `feature_indices`.
        interchange_error: take the reconstruction error from the source instead of the base.
        source: source slot.
        source_coordinate: where to read in the source run (default: ``coordinate``).

    Raises:
        ArgumentTypeError: features that are not a (start, stop) tuple or an iterable of ints.
        InterventionError: a bad source slot or feature choice.

    Examples:
        With the identity featurizer, features are neurons: features 1 and 2 come from the
        source, the others stay as in the base.

        >>> import torch
        >>> from iit import Coordinate, Index
        >>> from iit.featurizers import FeatureInterchange, IdentityFeaturizer
        >>> swap = FeatureInterchange(Coordinate("layers.0", Index.all()), IdentityFeaturizer(4), (1, 3))
        >>> swap.features
        (1, 2)
        >>> swap(torch.zeros(1, 4), torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
        tensor([[0., 2., 3., 0.]])
    """

    needs_source: ClassVar[bool] = True

    def __init__(
        self,
        coordinate: Any,
        featurizer: Featurizer,
        features: tuple[int, int] | Iterable[int],
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

    def basis_use(self) -> BasisUse:
        """The featurizer's basis (`Featurizer.basis`), the chosen features, width ``d``."""
        return BasisUse(self.featurizer.basis(), frozenset(self.features), self.featurizer.d)

    def mix(self, f_base: Tensor, f_source: Tensor) -> Tensor:
        """Features written: source features where chosen, base features elsewhere.

        Args:
            f_base: base features ``[batch, ..., n_features]``.
            f_source: source features ``[batch, ..., n_features]``.

        Returns:
            The mixed features ``[batch, ..., n_features]``.
        """
        return torch.where(self.chosen.to(f_base.device), f_source, f_base)

    def forward(self, base: Tensor, source: Tensor | None) -> Tensor:
        """``base``, ``source``: ``[batch, ..., d]``; returns ``[batch, ..., d]`` in base's dtype and
        on base's device, computed in ``promote_types(featurizer dtype, base dtype)``.

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
        source = source.to(base.device)
        if isinstance(self.featurizer, RotationFeaturizer) and not self.interchange_error:
            # DAS: the one implementation shared with iit.RotatedInterchange (same numbers)
            return self.featurizer.interchange(base, source, self.features)
        with torch.autocast(device_type=base.device.type, enabled=False):
            f_base, f_source = self.featurizer.encode(base), self.featurizer.encode(source)
            mixed = self.mix(f_base, f_source)
            anchor, f_anchor = (source, f_source) if self.interchange_error else (base, f_base)
            delta = self.featurizer.decode(mixed) - self.featurizer.decode(f_anchor)
            out = anchor.to(delta.dtype) + delta
        return out.to(base.dtype)

    def extra_repr(self) -> str:
        """Coordinate, number of chosen features and ``interchange_error`` in the printed form."""
        shown = f"{len(self.features)} of {self.featurizer.n_features}"
        return f"{super().extra_repr()}, features={shown}, interchange_error={self.interchange_error}"
