"""Transformer coordinates ``(layer, component, position, head, dims)`` and their resolution
to generic `iit.Coordinate` objects.

Shapes of the hidden state behind each component (``H`` query heads, ``K`` key-value heads,
``d`` head width, ``D`` model width, ``F`` MLP width):

```text
block_input / block_output / attention_output / mlp_output   [batch, seq, D]
mlp_hidden                                                   [batch, seq, F]
head_attention_output / query                                [batch, seq, H * d]
key / value                                                  [batch, seq, K * d]
attention_probs                                              [batch, H, seq_q, seq_k]
```

For head components, ``head`` selects query heads (keys / values: the key-value head each query
head reads, see `ModelShape.kv_head`) and ``dims`` a range inside each head; the values read
are ``[batch, positions, n_selected_heads * width]``, heads in the order given. For
``attention_probs`` the position is the query position and ``dims`` a range of key positions.
Query / key values are taken before rotary embeddings (the projection outputs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from iit.coordinates import Coordinate, Index
from iit.errors import CoordinateError, unknown_name
from iit.hooks import batch_size
from iit.transformers.attention import HOOK_POINT
from iit.transformers.families import (
    COMPONENTS,
    HEAD_COMPONENTS,
    Component,
    Family,
    ModelShape,
)
from iit.transformers.positions import (
    Tokens,
    attention_mask_of,
    real_token_positions,
    sequence_length,
)

__all__ = ["TransformerCoordinate", "Position", "validate", "resolve", "module_path"]

# None: every position; int / tuple: absolute positions shared by all rows; Tokens: counted over
# each row's real tokens; LongTensor [batch, k]: absolute positions per row.
Position = None | int | tuple[int, ...] | Tokens | Tensor
"""Which token positions a coordinate covers: ``None`` every position; an ``int`` or a tuple of ints, absolute positions shared by all rows; `Tokens`, positions counted over each row's real tokens; a LongTensor ``[batch, k]``, absolute positions per row."""


@dataclass(frozen=True, eq=False)
class TransformerCoordinate:
    """A place in a transformer: ``(layer, component, position, head, dims)``.

    Args:
        layer: block index, ``0 <= layer < n_layers``.
        component: one of `iit.transformers.families.COMPONENTS`.
        position: ``None`` (all positions), an ``int`` / tuple of ints (absolute), a
            `Tokens` (relative to the real tokens of each row), or a LongTensor
            ``[batch, k]`` of absolute positions per row.
        head: a query head or tuple of heads (head components only).
        dims: ``(start, stop)`` range of the last axis (inside each head for head components).
        label: optional short name for messages.

    Raises:
        CoordinateError: unknown component (nearest names listed), negative layer / head, bad
            dims, or a head on a component without heads.

    Examples:
        >>> TransformerCoordinate(3, "block_output", position=Tokens.last())
        TransformerCoordinate(L3.block_output[pos tokens [-1]])
        >>> TransformerCoordinate(0, "head_attention_output", position=(0, 2), head=(1, 3), dims=(0, 8))
        TransformerCoordinate(L0.head_attention_output[pos (0, 2), head (1, 3), dims 0:8])
        >>> TransformerCoordinate(0, "mlp_out")
        Traceback (most recent call last):
        ...
        iit.errors.CoordinateError: unknown component 'mlp_out'; did you mean 'mlp_output' or 'block_output'? ...
    """

    layer: int
    component: Component
    position: Position = None
    head: int | tuple[int, ...] | None = None
    dims: tuple[int, int] | None = None
    label: str | None = field(default=None)

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise CoordinateError(unknown_name(self.component, COMPONENTS, "component"))
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise CoordinateError(f"layer must be an int >= 0, got {self.layer!r}")
        if self.head is not None:
            if self.component not in HEAD_COMPONENTS:
                raise CoordinateError(
                    f"component {self.component!r} has no heads; heads exist on {sorted(HEAD_COMPONENTS)}"
                )
            heads = self.heads
            if not heads or any(isinstance(h, bool) or not isinstance(h, int) or h < 0 for h in heads):
                raise CoordinateError(f"head must be an int >= 0 or a tuple of them, got {self.head!r}")
            if len(set(heads)) != len(heads):
                raise CoordinateError(f"heads must not repeat, got {list(heads)}")
        if self.dims is not None and not (len(self.dims) == 2 and 0 <= self.dims[0] < self.dims[1]):
            raise CoordinateError(f"dims needs (start, stop) with 0 <= start < stop, got {self.dims!r}")
        if isinstance(self.position, Tensor):
            if self.position.dim() != 2 or self.position.is_floating_point():
                raise CoordinateError(
                    f"per-row positions must be a LongTensor [batch, k], got shape {tuple(self.position.shape)}"
                )
        elif isinstance(self.position, (int, tuple)):
            positions = (self.position,) if isinstance(self.position, int) else self.position
            if not positions or any(isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in positions):
                raise CoordinateError(
                    f"absolute positions must be ints >= 0, got {self.position!r}; use Tokens.at(-1) "
                    "to count from the last real token"
                )
        elif self.position is not None and not isinstance(self.position, Tokens):
            raise CoordinateError(
                f"position must be None, an int, a tuple of ints, Tokens or a LongTensor, got "
                f"{type(self.position).__name__}"
            )

    @property
    def heads(self) -> tuple[int, ...] | None:
        """The selected heads as a tuple (``None``: all heads)."""
        return (self.head,) if isinstance(self.head, int) else self.head

    def describe(self) -> str:
        """Short text, e.g. ``L3.block_output[pos Tokens(-1,)]``."""
        if self.label:
            return self.label
        parts = []
        if self.position is not None:
            pos = self.position
            text = f"tokens {list(pos.indices)}" if isinstance(pos, Tokens) else (
                "per-row" if isinstance(pos, Tensor) else str(pos)
            )
            parts.append(f"pos {text}")
        if self.head is not None:
            parts.append(f"head {self.head}")
        if self.dims is not None:
            parts.append(f"dims {self.dims[0]}:{self.dims[1]}")
        return f"L{self.layer}.{self.component}" + (f"[{', '.join(parts)}]" if parts else "")

    def __repr__(self) -> str:
        return f"TransformerCoordinate({self.describe()})"


def validate(coord: TransformerCoordinate, family: Family, shape: ModelShape) -> None:
    """Check ``coord`` against the model's sizes, without running it.

    Raises:
        CoordinateError: layer or head out of range, or dims beyond the head / model width.
    """
    if coord.layer >= shape.n_layers:
        raise CoordinateError(
            f"{coord.describe()}: layer {coord.layer} is out of range; the {family.name} model has "
            f"layers 0..{shape.n_layers - 1}"
        )
    if coord.heads is not None and max(coord.heads) >= shape.n_heads:
        raise CoordinateError(
            f"{coord.describe()}: head {max(coord.heads)} is out of range; valid heads are "
            f"0..{shape.n_heads - 1}"
        )
    if coord.dims is not None and coord.component in HEAD_COMPONENTS - {"attention_probs"}:
        width = shape.d_head if coord.heads is not None else _n_units(coord.component, shape) * shape.d_head
        if coord.dims[1] > width:
            raise CoordinateError(
                f"{coord.describe()}: dims {coord.dims} exceed the width {width} "
                f"({'one head' if coord.heads is not None else 'all heads'}); valid is within [0, {width})"
            )
    if coord.dims is not None and coord.component in ("block_input", "block_output", "attention_output", "mlp_output"):
        if coord.dims[1] > shape.d_model:
            raise CoordinateError(
                f"{coord.describe()}: dims {coord.dims} exceed d_model={shape.d_model}; valid is within "
                f"[0, {shape.d_model})"
            )


def _n_units(component: str, shape: ModelShape) -> int:
    return shape.n_kv_heads if component in ("key", "value") else shape.n_heads


def module_path(coord: TransformerCoordinate, family: Family, shape: ModelShape) -> str:
    """The ``named_modules()`` path of the module behind ``coord``.

    Args:
        coord: the transformer coordinate.
        family: the model's family entry.
        shape: the model's sizes (for the base model's prefix).

    Raises:
        KeyError: a component the family's ``sites`` table lacks.

    Examples:
        >>> from iit.transformers.families import FAMILIES, ModelShape
        >>> shape = ModelShape(n_layers=12, n_heads=12, n_kv_heads=12, d_head=64, d_model=768, prefix="transformer.")
        >>> module_path(TransformerCoordinate(3, "mlp_output"), FAMILIES["gpt2"], shape)
        'transformer.h.3.mlp'
    """
    return _site(coord, family, shape)[0]


def _site(coord: TransformerCoordinate, family: Family, shape: ModelShape) -> tuple[str, str, int | None]:
    block = f"{shape.prefix}{family.layers}.{coord.layer}"
    if coord.component == "attention_probs":
        return f"{block}.{family.attention_module}.{HOOK_POINT}", "output", None
    if coord.component in ("query", "key", "value"):
        paths = family.qkv.paths
        path = paths[("query", "key", "value").index(coord.component)] if len(paths) == 3 else paths[0]
        return f"{block}.{path}", "output", None
    site = family.sites[coord.component]
    return (f"{block}.{site.path}" if site.path else block), site.io, site.output


def _physical(component: str, unit: int, family: Family, shape: ModelShape) -> int:
    """Offset on the module's last axis of head ``unit`` (a key-value head for key / value)."""
    d, kind = shape.d_head, family.qkv.kind
    which = ("query", "key", "value").index(component) if component in ("query", "key", "value") else 0
    if component == "head_attention_output" or kind == "separate":
        return unit * d
    if kind == "fused_blocks":
        return which * shape.n_heads * d + unit * d
    return unit * 3 * d + which * d  # fused_per_head


def _head_axis(coord: TransformerCoordinate, family: Family, shape: ModelShape) -> tuple[int, ...] | slice | None:
    """Last-axis selector for a head component: flat offsets of the selected (head, dim) pairs."""
    d = shape.d_head
    if coord.heads is None:
        n = _n_units(coord.component, shape)
        lo, hi = coord.dims if coord.dims is not None else (0, n * d)
        logical = range(lo, hi)
        flat = [_physical(coord.component, j // d, family, shape) + j % d for j in logical]
    else:
        units: list[int] = []
        for h in coord.heads:
            u = shape.kv_head(h) if coord.component in ("key", "value") else h
            if u not in units:
                units.append(u)
        lo, hi = coord.dims if coord.dims is not None else (0, d)
        flat = [_physical(coord.component, u, family, shape) + j for u in units for j in range(lo, hi)]
    if flat == list(range(flat[0], flat[0] + len(flat))):
        return slice(flat[0], flat[0] + len(flat))
    return tuple(flat)


def _position_selector(coord: TransformerCoordinate, inputs: object) -> tuple[int, ...] | Tensor | None:
    pos = coord.position
    if pos is None:
        return None
    if isinstance(pos, int):
        return (pos,)
    if isinstance(pos, tuple):
        return pos
    if isinstance(pos, Tensor):
        return pos.long()
    mask = attention_mask_of(inputs)
    if mask is None:
        length = sequence_length(inputs)
        if length is None:
            raise CoordinateError(
                f"{coord.describe()}: Tokens positions need an attention_mask or input_ids in the inputs"
            )
        mask = torch.ones(batch_size(inputs) or 1, length, dtype=torch.long)
    return real_token_positions(pos, mask)


def _axis_key(sel: object) -> tuple:
    if isinstance(sel, slice):
        return ("slice", sel.start, sel.stop, None)
    if isinstance(sel, Tensor):
        return ("list", ("per-row",))
    return ("list", tuple(sel))  # type: ignore[arg-type]


def resolve(coord: TransformerCoordinate, inputs: object, family: Family, shape: ModelShape) -> Coordinate:
    """The generic `iit.Coordinate` of ``coord`` for a run on ``inputs`` (per-row
    positions are resolved against ``inputs["attention_mask"]``).

    Raises:
        CoordinateError: see `validate` and `real_token_positions`.
    """
    validate(coord, family, shape)
    module, io, output = _site(coord, family, shape)
    positions = _position_selector(coord, inputs)
    selectors: list[tuple[int, object]] = []
    if coord.component == "attention_probs":
        if coord.heads is not None:
            h = list(coord.heads)
            selectors.append((1, slice(h[0], h[0] + len(h)) if h == list(range(h[0], h[0] + len(h))) else tuple(h)))
        if positions is not None:
            selectors.append((2, positions))
        if coord.dims is not None:
            selectors.append((3, slice(*coord.dims)))
    else:
        if positions is not None:
            selectors.append((1, positions))
        if coord.component in HEAD_COMPONENTS:
            fused = coord.component != "head_attention_output" and family.qkv.kind != "separate"
            if coord.heads is not None or coord.dims is not None or fused:
                selectors.append((-1, _head_axis(coord, family, shape)))
        elif coord.dims is not None:
            selectors.append((-1, slice(*coord.dims)))
    for _, sel in selectors:
        if isinstance(sel, tuple) and len(set(sel)) != len(sel):
            raise CoordinateError(f"{coord.describe()}: positions must not repeat, got {list(sel)}")
    key = ("tc",) + tuple(_axis_key(s) for _, s in selectors) if selectors else ("all",)
    index = Index(selectors=tuple(selectors), _key=key)  # type: ignore[arg-type]
    return Coordinate(module, index, output=output, io=io, label=coord.describe())
