"""Intervention kinds: what to write at a coordinate during the base run.

Every intervention is an ``nn.Module`` that knows *where* (a coordinate) and *how*:
``forward(base, source) -> new`` maps the base run's values at the coordinate (``[batch, ...]``,
as :meth:`iit.Index.read` returns them) and, for interchanges, the source values at the same
slot, to the values written back. New kinds subclass :class:`Intervention` and override
``forward``; set ``needs_source = True`` if they read a source run.

Per-row interventions: ``intervention.where(rows)`` (``rows`` a bool ``[batch]``) applies it to
the chosen rows only, so one training batch can mix interventions on different variables;
``intervention.from_source(i)`` makes it read source slot ``i`` for one call.

Placement and dtype: every built-in intervention returns its values on the device of the base
values, i.e. of the module that consumes them (source values cached on another device, a
constant stored on the CPU, a model split by accelerate across devices), and never casts to
another dtype behind the caller's back: a constant or steering vector must have the hidden
state's dtype (:class:`InterventionShapeError` otherwise).
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from iit.errors import ArgumentTypeError, InterventionError, InterventionShapeError
from iit.precision import upcast

__all__ = [
    "Intervention",
    "Interchange",
    "ZeroAblation",
    "ConstantAblation",
    "MeanAblation",
    "ResampleAblation",
    "Addition",
    "BoundIntervention",
]


class Intervention(nn.Module, metaclass=ABCMeta):
    """Base class: an operation on the values at one coordinate of the base run.

    Args:
        coordinate: where to intervene (a :class:`iit.Coordinate`, or a coordinate of a
            subclass's coordinate system, resolved by :meth:`iit.Interventionable.resolve`).

    Subclasses override :meth:`forward`. Class attribute ``needs_source`` says whether the
    intervention reads a source run (then ``source`` and ``source_coordinate`` are used).
    """

    needs_source: ClassVar[bool] = False

    def __init__(self, coordinate: Any) -> None:
        super().__init__()
        self.coordinate = coordinate
        self.source: int | None = None
        self.source_coordinate: Any = None

    @abstractmethod
    def forward(self, base: Tensor, source: Tensor | None) -> Tensor:
        """Map base values ``[batch, ...]`` (and source values, same shape) at the coordinate
        to the values written (same shape)."""

    def where(self, rows: Tensor) -> BoundIntervention:
        """This intervention applied only to the rows where ``rows`` (bool ``[batch]``) is True."""
        return BoundIntervention(self, rows=rows)

    def from_source(self, source: int) -> BoundIntervention:
        """This intervention reading source slot ``source`` in this call (for a trained
        intervention shared between source slots)."""
        return BoundIntervention(self, source=source)

    def extra_repr(self) -> str:
        src = "" if self.source is None else f", source={self.source}"
        return f"at={self.where_text()}{src}"

    def where_text(self) -> str:
        """The coordinate as text, for messages."""
        c = self.coordinate
        return c.describe() if hasattr(c, "describe") else repr(c)


class BoundIntervention:
    """An intervention bound to rows of the batch and / or to a source slot for one call.

    Made by :meth:`Intervention.where` and :meth:`Intervention.from_source`; not a module (the
    intervention's parameters stay where they are registered), so one trained intervention can
    serve different rows and sources in every batch.

    Attributes:
        intervention: the intervention.
        rows: bool ``[batch]``: the rows where it applies (``None``: all rows).
        source: the source slot it reads (``None``: the intervention's own ``source``).
    """

    def __init__(self, intervention: Intervention, rows: Tensor | None = None, source: int | None = None) -> None:
        if rows is not None and (not isinstance(rows, Tensor) or rows.dtype != torch.bool or rows.dim() != 1):
            raise InterventionError(
                "rows must be a bool tensor [batch], got "
                f"{getattr(rows, 'dtype', type(rows).__name__)} of shape {tuple(getattr(rows, 'shape', ()))}"
            )
        if source is not None:
            if not intervention.needs_source:
                raise InterventionError(f"{type(intervention).__name__} reads no source; from_source() does not apply")
            if isinstance(source, bool) or not isinstance(source, int) or source < 0:
                raise InterventionError(f"source must be a source index >= 0, got {source!r}")
        self.intervention = intervention
        self.rows = rows
        self.source = source

    @property
    def source_slot(self) -> int | None:
        """The source slot read in this call."""
        return self.intervention.source if self.source is None else self.source

    def where(self, rows: Tensor) -> BoundIntervention:
        """Also restrict to ``rows`` (combined with any earlier restriction by logical and)."""
        combined = rows if self.rows is None else self.rows & rows
        return BoundIntervention(self.intervention, combined, self.source)

    def from_source(self, source: int) -> BoundIntervention:
        """Read source slot ``source`` instead."""
        return BoundIntervention(self.intervention, self.rows, source)

    def __repr__(self) -> str:
        rows = "all" if self.rows is None else f"{int(self.rows.sum())}/{len(self.rows)}"
        return f"BoundIntervention({self.intervention!r}, rows={rows}, source={self.source_slot})"


class Interchange(Intervention):
    """Write the value a **source** run had at a coordinate into the base run.

    Args:
        coordinate: where to write in the base run.
        source: index of the source (in the ``sources`` list of the call) to read from.
        source_coordinate: where to read in the source run (default: ``coordinate``). It must
            select values of the same shape.
    """

    needs_source: ClassVar[bool] = True

    def __init__(self, coordinate: Any, source: int = 0, source_coordinate: Any = None) -> None:
        super().__init__(coordinate)
        if isinstance(source, bool) or not isinstance(source, int) or source < 0:
            raise InterventionError(f"source must be a source index >= 0, got {source!r}")
        self.source = source
        self.source_coordinate = coordinate if source_coordinate is None else source_coordinate

    def forward(self, base: Tensor, source: Tensor | None) -> Tensor:
        """Return the source values ``[batch, ...]`` unchanged."""
        assert source is not None
        return source.to(base.device)


class ZeroAblation(Intervention):
    """Set the values at the coordinate to zero."""

    def forward(self, base: Tensor, source: Tensor | None) -> Tensor:
        return torch.zeros_like(base)


def _per_row_value(value: Tensor, base: Tensor, what: str, where: str) -> Tensor:
    """Expand a per-row value ``[...]`` to the batch ``[batch, ...]`` after an exact shape check."""
    if value.shape != base.shape[1:]:
        raise InterventionShapeError(
            f"{where}: the {what} has shape {tuple(value.shape)} but one row of the slot has shape "
            f"{tuple(base.shape[1:])} (slot {tuple(base.shape)}); give exactly one row's shape"
        )
    if value.device.type == "meta" and base.device.type != "meta":
        raise InterventionShapeError(
            f"{where}: the {what} is on the meta device (it holds no data, e.g. made under "
            "init_empty_weights); give real values (they are moved to the hidden state's device)"
        )
    if value.dtype != base.dtype:
        raise InterventionShapeError(
            f"{where}: the {what} is {value.dtype} but the hidden state is {base.dtype}; cast it "
            "to the model's dtype first"
        )
    return value.to(base.device).unsqueeze(0).expand_as(base)


class ConstantAblation(Intervention):
    """Set the values at the coordinate to a constant, the same for every row.

    Args:
        coordinate: where.
        value: the constant, shaped like ONE row of the slot (e.g. ``[k, d]`` for a slot
            ``[batch, k, d]``); stored as a buffer so it moves with ``.to()``.
    """

    def __init__(self, coordinate: Any, value: Tensor) -> None:
        super().__init__(coordinate)
        if not isinstance(value, Tensor):
            raise ArgumentTypeError(
                f"{type(self).__name__} needs a tensor value shaped like one row of the slot, got "
                f"{type(value).__name__}; e.g. torch.full((d,), {value!r})"
            )
        self.register_buffer("value", value.detach().clone())

    def forward(self, base: Tensor, source: Tensor | None) -> Tensor:
        return _per_row_value(self.value, base, "constant", self.where_text())


class MeanAblation(ConstantAblation):
    """Set the values at the coordinate to their mean over a dataset.

    Build it with :meth:`fit`, which collects the values over reference inputs; the sum is
    accumulated in float32 for half-precision models (float64 stays float64) and the mean
    stored in the values' own dtype.
    """

    @classmethod
    def fit(cls, model: Any, inputs: Any, coordinate: Any) -> MeanAblation:
        """Mean of the coordinate's values over the rows of ``inputs``.

        Args:
            model: an :class:`iit.Interventionable`.
            inputs: reference inputs: one batch (a tensor, a dict of keyword arguments or a
                tuple of positional arguments) or any iterable of batches (a list, a
                ``torch.utils.data.DataLoader``, a generator). A batch that a ``DataLoader``
                yields as a list (``TensorDataset``) is used as positional arguments.
            coordinate: where.

        Raises:
            InterventionError: if ``inputs`` holds no rows (an empty iterable).
        """
        if isinstance(inputs, (Tensor, Mapping, tuple)):
            batches: Iterable[Any] = [inputs]
        elif isinstance(inputs, Iterable) and not isinstance(inputs, (str, bytes)):
            batches = inputs
        else:
            raise ArgumentTypeError(
                f"MeanAblation.fit needs a batch of inputs or an iterable of batches, got {type(inputs).__name__}"
            )
        total: Tensor | None = None
        count = 0
        with torch.no_grad():
            dtype: torch.dtype | None = None
            for batch in batches:
                values = model.collect(batch, [coordinate])[coordinate]
                dtype = values.dtype
                part = upcast(values).sum(0)
                total = part if total is None else total + part.to(total.device)
                count += values.shape[0]
        if total is None or count == 0 or dtype is None:
            raise InterventionError("MeanAblation.fit needs at least one non-empty batch of inputs")
        return cls(coordinate, (total / count).to(dtype))


class ResampleAblation(Intervention):
    """Replace each row's values by those of a random row of a reference pool.

    Args:
        coordinate: where.
        pool: values collected at the coordinate on reference inputs, ``[n, ...]`` (e.g. from
            ``model.collect(reference_inputs, [coordinate])[coordinate]``).
        seed: seed of the generator that picks pool rows (one draw per call).
    """

    def __init__(self, coordinate: Any, pool: Tensor, seed: int = 0) -> None:
        super().__init__(coordinate)
        if not isinstance(pool, Tensor):
            raise ArgumentTypeError(f"ResampleAblation needs a tensor pool [n, ...], got {type(pool).__name__}")
        if pool.dim() < 1 or pool.shape[0] == 0:
            raise InterventionError("ResampleAblation needs a non-empty pool [n, ...]")
        self.register_buffer("pool", pool.detach().clone())
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, base: Tensor, source: Tensor | None) -> Tensor:
        if self.pool.shape[1:] != base.shape[1:]:
            raise InterventionShapeError(
                f"{self.where_text()}: pool rows have shape {tuple(self.pool.shape[1:])} but slot "
                f"rows have shape {tuple(base.shape[1:])}"
            )
        if self.pool.dtype != base.dtype:
            raise InterventionShapeError(
                f"{self.where_text()}: the pool is {self.pool.dtype} but the hidden state is "
                f"{base.dtype}; collect the pool from the same model (or cast it first)"
            )
        rows = torch.randint(0, self.pool.shape[0], (base.shape[0],), generator=self.generator)
        return self.pool[rows.to(self.pool.device)].to(base.device)


class Addition(Intervention):
    """Add a vector to the values at the coordinate (activation steering).

    Args:
        coordinate: where.
        vector: shaped like ONE row of the slot; may be an ``nn.Parameter`` to learn it.
        scale: a multiplier for the vector.
    """

    def __init__(self, coordinate: Any, vector: Tensor, scale: float = 1.0) -> None:
        super().__init__(coordinate)
        if not isinstance(vector, Tensor):
            raise ArgumentTypeError(f"Addition needs a tensor vector shaped like one row of the slot, got {type(vector).__name__}")
        if isinstance(vector, nn.Parameter):
            self.vector = vector
        else:
            self.register_buffer("vector", vector.detach().clone())
        self.scale = scale

    def forward(self, base: Tensor, source: Tensor | None) -> Tensor:
        return base + self.scale * _per_row_value(self.vector, base, "steering vector", self.where_text())
