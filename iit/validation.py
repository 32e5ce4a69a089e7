"""Argument checks shared by the public entry points, run before any forward pass.

Each function raises an `iit.IITError` subclass whose message names the argument, what
was given, what is valid and the fix (usually: wrap one item in a list).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from iit.errors import ArgumentTypeError, NamingError, OutOfRangeError

__all__ = ["require_list", "check_sources", "check_module_name", "check_row_index"]


def _what(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"one tensor of shape {tuple(value.shape)}"
    return f"one {type(value).__name__}"


def _is_coordinate(value: Any) -> bool:
    from iit.coordinates import Coordinate

    return isinstance(value, Coordinate) or type(value).__name__.endswith("Coordinate")


def require_list(value: Any, argument: str, items: str, example: str) -> list[Any]:
    """``value`` as a list: a list, tuple, or any other iterable of items (``dict.values()``, a
    ``range``, a generator, ...); a single item is refused.

    Args:
        value: what the caller passed.
        argument: the argument's name in messages (``"collect: coordinates"``).
        items: what its entries are (``"coordinates"``).
        example: the name of one entry in the fix shown (``"coordinate"``).

    Raises:
        ArgumentTypeError: a single item (a tensor, a coordinate, a string, a mapping, anything
            not iterable) where a list is expected; the message shows the fix ``[item]``.
    """
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, Tensor, Mapping)) and not _is_coordinate(value):
        return list(value)
    raise ArgumentTypeError(
        f"{argument} must be a list of {items}, got {_what(value)}; wrap a single one in a list: [{example}]"
    )


def check_sources(sources: Any) -> None:
    """Raise unless ``sources`` is a list / tuple with one entry per source slot.

    Raises:
        ArgumentTypeError: one tensor, one dict of inputs or one ``Activations`` was passed
            (a tensor would be read as one source per row).
    """
    if isinstance(sources, (list, tuple)):
        return
    if isinstance(sources, (Tensor, Mapping)):
        raise ArgumentTypeError(
            f"sources must be a list with one entry (inputs or Activations) per source slot, got "
            f"{_what(sources)}; wrap it: sources=[source]"
        )
    if not isinstance(sources, Sequence):
        raise ArgumentTypeError(
            f"sources must be a list with one entry (inputs or Activations) per source slot, got "
            f"{type(sources).__name__}"
        )


def check_module_name(name: Any, what: str = "intervention name") -> None:
    """Raise unless ``name`` can key an ``nn.ModuleDict`` (a non-empty string without ``'.'``).

    Raises:
        NamingError: naming the bad name and a valid alternative.
    """
    if not isinstance(name, str) or not name or "." in name:
        suggestion = str(name).replace(".", "_") if isinstance(name, str) and name else "wx"
        raise NamingError(
            f"{what} {name!r} is not valid: names must be non-empty strings without '.' (a dot "
            f"separates names in parameter keys); e.g. {suggestion!r}"
        )


def check_row_index(index: Any, n_rows: int | None) -> Tensor:
    """``index`` as a tensor that selects rows of ``n_rows`` rows, after checking it.

    Args:
        index: a LongTensor ``[k]`` of rows (negative counts from the end), a bool ``[n_rows]``
            mask, or a list of ints.
        n_rows: rows of the collected values (``None``: nothing collected, nothing to check).

    Raises:
        ArgumentTypeError: not a tensor or list of ints, a float tensor, or not 1-d.
        OutOfRangeError: a row outside ``-n_rows .. n_rows - 1``, or a bool mask of another length.
    """
    if isinstance(index, (list, tuple)):
        if any(isinstance(i, bool) or not isinstance(i, int) for i in index):
            raise ArgumentTypeError(f"rows: a list of row numbers must hold ints, got {list(index)!r}")
        index = torch.tensor(index, dtype=torch.long)
    if not isinstance(index, Tensor) or index.is_floating_point() or index.is_complex() or index.dim() != 1:
        raise ArgumentTypeError(
            "rows needs a LongTensor [k] of row numbers or a bool [batch] mask, got "
            f"{getattr(index, 'dtype', type(index).__name__)} of shape {tuple(getattr(index, 'shape', ()))}"
        )
    if n_rows is None or index.device.type == "meta":
        return index
    if index.dtype == torch.bool:
        if index.shape[0] != n_rows:
            raise OutOfRangeError(f"rows: a bool mask needs {n_rows} entries (one per row), got {index.shape[0]}")
        return index
    if index.numel():
        low, high = int(index.min()), int(index.max())
        if low < -n_rows or high >= n_rows:
            bad = high if high >= n_rows else low
            raise OutOfRangeError(
                f"rows: row {bad} is out of range for activations of {n_rows} rows; valid rows are "
                f"0..{n_rows - 1} (or -{n_rows}..-1 from the end)"
            )
    return index
