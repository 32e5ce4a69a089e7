"""Intervention kinds: what to write at a coordinate during the base run.

Every intervention is an ``nn.Module`` that knows *where* (a coordinate) and *how*:
``forward(base, source) -> new`` maps the base run's values at the coordinate (``[batch, ...]``,
as `iit.Index.read` returns them) and, for interchanges, the source values at the same
slot, to the values written back. New kinds subclass `Intervention` and override
``forward``; set ``needs_source = True`` if they read a source run.

Per-row interventions: ``intervention.where(rows)`` (``rows`` a bool ``[batch]``) applies it to
the chosen rows only, so one training batch can mix interventions on different variables;
``intervention.from_source(i)`` makes it read source slot ``i`` for one call.

Placement and dtype: every built-in intervention returns its values on the device of the base
values, i.e. of the module that consumes them (source values cached on another device, a
constant stored on the CPU, a model split by accelerate across devices), and never casts to
another dtype behind the caller's back: a constant or steering vector must have the hidden
state's dtype (`InterventionShapeError` otherwise).
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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
    "BasisUse",
]


@dataclass(frozen=True)
class BasisUse:
    """What an intervention in a learned or fitted basis occupies (used by the alignment checks).

    Attributes:
        basis: the basis object (an `iit.Rotation`, or a featurizer); two interventions with
            the same object at one slot overlap only when their ``features`` intersect.
        features: the basis columns / feature indices the intervention writes.
        width: the width ``d`` of the slot's last axis the basis expects.
        what: how ``features`` are named in messages ("rotated dims", "features").

    Raises:
        TypeError: a missing or unknown field.

    Examples:
        >>> BasisUse(basis="R", features=frozenset({2, 3, 4}), width=8, what="rotated dims").describe()
        'rotated dims [2, 5)'
    """

    basis: object
    features: frozenset[int]
    width: int
    what: str = "features"

    def describe(self) -> str:
        """``"rotated dims [2, 5)"`` or ``"features [0, 4, 7]"``."""
        idx = sorted(self.features)
        if idx and idx == list(range(idx[0], idx[-1] + 1)):
            return f"{self.what} [{idx[0]}, {idx[-1] + 1})"
        return f"{self.what} {idx}"


class Intervention(nn.Module, metaclass=ABCMeta):
    """Base class: an operation on the values at one coordinate of the base run.

    Subclasses override `forward`. Class attribute ``needs_source`` says whether the
    intervention reads a source run (then ``source`` and ``source_coordinate`` are used).
    The coordinate is not checked here: it is resolved and checked against the model when the
    intervention runs.

    Args:
        coordinate: where to intervene (a `iit.Coordinate`, or a coordinate of a
            subclass's coordinate system, resolved by `iit.Interventionable.resolve`).

    Raises:
        TypeError: constructing the abstract base class itself (subclass it and override
            `forward`).
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

    def basis_use(self) -> BasisUse | None:
        """The basis this intervention writes in and the columns it occupies (``None``: it
        writes units of its slot directly). Learned rotations and featurizer interventions
        override it; `iit.Alignment.check` uses it for the width and overlap checks."""
        return None

    def where(self, rows: Tensor) -> BoundIntervention:
        """This intervention applied only to the rows where ``rows`` (bool ``[batch]``) is True.

        Args:
            rows: bool ``[batch]``: True where the intervention applies.

        Returns:
            A `BoundIntervention` to pass to `iit.Interventionable.intervene` in place of
            this intervention.

        Raises:
            InterventionError: ``rows`` is not a 1-D bool tensor.
        """
        return BoundIntervention(self, rows=rows)

    def from_source(self, source: int) -> BoundIntervention:
        """This intervention reading source slot ``source`` in this call (for a trained
        intervention shared between source slots).

        Args:
            source: index of the source (in the call's ``sources`` list) to read from.

        Returns:
            A `BoundIntervention` to pass to `iit.Interventionable.intervene`.

        Raises:
            InterventionError: this kind reads no source, or ``source`` is not an int ``>= 0``.
        """
        return BoundIntervention(self, source=source)

    def extra_repr(self) -> str:
        """The coordinate (and source slot) shown in the module's ``repr``."""
        src = "" if self.source is None else f", source={self.source}"
        return f"at={self.where_text()}{src}"

    def where_text(self) -> str:
        """The coordinate as text, for messages."""
        c = self.coordinate
        return c.describe() if hasattr(c, "describe") else repr(c)


class BoundIntervention:
    """An intervention bound to rows of the batch and / or to a source slot for one call.

    Made by `Intervention.where` and `Intervention.from_source`; not a module (the
    intervention's parameters stay where they are registered), so one trained intervention can
    serve different rows and sources in every batch.

    Args:
        intervention: the intervention.
        rows: bool ``[batch]``: the rows where it applies (``None``: all rows).
        source: the source slot it reads (``None``: the intervention's own ``source``).

    Raises:
        InterventionError: ``rows`` is not a 1-D bool tensor; ``source`` is given for an
            intervention that reads no source, or is not an int ``>= 0``.

    Examples:
        >>> import torch
        >>> from iit import Coordinate, Interchange
        >>> swap = Interchange(Coordinate("0"))
        >>> swap.where(torch.tensor([True, False, True])).from_source(1)
        BoundIntervention(Interchange(at=0.output, source=0), rows=2/3, source=1)
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
        """Also restrict to ``rows`` (combined with any earlier restriction by logical and).

        Args:
            rows: bool ``[batch]``: True where the intervention applies.

        Returns:
            A new `BoundIntervention`.

        Raises:
            InterventionError: ``rows`` is not a 1-D bool tensor.
        """
        combined = rows if self.rows is None else self.rows & rows
        return BoundIntervention(self.intervention, combined, self.source)

    def from_source(self, source: int) -> BoundIntervention:
        """Read source slot ``source`` instead.

        Args:
            source: index of the source (in the call's ``sources`` list) to read from.

        Returns:
            A new `BoundIntervention`.

        Raises:
            InterventionError: ``source`` is not an int ``>= 0``, or the intervention reads no
                source.
        """
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

    Raises:
        InterventionError: ``source`` is not an int ``>= 0``.

    Examples:
        Swap the first hidden unit of a base run for that of a source run, by hand:
        ``h = 2 * x``, so base ``[1, 1]`` and source ``[3, 5]`` give ``h = [6, 2]`` after the
        swap and the sum ``8``.

        >>> import torch
        >>> from torch import nn
        >>> from iit import Coordinate, Index, Interventionable
        >>> double = nn.Linear(2, 2, bias=False)
        >>> _ = double.weight.data.copy_(2 * torch.eye(2))
        >>> sum_ = nn.Linear(2, 1, bias=False)
        >>> _ = sum_.weight.data.fill_(1.0)
        >>> net = Interventionable(nn.Sequential(double, sum_))
        >>> unit0 = Coordinate("0", Index.dims(0, 1))
        >>> base, source = torch.tensor([[1.0, 1.0]]), torch.tensor([[3.0, 5.0]])
        >>> net.collect(source, [unit0])[unit0].tolist()
        [[6.0]]
        >>> net.intervene(base, [Interchange(unit0)], [source]).tolist()
        [[8.0]]
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
    """Set the values at the coordinate to zero.

    Args:
        coordinate: where (checked when the intervention runs).

    Raises:
        TypeError: a missing or extra argument (the coordinate itself is checked against the
            model when the intervention runs).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from iit import Coordinate, Index, Interventionable
        >>> net = Interventionable(nn.Sequential(nn.Identity(), nn.Identity()))
        >>> x = torch.tensor([[1.0, 2.0, 3.0]])
        >>> net.intervene(x, [ZeroAblation(Coordinate("0", Index.dims(1, 3)))])
        tensor([[1., 0., 0.]])
    """

    def forward(self, base: Tensor, source: Tensor | None) -> Tensor:
        """Zeros shaped like ``base`` (``[batch, ...]``); ``source`` is unused."""
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

    Raises:
        ArgumentTypeError: ``value`` is not a tensor.
        InterventionShapeError: when it runs, ``value`` does not have the shape of one row of
            the slot, the hidden state's dtype, or holds no data (meta device).
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
        """The constant repeated over the rows of ``base`` (``[batch, ...]``).

        Args:
            base: the base values at the slot, ``[batch, ...]``.
            source: unused.

        Raises:
            InterventionShapeError: the constant's shape is not one row of ``base``, its dtype
                is not ``base``'s, or it is on the meta device.
        """
        return _per_row_value(self.value, base, "constant", self.where_text())


class MeanAblation(ConstantAblation):
    """Set the values at the coordinate to their mean over a dataset.

    Build it with `fit`, which collects the values over reference inputs; the sum is
    accumulated in float32 for half-precision models (float64 stays float64) and the mean
    stored in the values' own dtype.

    Args:
        coordinate: where.
        value: the mean, shaped like ONE row of the slot (`fit` computes it).

    Raises:
        ArgumentTypeError: ``value`` is not a tensor.

    Examples:
        The mean of the rows ``[0, 2]`` and ``[4, 6]`` is ``[2, 4]``; it replaces every row:

        >>> import torch
        >>> from torch import nn
        >>> from iit import Coordinate, Interventionable
        >>> net = Interventionable(nn.Sequential(nn.Identity(), nn.Identity()))
        >>> mean = MeanAblation.fit(net, torch.tensor([[0.0, 2.0], [4.0, 6.0]]), Coordinate("0"))
        >>> mean.value
        tensor([2., 4.])
        >>> net.intervene(torch.tensor([[9.0, 9.0], [1.0, 1.0]]), [mean])
        tensor([[2., 4.],
                [2., 4.]])
    """

    @classmethod
    def fit(cls, model: Any, inputs: Any, coordinate: Any) -> MeanAblation:
        """Mean of the coordinate's values over the rows of ``inputs``.

        Args:
            model: an `iit.Interventionable`.
            inputs: reference inputs: one batch (a tensor, a dict of keyword arguments or a
                tuple of positional arguments) or any iterable of batches (a list, a
                ``torch.utils.data.DataLoader``, a generator). A batch that a ``DataLoader``
                yields as a list (``TensorDataset``) is used as positional arguments.
            coordinate: where.

        Returns:
            A `MeanAblation` whose constant is the mean row (one row of the slot's shape).

        Raises:
            ArgumentTypeError: ``inputs`` is neither a batch nor an iterable of batches.
            InterventionError: if ``inputs`` holds no rows (an empty iterable).
            CoordinateError: ``coordinate`` names no hidden state of the model.
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

    Raises:
        ArgumentTypeError: ``pool`` is not a tensor.
        InterventionError: ``pool`` is empty or a 0-d tensor.
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
        """One random pool row per row of ``base`` (``[batch, ...]``, on ``base``'s device).

        Args:
            base: the base values at the slot, ``[batch, ...]``.
            source: unused.

        Raises:
            InterventionShapeError: pool rows and slot rows differ in shape or dtype.
        """
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

    Raises:
        ArgumentTypeError: ``vector`` is not a tensor.
        InterventionShapeError: when it runs, ``vector`` does not have the shape of one row of
            the slot or the hidden state's dtype.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from iit import Coordinate, Interventionable
        >>> net = Interventionable(nn.Sequential(nn.Identity(), nn.Identity()))
        >>> steer = Addition(Coordinate("0"), torch.tensor([1.0, -1.0]), scale=0.5)
        >>> net.intervene(torch.zeros(2, 2), [steer])
        tensor([[ 0.5000, -0.5000],
                [ 0.5000, -0.5000]])
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
        """``base + scale * vector`` (``[batch, ...]``).

        Args:
            base: the base values at the slot, ``[batch, ...]``.
            source: unused.

        Raises:
            InterventionShapeError: the vector's shape is not one row of ``base`` or its dtype
                is not ``base``'s.
        """
        return base + self.scale * _per_row_value(self.vector, base, "steering vector", self.where_text())
