"""`Activations`: values collected at coordinates, keyed by the coordinates asked for."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from iit.errors import CoordinateError
from iit.validation import check_row_index

__all__ = ["Activations"]


class Activations(Mapping[Any, Tensor]):
    """Values collected at coordinates, keyed by the coordinate objects that were asked for.

    Can stand in for a source run: pass it in ``sources`` of
    `Interventionable.intervene` and no source forward is needed (caching, in-batch
    sources). Each value is ``[batch, ...]`` as the coordinate's `iit.Index.read` returns it.

    Args:
        values: ``{coordinate: tensor [batch, ...]}``.

    Raises:
        TypeError: ``values`` is not a mapping (or an iterable of pairs). Looking up a coordinate
            that was not collected raises `CoordinateError` (listing what was collected).

    Examples:
        >>> import torch
        >>> acts = Activations({"h": torch.arange(6.0).reshape(3, 2)})
        >>> acts
        Activations('h': [3, 2])
        >>> acts.rows(torch.tensor([2, 0]))["h"]
        tensor([[4., 5.],
                [0., 1.]])
    """

    def __init__(self, values: Mapping[Any, Tensor]) -> None:
        self._values = dict(values)

    def __getitem__(self, key: Any) -> Tensor:
        try:
            return self._values[key]
        except KeyError:
            have = [getattr(k, "describe", lambda k=k: repr(k))() for k in self._values]
            raise CoordinateError(
                f"no values were collected at {getattr(key, 'describe', lambda: repr(key))()}; "
                f"collected: {have}"
            ) from None

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    @property
    def batch_size(self) -> int | None:
        """Rows of the collected values (``None`` when empty)."""
        for value in self._values.values():
            return value.shape[0]
        return None

    def rows(self, index: Tensor) -> Activations:
        """The same activations with rows reordered / selected by ``index`` (LongTensor
        ``[n]``), e.g. a permutation to use row ``perm[i]`` as the source of base row ``i``.

        Args:
            index: LongTensor ``[n]`` of row numbers (negative ones count from the end), a
                list of ints, or a bool ``[batch]`` mask.

        Returns:
            `Activations` whose values are ``[n, ...]``.

        Raises:
            ArgumentTypeError: ``index`` is not a 1-D integer / bool tensor or a list of ints.
            OutOfRangeError: a row outside ``-batch .. batch - 1``, or a bool mask of another
                length.
        """
        index = check_row_index(index, self.batch_size)
        moved: dict[torch.device, Tensor] = {}  # the index once per device, not once per value
        rows = {}
        for key, value in self._values.items():
            on_device = moved.get(value.device)
            if on_device is None:
                on_device = moved[value.device] = index.to(value.device)
            rows[key] = value[on_device]
        return Activations(rows)

    def detach(self) -> Activations:
        """The same activations cut from the autograd graph."""
        return Activations({k: v.detach() for k, v in self._values.items()})

    def __repr__(self) -> str:
        items = ", ".join(
            f"{getattr(k, 'describe', lambda k=k: repr(k))()}: {list(v.shape)}" for k, v in self._values.items()
        )
        return f"Activations({items})"
