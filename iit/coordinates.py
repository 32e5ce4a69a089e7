"""The generic coordinate system: which part of which hidden state of a model.

A `Coordinate` names

* a module by its path in ``model.named_modules()`` (``""`` is the wrapped model itself),
* whether its *output* or its *input* is meant (``io``),
* which element of that output / input holds the tensor (``output``: a tuple position, a dict or
  ``ModelOutput`` key, or ``None`` when the value is a tensor itself; for inputs ``None`` means
  the first positional argument and a string names a keyword argument), and
* an `Index` into that tensor, whose axis 0 is always the batch.

Indices are values built by the constructors of `Index`:

```python
Index.all()                                 # the whole tensor
Index.dims(0, 16)                           # last axis, [0, 16)
Index.box((2, 0), (5, 15))                  # rectangle between two corners (inclusive)
Index.slices(slice(None), slice(0, 16))     # one selector per non-batch axis
Index.positions([3, 7], dims=(0, 16))       # the same positions in every row
Index.positions(torch.tensor([[3], [5]]))   # per-row positions, [batch, k]
Index.mask(bool_tensor)                     # a boolean mask (per row or shared)
```

Reading an index gives the selected values (``[batch, ...]``); writing returns a *new* tensor
(``slice_scatter`` / ``index_copy`` / ``scatter`` / ``masked_scatter``, never an in-place write
into a tensor that autograd saved), so gradients flow to both the written values and the
untouched rest of the hidden state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from iit.errors import ArgumentTypeError, CoordinateError, InterventionShapeError

__all__ = ["Coordinate", "Index", "AxisSelector"]

# One axis selector: a slice, a static list of positions shared by every row, or per-row
# positions given as a LongTensor [batch, k].
AxisSelector = slice | tuple[int, ...] | Tensor


def _slice_key(s: slice) -> tuple:
    return ("slice", s.start, s.stop, s.step)


@dataclass(frozen=True, eq=False)
class Index:
    """Which entries of a hidden state ``[batch, *rest]`` a coordinate covers.

    Do not build it directly: use `all`, `dims`, `box`, `slices`,
    `positions` or `mask`.

    Attributes:
        selectors: ``{axis: selector}`` for non-batch axes (1-based, as in the tensor); axes
            not named are taken whole. Selectors are applied in increasing axis order.
        boolean_mask: a bool tensor, shaped like the hidden state (one mask per row) or like
            ``rest`` (the same mask in every row); exclusive with ``selectors``.

    Raises:
        TypeError: an unknown field (the constructors check their arguments and raise
            `CoordinateError` / `ArgumentTypeError`).

    Examples:
        >>> import torch
        >>> x = torch.arange(24).reshape(1, 4, 6)              # [batch, seq, d]
        >>> Index.dims(0, 2).read(x)[0]
        tensor([[ 0,  1],
                [ 6,  7],
                [12, 13],
                [18, 19]])
        >>> Index.box((1, 2), (2, 3)).read(x)[0]               # x[:, 1:3, 2:4]
        tensor([[ 8,  9],
                [14, 15]])
        >>> Index.positions([3], dims=(4, 6)).read(x)
        tensor([[[22, 23]]])
        >>> Index.positions(torch.tensor([[0], [3]])).read(torch.cat([x, x]))[:, 0, :2]
        tensor([[ 0,  1],
                [18, 19]])
        >>> Index.dims(0, 2).write(x, torch.zeros(1, 4, 2, dtype=x.dtype))[0, 1]
        tensor([ 0,  0,  8,  9, 10, 11])
    """

    selectors: tuple[tuple[int, AxisSelector], ...] = ()
    boolean_mask: Tensor | None = None
    _key: tuple = field(default=(), repr=False)

    # ----------------------------------------------------------------- constructors
    @staticmethod
    def all() -> Index:
        """The whole hidden state.

        Returns:
            An `Index` covering ``[batch, *rest]`` entirely.
        """
        return Index(_key=("all",))

    @staticmethod
    def dims(start: int, stop: int) -> Index:
        """Entries ``[start, stop)`` of the last axis (hidden units), for every position.

        Args:
            start: first unit (``>= 0``).
            stop: one past the last unit.

        Returns:
            An `Index`; values read are ``[batch, ..., stop - start]``.

        Raises:
            CoordinateError: non-int bounds or not ``0 <= start < stop``.
        """
        _require_ints("Index.dims", start=start, stop=stop)
        if not 0 <= start < stop:
            raise CoordinateError(f"Index.dims needs 0 <= start < stop, got start={start}, stop={stop}")
        return Index(selectors=((-1, slice(start, stop)),), _key=("dims", start, stop))

    @staticmethod
    def slices(*per_axis: slice | int | Sequence[int] | None) -> Index:
        """One selector per non-batch axis, in order: a ``slice``, an ``int``, a list of ints
        (the same for every row), or ``None`` for the whole axis.

        ``Index.slices(slice(None), slice(0, 16))`` on ``[batch, seq, d]`` is ``x[:, :, 0:16]``.
        An ``int`` keeps its axis (length 1), so written values keep the hidden state's rank.
        Negative ``int`` and ``slice`` bounds count from the end of the axis, as in Python;
        entries of a list must be ``>= 0`` (a list is checked for repeats before the axis size
        is known, and ``-1`` and ``size - 1`` would repeat silently).

        Args:
            *per_axis: one selector per non-batch axis, starting at axis 1.

        Returns:
            An `Index`; values read keep the hidden state's rank.

        Raises:
            CoordinateError: a bool or float selector, a slice with a step, a tensor (use
                `positions`), a negative or repeated entry in a list.
        """
        selectors: list[tuple[int, AxisSelector]] = []
        key: list = ["slices"]
        for axis, sel in enumerate(per_axis, start=1):
            if sel is None or (isinstance(sel, slice) and sel == slice(None)):
                key.append(None)
                continue
            if isinstance(sel, bool):
                raise CoordinateError(f"axis {axis}: a selector cannot be a bool")
            if isinstance(sel, float):
                raise CoordinateError(f"axis {axis}: a selector must be an int, a slice or a list of ints, got {sel!r}")
            if isinstance(sel, int):
                sel = slice(sel, sel + 1) if sel != -1 else slice(-1, None)
            if isinstance(sel, slice):
                if sel.step not in (None, 1):
                    raise CoordinateError(f"axis {axis}: slices with a step are not supported, got {sel}")
                selectors.append((axis, sel))
                key.append(_slice_key(sel))
            elif isinstance(sel, Tensor):
                raise CoordinateError(
                    f"axis {axis}: per-row positions go through Index.positions(tensor, axis=...)"
                )
            else:
                if isinstance(sel, (str, bytes)) or not isinstance(sel, Sequence):
                    raise CoordinateError(
                        f"axis {axis}: a selector must be None, an int, a slice or a list of ints, got "
                        f"{type(sel).__name__} {sel!r}"
                    )
                if any(isinstance(p, bool) or not isinstance(p, int) for p in sel):
                    raise CoordinateError(f"axis {axis}: a list selector must hold ints, got {list(sel)!r}")
                positions = tuple(int(p) for p in sel)
                if not positions:
                    raise CoordinateError(f"axis {axis}: a list selector must not be empty")
                if min(positions) < 0:
                    raise CoordinateError(
                        f"axis {axis}: list entries must be >= 0 (counted from the start), got "
                        f"{list(positions)}; for the last entries use an int or a slice, e.g. "
                        "slice(-2, None)"
                    )
                _check_unique(positions, f"axis {axis}")
                selectors.append((axis, positions))
                key.append(("list", positions))
        return Index(selectors=tuple(selectors), _key=tuple(key))

    @staticmethod
    def box(lower: Sequence[int], upper: Sequence[int]) -> Index:
        """A rectangular block between two corners (both included), over the first
        ``len(lower)`` non-batch axes, given as its lowest ("bottom-left") and highest
        ("top-right") corner.

        ``Index.box((2, 0), (5, 15))`` on ``[batch, seq, d]`` is ``x[:, 2:6, 0:16]``.

        Args:
            lower: the lowest corner, one int ``>= 0`` per axis from axis 1.
            upper: the highest corner (included), as long as ``lower``.

        Returns:
            An `Index`; values read are ``[batch, upper[0] - lower[0] + 1, ...]``.

        Raises:
            CoordinateError: corners of different or zero length, or ``not 0 <= lower <= upper``
                on an axis.
        """
        if len(lower) != len(upper) or not lower:
            raise CoordinateError(
                f"Index.box needs two corners of the same non-zero length, got {lower} and {upper}"
            )
        for axis, (lo, hi) in enumerate(zip(lower, upper), start=1):
            if not 0 <= lo <= hi:
                raise CoordinateError(
                    f"Index.box: corner coordinates on axis {axis} must satisfy 0 <= lower <= upper, "
                    f"got lower={lo}, upper={hi}"
                )
        return Index.slices(*(slice(lo, hi + 1) for lo, hi in zip(lower, upper)))

    @staticmethod
    def positions(
        positions: Sequence[int] | Tensor,
        *,
        axis: int = 1,
        dims: tuple[int, int] | None = None,
    ) -> Index:
        """Positions along ``axis`` (default 1, the sequence axis), optionally with a range of
        the last axis.

        Args:
            positions: a list of ints (the same positions in every row) or a LongTensor
                ``[batch, k]`` (row ``i`` uses ``positions[i]``; values read are ``[batch, k, ...]``).
            axis: the axis the positions index (>= 1).
            dims: optional ``(start, stop)`` range of the last axis.

        Returns:
            An `Index`; values read are ``[batch, k, ...]``.

        Raises:
            ArgumentTypeError: ``positions`` is a single int, a string or not a sequence (wrap
                one position in a list).
            CoordinateError: a repeated position in a row, a negative one, a non-int, an empty
                list, ``axis < 1``, a bad ``dims`` range, or a tensor that is not an integer
                ``[batch, k]`` tensor with values (a meta tensor holds none).
        """
        if axis < 1:
            raise CoordinateError(f"Index.positions: axis must be >= 1 (axis 0 is the batch), got {axis}")
        selectors: list[tuple[int, AxisSelector]] = []
        if isinstance(positions, Tensor):
            if positions.device.type == "meta":
                raise CoordinateError(
                    "per-row positions are a meta tensor, which holds no values; give them as a real "
                    "LongTensor [batch, k] (on the CPU; a meta-device model can still be hooked)"
                )
            if positions.dim() != 2 or positions.dtype in (torch.bool,) or positions.is_floating_point():
                raise CoordinateError(
                    "per-row positions must be an integer tensor [batch, k], got "
                    f"{positions.dtype} of shape {tuple(positions.shape)}"
                )
            if (positions < 0).any():
                raise CoordinateError("positions must be non-negative (count from the start)")
            if positions.shape[1] > 1:
                ordered = positions.sort(dim=1).values
                if (ordered[:, 1:] == ordered[:, :-1]).any():
                    raise CoordinateError("a row of per-row positions repeats a position")
            selectors.append((axis, positions.long()))
            key: tuple = ("rowpos", id(positions), axis)
        else:
            if isinstance(positions, (int, str, bytes)) or not isinstance(positions, Sequence):
                raise ArgumentTypeError(
                    f"Index.positions needs a list of ints or a LongTensor [batch, k], got "
                    f"{type(positions).__name__} {positions!r}; wrap one position in a list: [{positions!r}]"
                )
            if any(isinstance(p, bool) or not isinstance(p, int) for p in positions):
                raise CoordinateError(f"positions must be ints, got {list(positions)!r}")
            static = tuple(int(p) for p in positions)
            if not static or min(static) < 0:
                raise CoordinateError(f"positions must be a non-empty list of ints >= 0, got {list(static)}")
            _check_unique(static, "positions")
            selectors.append((axis, static))
            key = ("pos", static, axis)
        if dims is not None:
            start, stop = dims
            if not 0 <= start < stop:
                raise CoordinateError(f"dims needs 0 <= start < stop, got {dims}")
            selectors.append((-1, slice(start, stop)))
            key = key + (("dims", start, stop),)
        return Index(selectors=tuple(selectors), _key=key)

    @staticmethod
    def mask(mask: Tensor) -> Index:
        """Entries where a bool ``mask`` is True. Shaped like the hidden state ``[batch, ...]``
        (a mask per row; values are a flat vector) or like one row ``[...]`` (the same mask in
        every row; values are ``[batch, n_true]``).

        Args:
            mask: a bool tensor ``[batch, ...]`` or ``[...]``.

        Returns:
            An `Index` over the True entries.

        Raises:
            CoordinateError: ``mask`` is not a bool tensor.
        """
        if mask.dtype != torch.bool:
            raise CoordinateError(f"Index.mask needs a bool tensor, got {mask.dtype}")
        return Index(boolean_mask=mask, _key=("mask", id(mask)))

    # ----------------------------------------------------------------- identity
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Index) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    @property
    def is_all(self) -> bool:
        """True when the index covers the whole hidden state."""
        return not self.selectors and self.boolean_mask is None

    @property
    def per_row(self) -> bool:
        """True when the index holds per-row data (positions tensor or a per-row mask) and so
        fits one batch size only."""
        return any(isinstance(s, Tensor) for _, s in self.selectors) or self.boolean_mask is not None

    # ----------------------------------------------------------------- checks
    def check(self, shape: torch.Size, where: str) -> None:
        """Raise `CoordinateError` if this index does not fit a hidden state of ``shape``.

        Args:
            shape: the hidden state's shape ``[batch, *rest]``.
            where: the coordinate as text, to start the message with.

        Raises:
            CoordinateError: a mask of another shape, a selected axis the hidden state lacks, a
                range or position beyond its axis, or per-row positions for another batch size.
        """
        if self.boolean_mask is not None:
            m = self.boolean_mask
            if tuple(m.shape) not in (tuple(shape), tuple(shape[1:])):
                raise CoordinateError(
                    f"{where}: the mask has shape {tuple(m.shape)} but the hidden state is "
                    f"{tuple(shape)}; give a mask of shape {tuple(shape)} (per row) or "
                    f"{tuple(shape[1:])} (shared)"
                )
            return
        for axis, sel in self.selectors:
            ax = axis if axis > 0 else len(shape) + axis
            if not 1 <= ax < len(shape):
                raise CoordinateError(
                    f"{where}: the index selects axis {axis} but the hidden state {tuple(shape)} "
                    f"has non-batch axes 1..{len(shape) - 1}"
                )
            size = shape[ax]
            if isinstance(sel, slice):
                start = sel.start or 0
                stop = size if sel.stop is None else sel.stop
                if start < 0:
                    start += size
                if stop < 0:
                    stop += size
                if not 0 <= start < stop <= size:
                    raise CoordinateError(
                        f"{where}: range [{sel.start}, {sel.stop}) on axis {ax} is out of bounds "
                        f"for size {size} (hidden state {tuple(shape)}); valid is within [0, {size})"
                    )
            elif isinstance(sel, Tensor):
                if sel.shape[0] != shape[0]:
                    raise CoordinateError(
                        f"{where}: per-row positions are given for {sel.shape[0]} rows but the batch "
                        f"has {shape[0]}"
                    )
                if sel.numel() and int(sel.max()) >= size:
                    raise CoordinateError(
                        f"{where}: position {int(sel.max())} is beyond axis {ax} of size {size} "
                        f"(hidden state {tuple(shape)}); valid positions are 0..{size - 1}"
                    )
            else:
                if max(sel) >= size:
                    raise CoordinateError(
                        f"{where}: position {max(sel)} is beyond axis {ax} of size {size} "
                        f"(hidden state {tuple(shape)}); valid positions are 0..{size - 1}"
                    )

    # ----------------------------------------------------------------- read / write
    def read(self, hidden: Tensor) -> Tensor:
        """The selected values of ``hidden`` (``[batch, ...]``; a flat vector for per-row masks).

        Args:
            hidden: the hidden state ``[batch, *rest]`` (the callers check the index against it
                with `check` first).

        Raises:
            RuntimeError: (from torch) a position beyond its axis; `check` reports it clearly
                first (`CoordinateError`). Slices beyond an axis are not detected here: they
                are cut short, as in Python.
        """
        if self.boolean_mask is not None:
            m = self.boolean_mask.to(hidden.device)
            if m.shape == hidden.shape:
                return hidden[m]
            return hidden[:, m]
        out = hidden
        for axis, sel in self.selectors:
            out = _read_axis(out, axis, sel)
        return out

    def write(self, hidden: Tensor, values: Tensor) -> Tensor:
        """A new tensor equal to ``hidden`` with the selected entries replaced by ``values``
        (shaped as `read` returns). Out of place and differentiable in both arguments.

        Args:
            hidden: the hidden state ``[batch, *rest]``.
            values: the new values, ``[batch, ...]`` as `read` returns them.

        Returns:
            A tensor shaped like ``hidden``, ``[batch, *rest]``.

        Raises:
            RuntimeError: (from torch) ``values`` of another shape than `read` returns; the
                hook core checks them first and raises `InterventionShapeError`.
        """
        if self.is_all:
            return values
        if self.boolean_mask is not None:
            m = self.boolean_mask.to(hidden.device)
            if m.shape != hidden.shape:
                m = m.expand_as(hidden)
            return hidden.masked_scatter(m, values)
        return _write_chain(hidden, list(self.selectors), values)


def _require_ints(where: str, **values: object) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise CoordinateError(f"{where}: {name} must be an int, got {type(value).__name__} {value!r}")


def _check_unique(positions: tuple[int, ...], what: str) -> None:
    if len(set(positions)) != len(positions):
        raise CoordinateError(f"{what}: positions must not repeat, got {list(positions)}")


def _read_axis(t: Tensor, axis: int, sel: AxisSelector) -> Tensor:
    ax = axis if axis > 0 else t.dim() + axis
    if isinstance(sel, slice):
        return t[(slice(None),) * ax + (sel,)]
    if isinstance(sel, Tensor):
        return t.gather(ax, _expand_rows(sel.to(t.device), t, ax))
    return t.index_select(ax, torch.tensor(sel, device=t.device))


def _expand_rows(positions: Tensor, t: Tensor, ax: int) -> Tensor:
    """Per-row positions ``[batch, k]`` shaped for ``gather``/``scatter`` along axis ``ax``."""
    shape = [1] * t.dim()
    shape[0], shape[ax] = positions.shape
    target = list(t.shape)
    target[ax] = positions.shape[1]
    return positions.reshape(shape).expand(target)


def _write_axis(t: Tensor, axis: int, sel: AxisSelector, values: Tensor) -> Tensor:
    ax = axis if axis > 0 else t.dim() + axis
    if isinstance(sel, slice):
        start = sel.start or 0
        stop = t.shape[ax] if sel.stop is None else sel.stop
        if start < 0:
            start += t.shape[ax]
        if stop < 0:
            stop += t.shape[ax]
        return t.slice_scatter(values, dim=ax, start=start, end=stop)
    if isinstance(sel, Tensor):
        return t.scatter(ax, _expand_rows(sel.to(t.device), t, ax), values)
    return t.index_copy(ax, torch.tensor(sel, device=t.device), values)


def _write_chain(t: Tensor, selectors: list[tuple[int, AxisSelector]], values: Tensor) -> Tensor:
    axis, sel = selectors[0]
    if len(selectors) == 1:
        return _write_axis(t, axis, sel, values)
    inner = _read_axis(t, axis, sel)
    return _write_axis(t, axis, sel, _write_chain(inner, selectors[1:], values))


Io = Literal["output", "input"]


@dataclass(frozen=True)
class Coordinate:
    """A place in a model's hidden states: module path + which output/input + tensor index.

    Args:
        module: the module's path as in ``model.named_modules()`` (``""``: the whole model).
            An ``nn.Identity`` placed inside a hand-written model as a named anchor for a hidden
            state is addressed the same way.
        index: which entries; see `Index`. Default: the whole tensor.
        output: which element of the module's output holds the tensor (an ``int`` for tuples,
            a ``str`` for dicts / ``ModelOutput``); ``None`` when the output is a tensor. With
            ``io="input"``: ``None`` is the first positional argument, an ``int`` a positional
            argument, a ``str`` an argument by name.
        io: ``"output"`` (a forward hook) or ``"input"`` (a forward pre-hook).
        label: an optional short name used in plots and error messages.

    Raises:
        CoordinateError: ``module`` is not a string, ``io`` is neither ``"output"`` nor
            ``"input"``, or ``index`` is not an `Index`.

    Examples:
        >>> Coordinate("layers.1", Index.dims(0, 4))
        Coordinate(module='layers.1', index=[dims 0:4], output=None, io='output')
        >>> Coordinate("attn", Index.positions([0, 2]), output=0).describe()
        'attn.output[0][axis 1 positions [0, 2]]'
        >>> Coordinate("mlp", io="input").site
        ('mlp', 'input')
    """

    module: str
    index: Index = field(default_factory=Index.all)
    output: int | str | None = None
    io: Io = "output"
    label: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.module, str):
            raise CoordinateError(f"Coordinate.module must be a module path string, got {self.module!r}")
        if self.io not in ("output", "input"):
            raise CoordinateError(f"Coordinate.io must be 'output' or 'input', got {self.io!r}")
        if not isinstance(self.index, Index):
            raise CoordinateError(
                f"Coordinate.index must be an iit.Index (e.g. Index.dims(0, 4)), got {type(self.index).__name__}"
            )

    @property
    def site(self) -> tuple[str, Io]:
        """``(module, io)``: the hook this coordinate needs."""
        return (self.module, self.io)

    def describe(self) -> str:
        """A short human-readable form, e.g. ``layers.1.output[dims 0:4]``."""
        if self.label:
            return self.label
        sel = "" if self.output is None else f"[{self.output!r}]"
        return f"{self.module or '<model>'}.{self.io}{sel}{_describe_index(self.index)}"

    def __repr__(self) -> str:
        return (
            f"Coordinate(module={self.module!r}, index={_describe_index(self.index) or 'all'}, "
            f"output={self.output!r}, io={self.io!r})"
        )


def _describe_index(index: Index) -> str:
    key = index._key
    if not key or key[0] == "all":
        return ""
    if key[0] == "dims":
        return f"[dims {key[1]}:{key[2]}]"
    if key[0] == "mask":
        return "[mask]"
    if key[0] == "pos":
        extra = f", dims {key[3][1]}:{key[3][2]}" if len(key) > 3 else ""
        return f"[axis {key[2]} positions {list(key[1])}{extra}]"
    if key[0] == "rowpos":
        extra = f", dims {key[3][1]}:{key[3][2]}" if len(key) > 3 else ""
        return f"[axis {key[2]} per-row positions{extra}]"
    parts = []
    for axis_key in key[1:]:
        if axis_key is None:
            parts.append(":")
        elif axis_key[0] == "slice":
            parts.append(f"{'' if axis_key[1] is None else axis_key[1]}:{'' if axis_key[2] is None else axis_key[2]}")
        else:
            parts.append(str(list(axis_key[1])))
    return "[" + ", ".join([":"] + parts) + "]"


def check_values(values: Tensor, expected: Tensor, where: str) -> None:
    """Raise `InterventionShapeError` unless ``values`` can be written where ``expected``
    was read: same shape, dtype and device (no silent broadcasting or casting).

    Args:
        values: the values to write, ``[batch, ...]``.
        expected: the values read at the slot, ``[batch, ...]``.
        where: the slot as text, to start the message with.

    Raises:
        InterventionShapeError: shape, dtype or device differ.
    """
    if values.shape != expected.shape:
        raise InterventionShapeError(
            f"{where}: the value written has shape {tuple(values.shape)} but the slot has shape "
            f"{tuple(expected.shape)}; values must match the slot exactly (no broadcasting)"
        )
    if values.dtype != expected.dtype:
        raise InterventionShapeError(
            f"{where}: the value written has dtype {values.dtype} but the hidden state is "
            f"{expected.dtype}; cast it first"
        )
    if values.device != expected.device:
        raise InterventionShapeError(
            f"{where}: the value written is on {values.device} but the hidden state is on "
            f"{expected.device}; move it first"
        )
