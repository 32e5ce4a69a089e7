"""Learned interventions: distributed interchange in a rotated basis (DAS), its low-rank form and
Boundless DAS with a learned soft boundary.

For base values ``b`` and source values ``s`` (``[batch, ..., d]``, rotation over the last axis)
and an orthogonal ``R`` (``[d, d]``, row-vector convention: rotated = ``h @ R``), DAS writes

```text
R^T-rotate-back( (1 - m) * (b @ R) + m * (s @ R) ) = b + ((s - b) @ R * m) @ R^T
```

with ``m`` the 0/1 mask of the rotated dims given to the variable (or, for Boundless DAS, a soft
sigmoid mask). The right-hand form is what is computed: it is the same map, cheaper (only the
masked columns of ``R`` are used) and exact on the unmasked part. ``R`` is materialised once per
forward (the orthogonal parametrisation is evaluated once).

Dtype: the arithmetic runs in the wider of the rotation's dtype and the hidden state's dtype
(``torch.promote_types``; autocast disabled), then the result is cast back to the hidden state's
dtype. With the default float32 rotation, a bfloat16 / float16 model is rotated in float32 (one
rounding to the half type at the end: the written values differ from the half-precision hand
computation by at most one half-type ulp), a float32 model in float32 and a float64 model in
float64 (the float32 rotation entries are widened exactly; nothing is computed in float32). The
output is on the hidden state's device (the rotation is moved there for the product), so a model
split across devices by accelerate needs no extra step.

Several variables can share one `Rotation` with disjoint ``dims`` ranges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import orthogonal

from iit.errors import ArgumentTypeError, InterventionError, InterventionShapeError
from iit.interventions import BasisUse, Intervention
from iit.trainable import TrainingProgress

__all__ = [
    "BOUNDARY_RANGE",
    "Rotation",
    "RotatedInterchange",
    "LowRankRotatedInterchange",
    "BoundlessRotatedInterchange",
    "TemperatureSchedule",
    "interchange_in_basis",
]


# The valid range of a Boundless DAS boundary (a fraction of the rotated width).
BOUNDARY_RANGE = (1e-3, 1.0)


class Rotation(nn.Module):
    """A trainable matrix with orthonormal columns, ``[d, k]`` (``k = d``: a rotation),
    parametrised with ``torch.nn.utils.parametrizations.orthogonal`` and initialised with
    ``nn.init.orthogonal_``.

    Args:
        d: width of the hidden state it rotates.
        k: number of columns (default ``d``).
        dtype: storage dtype (default float32, also for half-precision models: the rotation
            then computes in float32 and casts the written values back; float64 for gradchecks
            or float64 models, which are rotated in float64 in any case).
        generator: optional RNG for the initialisation.

    Raises:
        ArgumentTypeError: ``d`` or ``k`` is not an int.
        InterventionError: ``not 1 <= k <= d``.

    Examples:
        The columns stay orthonormal (``W^T W = I``) however the parameters are trained:

        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> basis = Rotation(6, 2)
        >>> w = basis.matrix()
        >>> w.shape
        torch.Size([6, 2])
        >>> torch.allclose(w.T @ w, torch.eye(2), atol=1e-6)
        True
        >>> r = Rotation(4).matrix()
        >>> torch.allclose(r @ r.T, torch.eye(4), atol=1e-6)
        True
    """

    def __init__(
        self,
        d: int,
        k: int | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        k = d if k is None else k
        for name, value in (("d", d), ("k", k)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ArgumentTypeError(f"Rotation: {name} must be an int, got {type(value).__name__} {value!r}")
        if not 1 <= k <= d:
            raise InterventionError(
                f"Rotation needs 1 <= k <= d, got d={d}, k={k}; d is the width of the hidden state it "
                "rotates and k (default d) the number of columns"
            )
        weight = torch.empty(d, k, dtype=dtype)
        nn.init.orthogonal_(weight, generator=generator)
        self.weight = nn.Parameter(weight)
        orthogonal(self, "weight")
        self.d, self.k = d, k

    def matrix(self) -> Tensor:
        """The current matrix ``[d, k]`` (evaluates the parametrisation once)."""
        return self.weight

    def extra_repr(self) -> str:
        """``d`` and ``k``, shown in the module's ``repr``."""
        return f"d={self.d}, k={self.k}"


def interchange_in_basis(
    base: Tensor,
    source: Tensor,
    basis: Callable[[], Tensor],
    columns: slice | list[int] | None = None,
    mask: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """DAS's write, the one implementation used by every rotated interchange (the
    `iit.learned` classes and `iit.featurizers.RotationFeaturizer`):
    ``b + (((s - b) @ C) * mask) @ C^T`` with ``C = basis()[:, columns]``.

    Computed in ``promote_types(w.dtype, base.dtype)`` with autocast disabled, with ``w`` and
    ``source`` moved to ``base``'s device; returned in ``base``'s dtype.

    Args:
        base: the base values ``[batch, ..., d]`` (shapes are checked by the callers).
        source: the source values, shaped like ``base``.
        basis: materialises the basis ``[d, k]`` (orthonormal columns), e.g.
            ``Rotation.matrix``; called once, with autocast disabled.
        columns: the columns interchanged (default: all ``k``).
        mask: ``mask(w_promoted)`` -> ``[j]`` weights of the interchanged columns (Boundless DAS).

    Returns:
        ``[batch, ..., d]`` in ``base.dtype`` on ``base.device``.

    Raises:
        RuntimeError: (from torch) ``source`` or the basis do not fit ``base``'s last axis.

    Examples:
        With the identity basis, interchanging column 0 copies the source's first unit:

        >>> import torch
        >>> base, source = torch.tensor([[1.0, 2.0]]), torch.tensor([[5.0, 7.0]])
        >>> interchange_in_basis(base, source, lambda: torch.eye(2), columns=[0])
        tensor([[5., 2.]])
    """
    with torch.autocast(device_type=base.device.type, enabled=False):
        w = basis()  # [d, k], outside autocast
        dtype = torch.promote_types(w.dtype, base.dtype)  # see the module docstring
        w = w.to(base.device, dtype)
        cols = w if columns is None else w[:, columns]  # [d, j]
        b = base.to(dtype)
        delta = (source.to(base.device, dtype) - b) @ cols  # [..., j]
        if mask is not None:
            delta = delta * mask(w)
        out = b + delta @ cols.T  # [..., d]
    return out.to(base.dtype)


class _RotatedBase(Intervention):
    """Shared forward: ``b + (((s - b) @ W) * mask) @ W^T`` over the last axis."""

    needs_source: ClassVar[bool] = True

    def __init__(self, coordinate: Any, rotation: Rotation, source: int, source_coordinate: Any) -> None:
        super().__init__(coordinate)
        if isinstance(source, bool) or not isinstance(source, int) or source < 0:
            raise InterventionError(f"source must be a source index >= 0, got {source!r}")
        self.rotation = rotation
        self.source = source
        self.source_coordinate = coordinate if source_coordinate is None else source_coordinate

    def _columns(self) -> slice | None:
        return None

    def basis_use(self) -> BasisUse:
        """The shared `Rotation` and the rotated dims written (all ``k`` unless
        `RotatedInterchange`; Boundless DAS: all ``d``, since its boundary can grow)."""
        cols = self._columns() or slice(0, self.rotation.k)
        return BasisUse(self.rotation, frozenset(range(cols.start, cols.stop)), self.rotation.d, "rotated dims")

    _mask: Callable[[Tensor], Tensor] | None = None

    def forward(self, base: Tensor, source: Tensor | None) -> Tensor:
        """``base``, ``source``: ``[batch, ..., d]``; returns ``[batch, ..., d]`` in base's dtype
        and on base's device, computed in ``promote_types(rotation dtype, base dtype)`` (float32
        for a half-precision model with the default float32 rotation, float64 for a float64 model).

        Args:
            base: the base values ``[batch, ..., d]``.
            source: the source values, shaped like ``base``.

        Raises:
            InterventionError: no source values were given.
            InterventionShapeError: last axis is not ``d``, or base / source shapes differ.
        """
        if source is None:
            raise InterventionError(f"{type(self).__name__} at {self.where_text()} needs source values")
        d = self.rotation.d
        if base.shape[-1] != d or source.shape != base.shape:
            raise InterventionShapeError(
                f"{type(self).__name__} at {self.where_text()}: rotation is over d={d} but the base "
                f"values are {tuple(base.shape)} and the source values {tuple(source.shape)}; select "
                f"a slot whose last axis has {d} entries"
            )
        # the rotation is materialised once per forward, outside autocast
        return interchange_in_basis(base, source, self.rotation.matrix, self._columns(), self._mask)


class RotatedInterchange(_RotatedBase):
    """DAS with a full ``d x d`` rotation: interchange rotated dims ``[start, stop)``.

    Computes in ``promote_types(rotation dtype, hidden dtype)`` and writes in the hidden state's
    dtype: float32 for a half-precision model with the default float32 rotation (cast back once),
    float64 for a float64 model (see the module docstring).

    Args:
        coordinate: where (the slot's last axis has ``d`` entries).
        rotation: a `Rotation` (shared between variables with disjoint ``dims``) or the
            width ``d`` to make a new one.
        dims: ``(start, stop)`` rotated dims given to the variable (``(0, k)``: the first k).
        source: source slot.
        source_coordinate: where to read in the source run (default: ``coordinate``).

    Raises:
        ArgumentTypeError: ``rotation`` is neither a `Rotation` nor an int.
        InterventionError: a non-square rotation, ``dims`` outside ``[0, d)``, or ``source`` not
            an int ``>= 0``.

    Examples:
        >>> import torch
        >>> from iit import Coordinate
        >>> _ = torch.manual_seed(0)
        >>> shared = Rotation(8)
        >>> x_part = RotatedInterchange(Coordinate("0"), shared, (0, 2))
        >>> y_part = RotatedInterchange(Coordinate("0"), shared, (2, 5), source=1)
        >>> x_part.basis_use().describe(), y_part.basis_use().describe()
        ('rotated dims [0, 2)', 'rotated dims [2, 5)')
    """

    def __init__(
        self,
        coordinate: Any,
        rotation: Rotation | int,
        dims: tuple[int, int],
        *,
        source: int = 0,
        source_coordinate: Any = None,
    ) -> None:
        rotation = _as_rotation(rotation, "RotatedInterchange")
        if rotation.k != rotation.d:
            raise InterventionError(
                f"RotatedInterchange needs a square rotation, got d={rotation.d}, k={rotation.k}; "
                "use LowRankRotatedInterchange for a d x k basis"
            )
        if (
            not isinstance(dims, (tuple, list))
            or len(dims) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) for v in dims)
        ):
            raise InterventionError(f"RotatedInterchange: dims must be a pair of ints (start, stop), got {dims!r}")
        start, stop = dims
        if not 0 <= start < stop <= rotation.d:
            raise InterventionError(
                f"RotatedInterchange: dims must satisfy 0 <= start < stop <= d={rotation.d}, got {tuple(dims)}; "
                f"valid rotated dims are 0..{rotation.d}"
            )
        super().__init__(coordinate, rotation, source, source_coordinate)
        self.dims = (int(start), int(stop))

    def _columns(self) -> slice:
        return slice(self.dims[0], self.dims[1])

    def extra_repr(self) -> str:
        """The coordinate, source slot and rotated ``dims``, shown in the module's ``repr``."""
        return f"{super().extra_repr()}, dims={self.dims}"


class LowRankRotatedInterchange(_RotatedBase):
    """DAS with a ``d x k`` orthonormal basis: ``b + (s - b) @ W @ W^T``.

    Computes in ``promote_types(rotation dtype, hidden dtype)`` and writes in the hidden state's
    dtype: float32 for a half-precision model with the default float32 rotation (cast back once),
    float64 for a float64 model (see the module docstring).

    Args:
        coordinate: where.
        rotation: a `Rotation` with ``k`` columns, or the width ``d`` (then ``k`` is needed).
        k: basis size when ``rotation`` is an int.
        source: source slot.
        source_coordinate: where to read in the source run (default: ``coordinate``).

    Raises:
        ArgumentTypeError: ``rotation`` is neither a `Rotation` nor an int.
        InterventionError: ``rotation`` is an int and ``k`` is missing, ``k`` disagrees with the
            given `Rotation`, or ``source`` is not an int ``>= 0``.
    """

    def __init__(
        self,
        coordinate: Any,
        rotation: Rotation | int,
        k: int | None = None,
        *,
        source: int = 0,
        source_coordinate: Any = None,
    ) -> None:
        if isinstance(rotation, int) and not isinstance(rotation, bool):
            if k is None:
                raise InterventionError("LowRankRotatedInterchange(coordinate, d, k) needs k, the basis size")
            rotation = Rotation(rotation, k)
        elif k is not None and getattr(rotation, "k", k) != k:
            raise InterventionError(
                f"LowRankRotatedInterchange: k={k} but the given Rotation has k={rotation.k}; pass one of them"
            )
        super().__init__(coordinate, _as_rotation(rotation, "LowRankRotatedInterchange"), source, source_coordinate)


class BoundlessRotatedInterchange(_RotatedBase):
    """Boundless DAS: a full rotation and a learned soft boundary ``b`` in ``[1e-3, 1]``;
    rotated dim ``j`` is interchanged with weight ``sigmoid(j / t) * sigmoid((b * d - j) / t)``
    at temperature ``t`` (anneal it with `TemperatureSchedule`).

    Computes (mask included) in ``promote_types(rotation dtype, hidden dtype)`` and writes in the
    hidden state's dtype, as `RotatedInterchange`.

    Args:
        coordinate: where.
        rotation: a square `Rotation` or the width ``d``.
        boundary: initial boundary fraction (default 0.5).
        temperature: initial temperature (default 50.0).
        source: source slot.
        source_coordinate: where to read in the source run (default: ``coordinate``).

    Raises:
        ArgumentTypeError: ``rotation`` is neither a `Rotation` nor an int.
        InterventionError: a non-square rotation, ``boundary`` outside `BOUNDARY_RANGE`, a
            temperature ``<= 0``, or ``source`` not an int ``>= 0``.
    """

    def __init__(
        self,
        coordinate: Any,
        rotation: Rotation | int,
        *,
        boundary: float = 0.5,
        temperature: float = 50.0,
        source: int = 0,
        source_coordinate: Any = None,
    ) -> None:
        rotation = _as_rotation(rotation, "BoundlessRotatedInterchange")
        if rotation.k != rotation.d:
            raise InterventionError(
                f"BoundlessRotatedInterchange needs a square rotation, got d={rotation.d}, k={rotation.k}"
            )
        lo, hi = BOUNDARY_RANGE
        if not lo <= float(boundary) <= hi:
            raise InterventionError(
                f"BoundlessRotatedInterchange: boundary={boundary} is outside its range [{lo}, {hi}] "
                "(the fraction of rotated dims interchanged); pass a value inside it"
            )
        if not float(temperature) > 0:
            raise InterventionError(f"BoundlessRotatedInterchange: temperature must be > 0, got {temperature}")
        super().__init__(coordinate, rotation, source, source_coordinate)
        self.boundary = nn.Parameter(torch.tensor(float(boundary), dtype=rotation.weight.dtype))
        self.register_buffer("temperature", torch.tensor(float(temperature), dtype=rotation.weight.dtype))

    def set_temperature(self, value: float) -> None:
        """Set the mask temperature (> 0).

        Raises:
            InterventionError: ``value <= 0``.
        """
        if not value > 0:
            raise InterventionError(f"temperature must be > 0, got {value}")
        self.temperature.fill_(value)

    def check_ranges(self, where: str = "") -> None:
        """Raise unless the boundary lies in `BOUNDARY_RANGE` and the temperature is > 0
        (one device sync; called by `iit.Alignment.check` and before every DAS step,
        never inside the forward).

        Raises:
            InterventionError: naming the value, its range and the fix.
        """
        lo, hi = BOUNDARY_RANGE
        value = float(self.boundary.detach())
        prefix = f"{where}: " if where else ""
        if not lo <= value <= hi:
            raise InterventionError(
                f"{prefix}BoundlessRotatedInterchange at {self.where_text()} has boundary {value:g}, "
                f"outside its range [{lo}, {hi}]; it is not clamped silently: set it inside the range "
                "(das_step projects it back after every optimizer step)"
            )
        if not float(self.temperature) > 0:
            raise InterventionError(
                f"{prefix}BoundlessRotatedInterchange at {self.where_text()} has temperature "
                f"{float(self.temperature):g}; it must be > 0"
            )

    def mask(self, dtype: torch.dtype | None = None) -> Tensor:
        """The soft mask over rotated dims, ``[d]``, computed in ``dtype`` (default: the
        boundary's dtype; the forward passes its compute dtype, so a float64 model gets a
        float64 mask from a float32 boundary).

        Args:
            dtype: the dtype to compute the mask in.
        """
        dtype = self.boundary.dtype if dtype is None else dtype
        d = self.rotation.d
        j = torch.arange(d, dtype=dtype, device=self.boundary.device)
        b = self.boundary.clamp(*BOUNDARY_RANGE).to(dtype)  # a no-op for checked values; keeps gradients finite
        t = self.temperature.to(dtype)
        return torch.sigmoid(j / t) * torch.sigmoid((b * d - j) / t)

    def _mask(self, w: Tensor) -> Tensor:
        return self.mask(w.dtype).to(w.device)

    def boundary_penalty(self) -> Tensor:
        """The boundary size ``b`` (clamped), added to the loss to keep the subspace small.

        Returns:
            A 0-d tensor ``[]`` (differentiable in the boundary).
        """
        return self.boundary.clamp(*BOUNDARY_RANGE)

    # the training protocol (iit.trainable): what Boundless DAS needs from a trainer
    def training_regularizer(self) -> Tensor:
        """The boundary size (`boundary_penalty`), added to the loss.

        Returns:
            A 0-d tensor ``[]``.
        """
        return self.boundary_penalty()

    def on_training_step(self, progress: TrainingProgress) -> None:
        """Anneal the temperature linearly over the run (``progress.temperature``)."""
        self.set_temperature(TemperatureSchedule(progress.total_steps, *progress.temperature).value(progress.step))

    def after_optimizer_step(self) -> None:
        """Projected step: keep the boundary in ``[1e-3, 1]`` where its gradient is alive."""
        self.boundary.clamp_(*BOUNDARY_RANGE)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The boundary trains at the trainer's ``boundary_lr``."""
        return {"boundary": [self.boundary]}


def _as_rotation(rotation: Rotation | int, who: str) -> Rotation:
    if isinstance(rotation, int) and not isinstance(rotation, bool):
        return Rotation(rotation)
    if not isinstance(rotation, Rotation):
        raise ArgumentTypeError(
            f"{who}: rotation must be an iit.Rotation or the width d (an int), got {type(rotation).__name__}"
        )
    return rotation


@dataclass(frozen=True)
class TemperatureSchedule:
    """Linear temperature annealing ``start -> end`` over ``steps`` optimizer steps (Boundless
    DAS: 50 -> 0.1).

    Args:
        steps: number of optimizer steps of the run.
        start: temperature at step 0.
        end: temperature at the last step.

    Raises:
        InterventionError: non-positive temperatures or ``steps < 1``.
    """

    steps: int
    start: float = 50.0
    end: float = 0.1

    def __post_init__(self) -> None:
        if self.steps < 1 or self.start <= 0 or self.end <= 0:
            raise InterventionError(
                f"TemperatureSchedule needs steps >= 1 and positive temperatures, got {self}"
            )

    def value(self, step: int) -> float:
        """Temperature at optimizer step ``step`` (clamped to ``[0, steps - 1]``)."""
        if self.steps == 1:
            return self.end
        frac = min(max(step, 0), self.steps - 1) / (self.steps - 1)
        return self.start + (self.end - self.start) * frac

    def apply(self, interventions: Iterable[Intervention], step: int) -> None:
        """Set the temperature of every `BoundlessRotatedInterchange` for ``step``."""
        for iv in interventions:
            if isinstance(iv, BoundlessRotatedInterchange):
                iv.set_temperature(self.value(step))
