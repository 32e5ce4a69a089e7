"""A learned mask over features (neurons with the identity featurizer, rotated dims with a
rotation): which features carry a variable, learned with a sparsity term.

Per feature ``j`` a logit ``l_j`` gives the weight ``m_j`` in ``[0, 1]`` of the source::

    sigmoid:        m_j = sigmoid(l_j / temperature)
    hard_concrete:  u ~ U(0, 1), m_j = clamp(sigmoid((log u - log(1 - u) + l_j) / beta)
                    * (zeta - gamma) + gamma, 0, 1)     (Louizos et al. 2018; beta 2/3,
                    gamma -0.1, zeta 1.1)

In training mode the written features are ``f_b + m * (f_s - f_b)``; in eval mode the mask is
binary (``l_j > 0``) and the intervention is exactly a `FeatureInterchange` on the
selected features. `MaskedFeatureInterchange.penalty` is the sparsity term: the sum of
``m`` (sigmoid) or the expected number of open gates (hard concrete).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from iit.errors import ArgumentError, ArgumentTypeError, InterventionError
from iit.featurizers.base import Featurizer
from iit.featurizers.interchange import FeatureInterchange
from iit.interventions import BasisUse, Intervention

__all__ = ["MaskedFeatureInterchange"]

MaskKind = Literal["sigmoid", "hard_concrete"]
_BETA, _GAMMA, _ZETA = 2.0 / 3.0, -0.1, 1.1


class MaskedFeatureInterchange(Intervention):
    """Interchange every feature of ``featurizer`` weighted by a learned mask.

    Args:
        coordinate: where.
        featurizer: the basis the mask selects in (identity: neurons; rotation: rotated dims).
        kind: ``"sigmoid"`` or ``"hard_concrete"``.
        init: initial logit of every feature (or a tensor ``[n_features]``).
        temperature: sigmoid temperature (anneal it with `set_temperature`).
        source: source slot.
        source_coordinate: where to read in the source run (default: ``coordinate``).

    Raises:
        InterventionError: an unknown kind, a non-positive temperature, a bad source slot or an
            ``init`` tensor of the wrong shape.
    """

    needs_source: ClassVar[bool] = True

    def __init__(
        self,
        coordinate: Any,
        featurizer: Featurizer,
        kind: MaskKind = "sigmoid",
        *,
        init: float | Tensor = 0.0,
        temperature: float = 1.0,
        source: int = 0,
        source_coordinate: Any = None,
    ) -> None:
        super().__init__(coordinate)
        if kind not in ("sigmoid", "hard_concrete"):
            raise InterventionError(f"kind must be 'sigmoid' or 'hard_concrete', got {kind!r}")
        if isinstance(source, bool) or not isinstance(source, int) or source < 0:
            raise InterventionError(f"source must be a source index >= 0, got {source!r}")
        n = featurizer.n_features
        logits = init.detach().clone().float() if isinstance(init, Tensor) else torch.full((n,), float(init))
        if tuple(logits.shape) != (n,):
            raise InterventionError(f"init must be a float or a tensor [{n}], got shape {tuple(logits.shape)}")
        self.featurizer, self.kind = featurizer, kind
        self.logits = nn.Parameter(logits)
        self.register_buffer("temperature", torch.tensor(1.0))
        self.set_temperature(temperature)
        self.source = source
        self.source_coordinate = coordinate if source_coordinate is None else source_coordinate

    def set_temperature(self, value: float) -> None:
        """Set the sigmoid temperature (> 0).

        Raises:
            ArgumentTypeError: not a real number.
            ArgumentError: not > 0 (NaN included).
        """
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ArgumentTypeError(f"temperature must be a number > 0, got {type(value).__name__} {value!r}")
        if not value > 0:
            raise ArgumentError(f"temperature must be > 0, got {value}")
        self.temperature.fill_(float(value))

    def mask(self) -> Tensor:
        """The mask ``[n_features]``: soft (a fresh sample for hard concrete) in training mode,
        binary in eval mode."""
        if not self.training:
            return (self.logits > 0).to(self.logits.dtype)
        if self.kind == "sigmoid":
            return torch.sigmoid(self.logits / self.temperature)
        u = torch.rand_like(self.logits).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.logits) / _BETA)
        return (s * (_ZETA - _GAMMA) + _GAMMA).clamp(0.0, 1.0)

    def penalty(self) -> Tensor:
        """Sparsity term: ``sum(m)`` (sigmoid) or the expected number of non-zero gates (hard
        concrete).

        Returns:
            A scalar tensor ``[]`` to add to the loss (differentiable in the logits).
        """
        if self.kind == "sigmoid":
            return torch.sigmoid(self.logits / self.temperature).sum()
        return torch.sigmoid(self.logits - _BETA * math.log(-_GAMMA / _ZETA)).sum()

    def basis_use(self) -> BasisUse:
        """The featurizer's basis, every feature (the learned mask can select any), width ``d``."""
        return BasisUse(self.featurizer.basis(), frozenset(range(self.featurizer.n_features)), self.featurizer.d)

    def selected(self, k: int | None = None) -> tuple[int, ...]:
        """Selected features: those with a positive logit, or the ``k`` largest logits.

        Args:
            k: how many features to select by logit (``None``: every feature with a positive logit).

        Returns:
            Feature indices in increasing order.

        Raises:
            InterventionError: ``k`` outside ``[1, n_features]``.
        """
        if k is None:
            return tuple(int(i) for i in torch.nonzero(self.logits > 0).flatten())
        if not 1 <= k <= len(self.logits):
            raise InterventionError(f"k must be in [1, {len(self.logits)}], got {k}")
        order = torch.argsort(self.logits.detach(), descending=True, stable=True)
        return tuple(sorted(int(i) for i in order[:k]))

    def to_interchange(self, k: int | None = None) -> FeatureInterchange:
        """The hard `FeatureInterchange` on `selected` features (same featurizer)."""
        return FeatureInterchange(
            self.coordinate, self.featurizer, list(self.selected(k)), source=self.source if self.source is not None else 0,
            source_coordinate=self.source_coordinate,
        )

    def forward(self, base: Tensor, source: Tensor | None) -> Tensor:
        """``base``, ``source``: ``[batch, ..., d]``; returns ``[batch, ..., d]`` in base's dtype.

        Raises:
            InterventionError: no source values.
            InterventionShapeError: a last axis other than ``d``.
        """
        if source is None:
            raise InterventionError(f"{type(self).__name__} at {self.where_text()} needs source values")
        self.featurizer.check_width(base, f"{type(self).__name__} at {self.where_text()}")
        with torch.autocast(device_type=base.device.type, enabled=False):
            f_base, f_source = self.featurizer.encode(base), self.featurizer.encode(source)
            m = self.mask().to(f_base.device)
            if self.training:
                mixed = f_base + m * (f_source - f_base)
            else:
                mixed = torch.where(m > 0, f_source, f_base)
            out = base.to(f_base.dtype) + (self.featurizer.decode(mixed) - self.featurizer.decode(f_base))
        return out.to(base.dtype)

    def extra_repr(self) -> str:
        """Coordinate, mask kind and number of features in the printed form."""
        return f"{super().extra_repr()}, kind={self.kind}, n_features={len(self.logits)}"

