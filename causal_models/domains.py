"""Value domains of causal-model variables.

A domain describes the values one variable may take for ONE example: its event ``shape`` (``()`` for
scalars, ``(emb_dim,)`` for entity vectors), its ``dtype`` and which values are allowed. Batched
values are tensors ``[batch, *shape]``.

* `FiniteDomain`: an explicit finite set of scalars (``FiniteDomain.boolean()`` for
  ``{False, True}``).
* `IntegerRange`: the integers ``low <= v < high``.
* `RealDomain`: real tensors of a fixed shape, optionally bounded (entity vectors, prices).

Examples:
    >>> import torch
    >>> IntegerRange(0, 10).contains(torch.tensor([3, 12])).tolist()
    [True, False]
    >>> FiniteDomain.boolean().size
    2
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from causal_models.errors import DomainError, SamplingError

__all__ = ["Domain", "FiniteDomain", "IntegerRange", "RealDomain"]

Scalar = bool | int | float


def _kind(dtype: torch.dtype) -> str:
    """The kind of a dtype: ``"bool"``, ``"int"``, ``"float"`` or ``"complex"``."""
    if dtype == torch.bool:
        return "bool"
    if dtype.is_floating_point:
        return "float"
    if dtype.is_complex:
        return "complex"
    return "int"


class Domain(ABC):
    """Abstract domain: the values one variable takes for one example.

    Subclasses provide ``shape`` (the event shape), `Domain.dtype` (the dtype values are built
    with), ``_contains`` (element-wise membership) and `Domain.sample`; `Domain.contains` and
    `Domain.validate` then work on batches ``[batch, *shape]``.

    Raises:
        TypeError: instantiating `Domain` itself, or a subclass that leaves an abstract method
            undefined.
    """

    shape: tuple[int, ...]

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype:
        """The dtype values are created with (``torch.bool``, ``torch.int64`` or a float dtype)."""

    @property
    def is_finite(self) -> bool:
        """Whether the domain is a finite set (then ``size``, ``values`` and ``index_of`` exist)."""
        return False

    @abstractmethod
    def _contains(self, values: Tensor) -> Tensor:
        """Element-wise membership of ``values`` ``[batch, *shape]`` -> bool ``[batch, *shape]``."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` values uniformly from the domain.

        Args:
            n: Number of values.
            generator: Random generator (default: torch's global one).

        Returns:
            The values ``[n, *shape]`` of `Domain.dtype`.

        Raises:
            SamplingError: the domain has no uniform distribution (an unbounded `RealDomain`).
        """

    def _accepts_kind(self, kind: str) -> bool:
        """Whether values of dtype kind ``kind`` (see ``_kind``) may belong to the domain."""
        return kind == _kind(self.dtype)

    def contains(self, values: Tensor) -> Tensor:
        """Per-row membership of a batch of values.

        A row is a member when every element is allowed (values are compared, whatever the dtype).

        Args:
            values: Values ``[batch, *shape]``.

        Returns:
            bool ``[batch]``.

        Raises:
            DomainError: ``values`` is not a tensor of shape ``[batch, *shape]``.

        Examples:
            >>> import torch
            >>> from causal_models import RealDomain
            >>> values = torch.tensor([[0.5, 0.2], [2.0, 0.0]])
            >>> RealDomain((2,), -1.0, 1.0).contains(values).tolist()
            [True, False]
        """
        self._check_shape(values, "values")
        inside = self._contains(values)
        return inside.reshape(values.shape[0], -1).all(dim=1)

    def _check_shape(self, values: object, name: str) -> None:
        """Raise `DomainError` (naming ``name``) unless ``values`` is ``[batch, *shape]``."""
        if not isinstance(values, Tensor):
            raise DomainError(
                f"{name}: expected a torch.Tensor of shape [batch, *{self.shape}], "
                f"got {type(values).__name__}"
            )
        if values.dim() != 1 + len(self.shape) or tuple(values.shape[1:]) != self.shape:
            expected = "[batch" + "".join(f", {s}" for s in self.shape) + "]"
            raise DomainError(
                f"{name}: expected shape {expected} for {self!r}, got {tuple(values.shape)}"
            )

    def validate(self, values: object, name: str) -> None:
        """Check that ``values`` is a tensor ``[batch, *shape]`` of a fitting dtype, in the domain.

        Args:
            values: Candidate values ``[batch, *shape]``.
            name: How to call the values in the error (e.g. ``"input 'x'"``).

        Raises:
            DomainError: a value that is not a tensor ``[batch, *shape]``, a dtype of another kind,
                or a value outside the domain; the message names ``name``, the expected shape or
                dtype, and the first offending row and value.

        Examples:
            >>> import torch
            >>> from causal_models import IntegerRange
            >>> IntegerRange(0, 10).validate(torch.tensor([3, 12]), "input 'x'")
            Traceback (most recent call last):
            ...
            causal_models.errors.DomainError: input 'x': value 12 (row 1) is outside ...
        """
        self._check_shape(values, name)
        assert isinstance(values, Tensor)
        kind = _kind(values.dtype)
        if not self._accepts_kind(kind):
            raise DomainError(
                f"{name}: dtype {values.dtype} does not fit {self!r} "
                f"(expected a {_kind(self.dtype)} dtype such as {self.dtype})"
            )
        inside = self._contains(values)
        if not bool(inside.all()):
            ok = inside.reshape(values.shape[0], -1).all(dim=1)
            row = int((~ok).nonzero()[0, 0])
            bad = values[row]
            shown = bad.item() if bad.dim() == 0 else bad.tolist()
            raise DomainError(f"{name}: value {shown!r} (row {row}) is outside {self!r}")


@dataclass(frozen=True)
class FiniteDomain(Domain):
    """A finite set of scalar values (all bool, all int, or numbers including floats).

    The dtype follows the values: ``torch.bool`` for bools, ``torch.int64`` for ints,
    ``torch.float32`` when a float is among them.

    Args:
        values: The allowed values, distinct, in the order that `FiniteDomain.index_of` numbers
            them.
        shape: Event shape; always ``()`` (the values are scalars).

    Raises:
        DomainError: ``values`` is empty, has duplicates, holds something other than bools, ints and
            floats, or mixes bools with numbers; or ``shape`` is not ``()``.
        TypeError: an unknown field.

    Examples:
        >>> import torch
        >>> squares = FiniteDomain((1, 4, 9))
        >>> squares.dtype, squares.size
        (torch.int64, 3)
        >>> squares.index_of(torch.tensor([9, 1])).tolist()
        [2, 0]
    """

    values: tuple[Scalar, ...]
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.values) == 0:
            raise DomainError("FiniteDomain needs at least one value, got ()")
        if self.shape != ():
            raise DomainError(f"FiniteDomain holds scalars: shape must be (), got {self.shape}")
        n_bool = sum(isinstance(v, bool) for v in self.values)
        if 0 < n_bool < len(self.values):
            raise DomainError(f"FiniteDomain mixes bools and numbers: {self.values!r}")
        if any(not isinstance(v, int | float) for v in self.values):
            raise DomainError(f"FiniteDomain values must be bool, int or float: {self.values!r}")
        if len(set(self.values)) != len(self.values):
            raise DomainError(f"FiniteDomain values must be distinct: {self.values!r}")

    @classmethod
    def boolean(cls) -> FiniteDomain:
        """The domain ``{False, True}`` (dtype ``torch.bool``).

        Returns:
            ``FiniteDomain((False, True))``; its `FiniteDomain.index_of` maps ``False`` to 0 and
            ``True`` to 1.
        """
        return cls((False, True))

    @property
    def dtype(self) -> torch.dtype:
        """``torch.bool`` for bools, ``torch.int64`` for ints, ``torch.float32`` when a value is a
        float.
        """
        if isinstance(self.values[0], bool):
            return torch.bool
        if all(isinstance(v, int) for v in self.values):
            return torch.int64
        return torch.float32

    @property
    def is_finite(self) -> bool:
        """Always ``True``."""
        return True

    @property
    def size(self) -> int:
        """Number of values."""
        return len(self.values)

    def tensor(self) -> Tensor:
        """The values as a tensor.

        Returns:
            The values ``[size]`` of `FiniteDomain.dtype`, in declaration order.
        """
        return torch.tensor(self.values, dtype=self.dtype)

    def _accepts_kind(self, kind: str) -> bool:
        """A float domain also accepts integer tensors; other domains need their own kind."""
        if self.dtype == torch.float32:
            return kind in ("float", "int")
        return kind == _kind(self.dtype)

    def _contains(self, values: Tensor) -> Tensor:
        """Element-wise membership ``[batch]`` -> bool ``[batch]`` (compared after type promotion).
        """
        table = self.tensor().to(device=values.device)
        if values.dtype == torch.bool or table.dtype == torch.bool:
            values, table = values.to(torch.uint8), table.to(torch.uint8)
        common = torch.promote_types(values.dtype, table.dtype)
        return torch.isin(values.to(common), table.to(common))

    def index_of(self, values: Tensor, check: bool = True) -> Tensor:
        """Position of each value in ``values`` (class labels).

        Args:
            values: Values ``[batch]`` in the domain.
            check: validate ``values`` first (False: values known to be in the domain; a value
                outside it then maps to 0).

        Returns:
            int64 ``[batch]``.

        Raises:
            DomainError: (with ``check``) ``values`` is not a tensor ``[batch]`` of a fitting
                dtype, or a value is not in the domain.
        """
        if check:
            self.validate(values, "values")
        table = self.tensor().to(device=values.device)
        return (values.unsqueeze(-1) == table).to(torch.int64).argmax(dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` values uniformly from the set.

        Args:
            n: Number of values.
            generator: Random generator (default: torch's global one).

        Returns:
            The values ``[n]`` of `FiniteDomain.dtype`.
        """
        idx = torch.randint(0, self.size, (n,), generator=generator)
        return self.tensor()[idx]

    def __repr__(self) -> str:
        if self.values == (False, True):
            return "FiniteDomain.boolean()"
        return f"FiniteDomain({self.values!r})"


@dataclass(frozen=True)
class IntegerRange(Domain):
    """The integers ``low <= v < high`` (scalars, dtype ``torch.int64``).

    Args:
        low: Smallest value.
        high: One past the largest value.
        shape: Event shape; always ``()`` (the values are scalars).

    Raises:
        DomainError: a bound that is not an int, ``high <= low``, or ``shape`` that is not ``()``.
        TypeError: an unknown field.

    Examples:
        >>> import torch
        >>> digits = IntegerRange(0, 10)
        >>> digits.size, digits.is_finite
        (10, True)
        >>> digits.sample(4, torch.Generator().manual_seed(0)).tolist()
        [4, 9, 3, 0]
    """

    low: int
    high: int
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not (isinstance(self.low, int) and isinstance(self.high, int)):
            raise DomainError(f"IntegerRange bounds must be ints, got {self.low!r}, {self.high!r}")
        if self.high <= self.low:
            raise DomainError(
                f"IntegerRange needs low < high, got low={self.low}, high={self.high}"
            )
        if self.shape != ():
            raise DomainError(f"IntegerRange holds scalars: shape must be (), got {self.shape}")

    @property
    def dtype(self) -> torch.dtype:
        """Always ``torch.int64``."""
        return torch.int64

    @property
    def is_finite(self) -> bool:
        """Always ``True``."""
        return True

    @property
    def size(self) -> int:
        """Number of integers in the range."""
        return self.high - self.low

    @property
    def values(self) -> tuple[int, ...]:
        """All integers of the range, ascending."""
        return tuple(range(self.low, self.high))

    def tensor(self) -> Tensor:
        """The values as a tensor.

        Returns:
            int64 ``[size]``: ``low, low + 1, ..., high - 1``.
        """
        return torch.arange(self.low, self.high, dtype=torch.int64)

    def _contains(self, values: Tensor) -> Tensor:
        """Element-wise membership; float values must also be whole numbers."""
        inside = (values >= self.low) & (values < self.high)
        if values.dtype.is_floating_point:
            inside = inside & (values == values.round())
        return inside

    def index_of(self, values: Tensor, check: bool = True) -> Tensor:
        """``values - low`` (class labels).

        Args:
            values: Values ``[batch]`` in the range.
            check: validate ``values`` first (False: values known to be in the range; a value
                outside it then gives an index outside ``0 .. size - 1``).

        Returns:
            int64 ``[batch]``.

        Raises:
            DomainError: (with ``check``) ``values`` is not a tensor ``[batch]`` of a fitting
                dtype, or a value is not in the range.

        Examples:
            >>> import torch
            >>> IntegerRange(3, 6).index_of(torch.tensor([3, 5])).tolist()
            [0, 2]
        """
        if check:
            self.validate(values, "values")
        return values.to(torch.int64) - self.low

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` integers uniformly from the range.

        Args:
            n: Number of values.
            generator: Random generator (default: torch's global one).

        Returns:
            int64 ``[n]``.
        """
        return torch.randint(self.low, self.high, (n,), generator=generator)

    def __repr__(self) -> str:
        return f"IntegerRange({self.low}, {self.high})"


@dataclass(frozen=True)
class RealDomain(Domain):
    """Real tensors of event shape ``shape``, finite, optionally inside ``[low, high]``.

    Args:
        shape: Event shape, e.g. ``()`` for a price, ``(emb_dim,)`` for an entity vector.
        low: Optional inclusive lower bound on every element; `RealDomain.sample` needs both bounds.
        high: Optional inclusive upper bound on every element.
        float_dtype: Dtype values are created with.

    Raises:
        DomainError: a shape entry that is not a positive int, a bound that is not finite,
            ``low > high``, or a ``float_dtype`` that is not a float dtype.
        TypeError: an unknown field.

    Examples:
        >>> import torch
        >>> entity = RealDomain((2,), -1.0, 1.0)
        >>> entity.sample(3, torch.Generator().manual_seed(0)).shape
        torch.Size([3, 2])
    """

    shape: tuple[int, ...] = ()
    low: float | None = None
    high: float | None = None
    float_dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        if any((not isinstance(s, int)) or s < 1 for s in self.shape):
            raise DomainError(f"RealDomain shape must be positive ints, got {self.shape!r}")
        for b in (self.low, self.high):
            if b is not None and not math.isfinite(b):
                raise DomainError(f"RealDomain bounds must be finite, got {b!r}")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise DomainError(f"RealDomain needs low <= high, got {self.low} > {self.high}")
        if not self.float_dtype.is_floating_point:
            raise DomainError(f"RealDomain float_dtype must be floating, got {self.float_dtype}")

    @property
    def dtype(self) -> torch.dtype:
        """The ``float_dtype`` given (``torch.float32`` by default)."""
        return self.float_dtype

    def _contains(self, values: Tensor) -> Tensor:
        """Element-wise: finite and inside the bounds that are set (``NaN`` is never inside)."""
        if self.low is not None and self.high is not None:
            return (values >= self.low) & (values <= self.high)  # False for NaN and +-inf
        inside = torch.isfinite(values)
        if self.low is not None:
            inside = inside & (values >= self.low)
        if self.high is not None:
            inside = inside & (values <= self.high)
        return inside

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` tensors uniformly from ``[low, high]^shape``.

        Args:
            n: Number of values.
            generator: Random generator (default: torch's global one).

        Returns:
            The values ``[n, *shape]`` of ``float_dtype``.

        Raises:
            SamplingError: ``low`` or ``high`` is not set (the domain is unbounded).
        """
        if self.low is None or self.high is None:
            raise SamplingError(
                f"cannot sample uniformly from unbounded {self!r}: give low and high, "
                "or pass your own sampler"
            )
        u = torch.rand((n, *self.shape), generator=generator, dtype=self.float_dtype)
        return self.low + (self.high - self.low) * u

    def __repr__(self) -> str:
        return f"RealDomain(shape={self.shape}, low={self.low}, high={self.high})"
