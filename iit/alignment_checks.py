"""Complete checks of an `iit.Alignment` against a network, before any training step.

What is checked, and when:

* **At construction** (no model needed): two variables whose learned interventions share one
  `iit.learned.Rotation` at the same coordinate on overlapping *rotated* dimensions
  (`check_shared_rotations`), and every learned parameter's range (a Boundless DAS
  boundary outside ``[1e-3, 1]``, a temperature <= 0; `check_parameter_ranges`).
* **In** `iit.Alignment.check`, with ONE probe forward on example inputs
  (`check_alignment`): every coordinate resolves and its index fits the real hidden state;
  the width of every learned intervention equals the last axis of the slot it rotates (both
  widths named); a source coordinate selects a slot of the same shape as the base coordinate;
  and units given to two variables do not overlap, also when the two coordinates are different
  hook sites that reach **the same tensor**.

Same tensor at two hook sites. A module's output is often the next module's input (the layers
of an ``nn.Sequential``), an ``nn.Identity`` anchor's output is its input, and an in-place module
(``nn.ReLU(inplace=True)``) returns the storage it was given. This is detected *dynamically* on
the probe forward, not statically from the module tree: the probe records, for every hooked
site, the identity of the hidden-state tensor it sees (storage pointer, storage offset, shape and
strides), and sites with equal fingerprints are one place for the overlap check. A static rule
("layer i's output is layer i + 1's input") is only provable for containers whose ``forward`` is
known, and misses every hand-written ``forward``; the fingerprint costs nothing beyond the
forward `iit.Alignment.check` already runs, and is exact for every model. Meta tensors (no
storage) are never merged.

Overlap rule. Each aligned intervention occupies the units its index selects. An intervention in
a basis (`iit.interventions.Intervention.basis_use`: the learned rotations and the
featurizer interventions) mixes every unit of its slot, so it occupies the whole slot; two that
share one basis object at the same slot overlap only when their features intersect
(``RotatedInterchange``: its ``dims``; ``LowRankRotatedInterchange``: all ``k`` columns;
``BoundlessRotatedInterchange``: all ``d``, since its boundary can grow;
``FeatureInterchange``: its features, in the featurizer's basis, which for a
``RotationFeaturizer`` is its ``Rotation``; ``MaskedFeatureInterchange``: all features).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from iit.coordinates import Coordinate, Index
from iit.errors import AlignmentError
from iit.hooks import Inputs
from iit.interventions import BasisUse, Intervention
from iit.learned import BoundlessRotatedInterchange, Rotation

if TYPE_CHECKING:
    from iit.alignment import Alignment
    from iit.interventionable import Interventionable

__all__ = [
    "check_alignment",
    "check_interventions",
    "check_shared_rotations",
    "check_parameter_ranges",
]


def _basis_name(basis: object) -> str:
    # a parametrised module's class is renamed (ParametrizedRotation): name the user's class
    return "Rotation" if isinstance(basis, Rotation) else type(basis).__name__


def _same_coordinate(a: Any, b: Any) -> bool:
    return a is b or (isinstance(a, Coordinate) and a == b)


def check_shared_rotations(templates: dict[str, tuple[Intervention, ...]], allow_overlap: bool) -> None:
    """Raise if two variables write in one shared basis (a `iit.learned.Rotation`, also
    through `iit.featurizers.RotationFeaturizer`, or one featurizer) at the same
    coordinate on intersecting features (`iit.interventions.Intervention.basis_use`;
    no model needed).

    Raises:
        AlignmentError: naming both variables, their features and the fix.
    """
    if allow_overlap:
        return
    learned = [
        (variable, iv, use)
        for variable, ivs in templates.items()
        for iv in ivs
        if (use := iv.basis_use()) is not None
    ]
    for i, (var_a, a, use_a) in enumerate(learned):
        for var_b, b, use_b in learned[i + 1 :]:
            if var_a == var_b or use_a.basis is not use_b.basis or not _same_coordinate(a.coordinate, b.coordinate):
                continue
            _raise_if_features_meet(var_a, a, use_a, var_b, b, use_b)


def _raise_if_features_meet(
    var_a: str, a: Intervention, use_a: BasisUse, var_b: str, b: Intervention, use_b: BasisUse, where: str = ""
) -> None:
    common = use_a.features & use_b.features
    if common:
        where = where or f"at {a.where_text()}"
        shared = BasisUse(use_a.basis, common, use_a.width, use_a.what).describe()
        raise AlignmentError(
            f"variables {var_a!r} ({type(a).__name__}, {use_a.describe()}) and {var_b!r} "
            f"({type(b).__name__}, {use_b.describe()}) share one {_basis_name(use_a.basis)} {where} and "
            f"overlap on {shared}; give them disjoint features of the shared basis "
            "(e.g. dims (0, k) and (k, 2k)) or pass allow_overlap=True"
        )


def check_parameter_ranges(iv: Intervention, where: str) -> None:
    """Raise if a learned parameter of ``iv`` is outside its valid range (no silent clamping).

    Raises:
        InterventionError: a Boundless DAS boundary outside ``[1e-3, 1]`` or a temperature <= 0.
    """
    if isinstance(iv, BoundlessRotatedInterchange):
        iv.check_ranges(where)


@dataclass
class _Seen:
    """What the probe saw at one hook site: the hidden state's shape and identity.

    ``keep`` holds the tensor itself until the check ends: while it is alive its memory cannot be
    reused for a later site's tensor, so equal fingerprints really mean one tensor.
    """

    shape: torch.Size
    fingerprint: tuple | None
    keep: Tensor | None = None


class _SiteProbe(Intervention):
    """A no-op intervention on a whole hidden state that records its shape and identity.

    ``source_coordinate`` carries the aligned coordinate it stands for (never read: the probe
    needs no source) so that wrappers which prepare hook points per coordinate (attention
    probabilities of transformers) prepare them for the probe run too.
    """

    needs_source: ClassVar[bool] = False

    def __init__(self, coordinate: Coordinate, original: Any, seen: dict[tuple, _Seen]) -> None:
        super().__init__(coordinate)
        self.source_coordinate = original
        self._seen = seen

    def forward(self, base: Tensor, source: Tensor | None) -> Tensor:
        c = self.coordinate
        fingerprint = None
        if base.device.type != "meta":
            fingerprint = (base.untyped_storage().data_ptr(), base.storage_offset(), tuple(base.shape), base.stride())
        self._seen[(c.module, c.io, c.output)] = _Seen(base.shape, fingerprint, base)
        return base


@dataclass
class _Placed:
    variable: str
    iv: Intervention
    resolved: Coordinate
    group: int
    mask: Tensor  # bool, the full hidden state's shape: units the intervention occupies


def _slot_shape(index: Index, shape: torch.Size) -> torch.Size:
    """Shape of ``index.read`` on a hidden state of ``shape``, without real memory."""
    try:
        return index.read(torch.empty(shape, device="meta")).shape
    except (RuntimeError, NotImplementedError):  # data-dependent reads (boolean masks)
        return index.read(torch.zeros(shape, dtype=torch.bool)).shape


def _unit_mask(index: Index, shape: torch.Size) -> Tensor:
    """The units ``index`` selects, as a bool tensor of the hidden state's shape (a rotated
    intervention occupies its whole slot: the rotation mixes all of its units)."""
    empty = torch.zeros(shape, dtype=torch.bool)
    return index.write(empty, torch.ones_like(index.read(empty)))


def check_alignment(alignment: Alignment, model: Interventionable, example_inputs: Inputs) -> None:
    """The checks of `iit.Alignment.check` (see the module docstring); one probe forward.

    Raises:
        CoordinateError: a coordinate that does not resolve (unknown module, bad index).
        AlignmentError: a learned intervention whose width differs from its slot's, a source
            slot of another shape than the base slot, overlapping units of two variables (also
            through two hook sites that reach one tensor), or overlapping rotated dims.
        InterventionError: a learned parameter outside its range.
    """
    entries = [
        (variable, f"variable {variable!r}", iv)
        for variable in alignment.variables
        for iv in alignment.interventions(variable)
    ]
    placed = _probe(model, example_inputs, entries)
    if not alignment.allow_overlap:
        _check_overlaps(placed)


def check_interventions(model: Interventionable, interventions: Sequence[Intervention], example_inputs: Inputs) -> None:
    """Check interventions against the real hidden states with one probe forward (no
    gradients): coordinates resolve and fit, learned widths equal their slots' widths, source
    slots match base slots, parameters are in range. Used by `iit.train_das` before its
    first step.

    Raises:
        CoordinateError, AlignmentError, InterventionError: as `check_alignment`.
    """
    entries = [(str(n), f"intervention {n} ({type(iv).__name__})", iv) for n, iv in enumerate(interventions)]
    _probe(model, example_inputs, entries)


def _probe(
    model: Interventionable, example_inputs: Inputs, entries: Sequence[tuple[str, str, Intervention]]
) -> list[_Placed]:
    resolved_entries: list[tuple[str, str, Intervention, Coordinate, Coordinate]] = []
    probes: dict[tuple, _SiteProbe] = {}
    seen: dict[tuple, _Seen] = {}
    for owner, label, iv in entries:
        check_parameter_ranges(iv, label)
        base = model.check_coordinate(iv.coordinate, example_inputs)
        source = base
        if iv.needs_source and iv.source_coordinate is not None:
            source = model.check_coordinate(iv.source_coordinate, example_inputs)
        resolved_entries.append((owner, label, iv, base, source))
        for coordinate, resolved in ((iv.coordinate, base), (iv.source_coordinate, source)):
            key = (resolved.module, resolved.io, resolved.output)
            if key not in probes:
                whole = Coordinate(resolved.module, Index.all(), resolved.output, resolved.io)
                probes[key] = _SiteProbe(whole, coordinate, seen)
    if not probes:
        return []
    with torch.no_grad():
        model.intervene(example_inputs, list(probes.values()))
    groups = _tensor_groups(seen)
    placed: list[_Placed] = []
    for owner, label, iv, base, source in resolved_entries:
        key = (base.module, base.io, base.output)
        shape = seen[key].shape
        base.index.check(shape, f"{label} at {base.describe()}")
        slot = _slot_shape(base.index, shape)
        if source is not base:
            source_shape = seen[(source.module, source.io, source.output)].shape
            source.index.check(source_shape, f"{label} (source) at {source.describe()}")
            source_slot = _slot_shape(source.index, source_shape)
            if source_slot[1:] != slot[1:]:
                raise AlignmentError(
                    f"{label}: the source coordinate {source.describe()} selects values of shape "
                    f"{tuple(source_slot)} but the base coordinate {base.describe()} selects "
                    f"{tuple(slot)}; choose coordinates that select the same shape"
                )
        use = iv.basis_use()
        if use is not None:
            width = slot[-1] if len(slot) > 1 else None
            if width != use.width:
                raise AlignmentError(
                    f"{label}: {type(iv).__name__} works on d={use.width} units (its "
                    f"{_basis_name(use.basis)}) but its slot {base.describe()} has {width} units on its "
                    f"last axis (slot {tuple(slot)}, hidden state {tuple(shape)}); build it with d={width} "
                    f"or choose a coordinate whose last axis has {use.width} units"
                )
        placed.append(_Placed(owner, iv, base, groups[key], _unit_mask(base.index, shape)))
    return placed


def _tensor_groups(seen: dict[tuple, _Seen]) -> dict[tuple, int]:
    """Sites numbered so that sites which saw one tensor share a number."""
    by_fingerprint: dict[tuple, int] = {}
    groups: dict[tuple, int] = {}
    for n, (key, s) in enumerate(seen.items()):
        if s.fingerprint is None:
            groups[key] = n
        else:
            groups[key] = by_fingerprint.setdefault(s.fingerprint, n)
    return groups


def _check_overlaps(placed: Sequence[_Placed]) -> None:
    for i, a in enumerate(placed):
        for b in placed[i + 1 :]:
            if a.variable == b.variable or a.group != b.group or a.mask.shape != b.mask.shape:
                continue
            if not (a.mask & b.mask).any():
                continue
            through = (
                ""
                if a.resolved.site == b.resolved.site and a.resolved.output == b.resolved.output
                else " (the two hook sites reach the same tensor: one module's output is the other's input)"
            )
            use_a, use_b = a.iv.basis_use(), b.iv.basis_use()
            if use_a is not None and use_b is not None and use_a.basis is use_b.basis:
                where = f"at {a.resolved.describe()} and {b.resolved.describe()}{through}" if through else ""
                _raise_if_features_meet(a.variable, a.iv, use_a, b.variable, b.iv, use_b, where)
                continue
            kinds = [
                "units" if (use := p.iv.basis_use()) is None else "a rotation over the whole slot" if isinstance(use.basis, Rotation) else f"a {_basis_name(use.basis)} over the whole slot"
                for p in (a, b)
            ]
            raise AlignmentError(
                f"variables {a.variable!r} ({a.resolved.describe()}, {kinds[0]}) and {b.variable!r} "
                f"({b.resolved.describe()}, {kinds[1]}) share units{through}; give them disjoint "
                "coordinates, one shared Rotation with disjoint dims, or pass allow_overlap=True"
            )

