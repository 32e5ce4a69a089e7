"""Interchange interventions whose source is another row of the same batch, run as one forward.

`iit.Interventionable.intervene_in_batch` gives the base run's output and, for each group of
interventions, the output of the base run intervened with values taken from row
``source_rows[i]`` of the same base batch for row ``i``. Two ways to get them, with the same
results:

* **one pass** (when the model treats rows independently): the base inputs are repeated
  ``1 + groups`` times along the batch axis and run once. At each intervened site, block ``0``
  (the plain base run) gives the source values (its rows reordered by ``source_rows``) and block
  ``1 + g`` is written by group ``g``. Nothing flows from the intervened blocks into block ``0``,
  so block ``0`` is the plain run and every block sees exactly the values two separate runs
  would give it; gradients reach the network through both, as with ``detach_sources=False``.
* **two passes**: one run collects the source values (and the base output), then one
  intervened run per group (`iit.Interventionable.intervene` with `iit.Activations` sources).

This module holds the parts of the one-pass run: which calls can use it, how inputs are
repeated and outputs split, and the write at one site.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from iit.coordinates import Coordinate, Index, check_values
from iit.errors import CoordinateError, InterventionShapeError
from iit.interventions import Interchange, Intervention

__all__ = ["InBatchWrite", "SitePlan", "OnePassWrite", "Unsplittable", "rows_interact", "repeat_rows", "split_rows", "site_coordinate"]


class Unsplittable(Exception):
    """The model's output of a one-pass run cannot be cut back into its blocks (a part without
    the repeated batch axis, e.g. a loss averaged over all rows); the caller runs two passes."""


def rows_interact(modules: Iterable[nn.Module]) -> bool:
    """Whether a forward mixes rows of the batch: one of the model's ``modules`` is a batch-norm
    layer in training mode (its batch statistics would cover the intervened copies too).

    Args:
        modules: the model's modules.
    """
    return any(m.training and isinstance(m, _BatchNorm) for m in modules)


def repeat_rows(inputs: Any, n: int, copies: int) -> Any:
    """``inputs`` with every tensor whose dim 0 is the batch size ``n`` repeated ``copies`` times
    along dim 0 (``[n, ...] -> [copies * n, ...]``), through tuples, lists and mappings; anything
    else is passed unchanged.

    Args:
        inputs: model inputs (a tensor, a tuple / list, or a mapping of keyword arguments).
        n: the batch size.
        copies: how many blocks of ``n`` rows.

    Examples:
        >>> import torch
        >>> repeat_rows({"x": torch.tensor([[1], [2]]), "flag": True}, 2, 2)["x"].flatten().tolist()
        [1, 2, 1, 2]
    """
    if isinstance(inputs, Tensor):
        if inputs.dim() and inputs.shape[0] == n:
            return torch.cat([inputs] * copies)
        return inputs
    if isinstance(inputs, Mapping):
        return {k: repeat_rows(v, n, copies) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(repeat_rows(v, n, copies) for v in inputs)
    return inputs


def split_rows(output: Any, n: int, copies: int) -> list[Any]:
    """Cut a one-pass output back into ``copies`` outputs of ``n`` rows each (every tensor must
    have ``copies * n`` rows on dim 0; tuples, lists and mappings, such as Hugging Face model
    outputs, keep their type; ``None``, numbers and strings are shared).

    Args:
        output: the model's output on inputs made by `repeat_rows`.
        n: the batch size.
        copies: the number of blocks.

    Returns:
        ``[output of block 0, ..., output of block copies - 1]``.

    Raises:
        Unsplittable: a tensor without ``copies * n`` rows (for example a 0-d loss), or an
            object of another kind.
    """
    if isinstance(output, Tensor):
        if output.dim() == 0 or output.shape[0] != n * copies:
            raise Unsplittable(f"an output tensor of shape {tuple(output.shape)} has no {n * copies}-row batch axis")
        return list(output.chunk(copies))
    if output is None or isinstance(output, (bool, int, float, str)):
        return [output] * copies
    if isinstance(output, Mapping):
        parts = {k: split_rows(v, n, copies) for k, v in output.items()}
        rebuild = dict if type(output) is dict else type(output)
        return [rebuild(**{k: v[i] for k, v in parts.items()}) for i in range(copies)]
    if isinstance(output, (tuple, list)):
        columns = [split_rows(v, n, copies) for v in output]
        return [type(output)(c[i] for c in columns) for i in range(copies)]
    raise Unsplittable(f"an output of type {type(output).__name__} cannot be cut into its blocks")


class InBatchWrite(NamedTuple):
    """One intervention of a one-pass run at its site.

    Attributes:
        block: the block it writes (``1 + group``).
        intervention: the intervention.
        coordinate: where it writes (resolved for the base inputs).
        source_coordinate: where it reads block 0 (same site), or ``None`` (no source).
        slot: its position in the call's list of row masks.
    """

    block: int
    intervention: Intervention
    coordinate: Coordinate
    source_coordinate: Coordinate | None
    slot: int

    @property
    def name(self) -> str:
        """A label for error messages, e.g. ``Interchange at embedded.output[dims 0:32]``."""
        return f"{type(self.intervention).__name__} at {self.coordinate.describe()}"


class SitePlan:
    """The fixed part of the writes at one site of a one-pass run (kept between calls with the
    same interventions): the whole hidden state's coordinate, its label, and the writes split into
    the blocks that take the one-``where`` path (all their writes plain interchanges) and the rest.

    Args:
        writes: the writes at this site, in call order.

    Raises:
        IndexError: ``writes`` is empty.
    """

    def __init__(self, writes: list[InBatchWrite]) -> None:
        self.coordinate = site_coordinate(writes[0].coordinate)
        self.label = f"in-batch interventions at {self.coordinate.describe()}"
        by_block: dict[int, list[InBatchWrite]] = {}
        for write in writes:
            by_block.setdefault(write.block, []).append(write)
        self.masked = {block: ws for block, ws in by_block.items() if all(_plain_interchange(w) for w in ws)}
        self.general = [w for w in writes if w.block not in self.masked]


class OnePassWrite:
    """The write at one site of a one-pass run: ``hidden [blocks * n, ...] -> same shape``.

    Block 0 stays as it is and gives the source values (its rows reordered by
    ``source_rows``); each `InBatchWrite` replaces its coordinate in its block, in list order.
    A block whose writes are all plain interchanges (`iit.Interchange` reading the coordinate
    it writes, with a fixed index) is written with one ``torch.where`` over the block: where a
    write's rows and region meet, the reordered block 0, else the block (the same values, with
    fewer operations than one read and write per interchange).

    Args:
        plan: the site's writes (`SitePlan`).
        rows: the call's row masks, bool ``[n]`` or ``None`` (all rows), by `InBatchWrite.slot`.
        n: the batch size.
        blocks: the number of blocks of ``n`` rows.
        source_rows: LongTensor ``[n]``: row ``i`` reads source row ``source_rows[i]``.
        detach_sources: cut gradients through the source values.
        regions: a cache shared between calls: ``(index, hidden shape without the batch axis,
            device) -> bool [1, ...]`` true on the index's region.

    Raises:
        InterventionShapeError: (when applied) a hidden state without ``blocks * n`` rows, or
            values that do not fit their slot.
        CoordinateError: (when applied) an index that does not fit the hidden state.
    """

    def __init__(self, plan: SitePlan, rows: Sequence[Tensor | None], n: int, blocks: int, source_rows: Tensor,
                 detach_sources: bool, regions: dict[tuple, Tensor]) -> None:
        self.plan, self.rows, self.n, self.blocks = plan, rows, n, blocks
        self.source_rows = source_rows
        self.detach_sources = detach_sources
        self.regions = regions
        self._rows_on: dict[torch.device, Tensor] = {}

    def _rows(self, device: torch.device) -> Tensor:
        rows = self._rows_on.get(device)
        if rows is None:
            rows = self._rows_on[device] = self.source_rows.to(device)
        return rows

    def _regions(self, writes: list[InBatchWrite], part: Tensor, stacked: bool = False) -> Tensor | None:
        """bool ``[1, ...]``: true on the union of the writes' regions (``None`` for no writes),
        or with ``stacked`` float ``[k, size of one row]``: one flattened 0/1 region per write;
        cached by indices, shape and device (each index is checked against the hidden state when
        first seen)."""
        if not writes:
            return None
        key = (tuple(w.coordinate.index for w in writes), tuple(part.shape[1:]), part.device, stacked)
        regions = self.regions.get(key)
        if regions is None:
            empty = torch.zeros((1, *part.shape[1:]), dtype=torch.bool, device=part.device)
            each = []
            for write in writes:
                index = write.coordinate.index
                _check(index, part, write)
                each.append(index.write(empty, torch.ones_like(index.read(empty))))
            regions = torch.cat(each).reshape(len(each), -1).float() if stacked else torch.cat(each).any(0, keepdim=True)
            if len(self.regions) >= 256:
                self.regions.clear()
            self.regions[key] = regions
        return regions

    def __call__(self, hidden: Tensor) -> Tensor:
        n, blocks = self.n, self.blocks
        if hidden.dim() == 0 or hidden.shape[0] != n * blocks:
            raise InterventionShapeError(
                f"{self.plan.label}: the hidden state has shape {tuple(hidden.shape)} but a one-pass "
                f"in-batch run has {blocks} blocks of {n} rows on dim 0; this model does not keep the "
                "batch on dim 0 here (run it with one_pass=False)"
            )
        parts = list(hidden.chunk(blocks))
        reordered: Tensor | None = None  # block 0 with its rows in source order, made once
        if self.plan.masked:
            reordered = parts[0][self._rows(hidden.device)]
            if self.detach_sources:
                reordered = reordered.detach()
            for block, writes in self.plan.masked.items():
                part = parts[block]
                limited = [w for w in writes if self.rows[w.slot] is not None]
                mask = self._regions([w for w in writes if self.rows[w.slot] is None], part)  # all rows
                if limited:
                    # rows [n, k] times regions [k, ...] of the row-limited writes: one product
                    rows = torch.stack([self.rows[w.slot] for w in limited], 1)
                    if rows.device != part.device:
                        rows = rows.to(part.device)
                    regions = self._regions(limited, part, stacked=True)
                    term = torch.mm(rows.to(regions.dtype), regions).bool().view(part.shape)
                    mask = term if mask is None else mask | term
                parts[block] = torch.where(mask, reordered, part)
        sources: dict[int, Tensor] = {}  # by id of the index: per-row indices compare equal by kind only
        for write in self.plan.general:
            part = parts[write.block]
            _check(write.coordinate.index, part, write)
            base_values = write.coordinate.index.read(part)
            source = None
            if write.source_coordinate is not None:
                index = write.source_coordinate.index
                source = sources.get(id(index))
                if source is None:
                    _check(index, parts[0], write)
                    if index.per_row:  # per-row positions belong to the rows they were resolved for
                        source = index.read(parts[0])[self._rows(hidden.device)]
                    else:
                        if reordered is None:
                            reordered = parts[0][self._rows(hidden.device)]
                        source = index.read(reordered)
                    if self.detach_sources:
                        source = source.detach()
                    sources[id(index)] = source
            new_values = write.intervention(base_values, source)
            if (new_values.shape != base_values.shape or new_values.dtype != base_values.dtype
                    or new_values.device != base_values.device):
                check_values(new_values, base_values, write.name)  # raises, naming the write
            rows = self.rows[write.slot]
            if rows is not None:
                rows = rows.to(new_values.device).reshape((-1,) + (1,) * (new_values.dim() - 1))
                new_values = torch.where(rows, new_values, base_values)
            parts[write.block] = write.coordinate.index.write(part, new_values)
        return torch.cat(parts)


def _plain_interchange(write: InBatchWrite) -> bool:
    """An `iit.Interchange` (not a subclass) reading the coordinate it writes, with a fixed
    index (no per-row positions or masks): its write is ``where(rows and region, source, base)``."""
    index = write.coordinate.index
    return (
        type(write.intervention) is Interchange
        and write.source_coordinate is not None
        and write.source_coordinate.index == index
        and not index.per_row
    )


def _check(index: Index, part: Tensor, write: InBatchWrite) -> None:
    """`Index.check` with the write's name in the message (made only when it fails)."""
    try:
        index.check(part.shape, "")
    except CoordinateError:
        index.check(part.shape, write.name)
        raise


def site_coordinate(coordinate: Coordinate) -> Coordinate:
    """The whole hidden state at ``coordinate``'s site and output selector.

    Examples:
        >>> from iit import Coordinate, Index
        >>> site_coordinate(Coordinate("layers.1", Index.dims(0, 4)))
        Coordinate(module='layers.1', index=all, output=None, io='output')
    """
    return Coordinate(coordinate.module, Index.all(), output=coordinate.output, io=coordinate.io)
