"""`Interventionable`: wrap any PyTorch model to collect hidden states and intervene on them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from iit.activations import Activations
from iit.coordinates import Coordinate
from iit.errors import (
    ArgumentTypeError,
    CoordinateError,
    InterventionError,
    InterventionShapeError,
    OutOfRangeError,
)
from iit.hooks import HookRun, Inputs, WriteOp, batch_size, call_model, find_module
from iit.in_batch import (
    InBatchWrite,
    OnePassWrite,
    SitePlan,
    Unsplittable,
    repeat_rows,
    rows_interact,
    split_rows,
)
from iit.interventions import BoundIntervention, Intervention
from iit.validation import check_module_name, check_row_index, check_sources, require_list

__all__ = ["Interventionable"]


class Interventionable(nn.Module):
    """Wrap a model to collect hidden states and run interchange interventions, ablations and
    additions on them, with gradients flowing through all of it.

    ``Interventionable(model)(*args)`` is exactly ``model(*args)``. The wrapper adds nothing to
    the model: no hooks stay registered between calls (except, under activation checkpointing,
    pass-through hooks that live as long as an output's graph can still recompute), its
    train/eval mode and ``requires_grad`` flags are never changed, and hooks registered by others
    are left alone. Hooks act only for the call that installed them, so several threads or
    asyncio tasks can use one model at once (see `iit.hooks`).

    ``parameters()`` / ``state_dict()`` hold the wrapped model's (prefixed ``model.``) plus
    those of interventions registered with `add_intervention` (prefixed
    ``interventions.<name>.``).

    Subclass and override `resolve` to add a coordinate system for a model family (see
    `iit.transformers` for Hugging Face transformers).

    Args:
        model: any ``nn.Module``.
        stop_source_early: stop each source run as soon as every value it must give has been
            collected (default True; layers after the last read coordinate never run).

    Raises:
        ArgumentTypeError: ``model`` is not an ``nn.Module``.

    Examples:
        Collect a hidden state, then write the source run's first unit into the base run.
        Layer ``"0"`` doubles its input and layer ``"1"`` sums it, so base ``[1, 1]`` and source
        ``[3, 5]`` give the hidden state ``[2, 2]`` and ``[6, 10]``; after the interchange the
        base hidden state is ``[6, 2]`` and the output ``6 + 2 = 8``.

        >>> import torch
        >>> from torch import nn
        >>> from iit import Coordinate, Index, Interchange
        >>> double = nn.Linear(2, 2, bias=False)
        >>> _ = double.weight.data.copy_(2 * torch.eye(2))
        >>> total = nn.Linear(2, 1, bias=False)
        >>> _ = total.weight.data.fill_(1.0)
        >>> net = Interventionable(nn.Sequential(double, total))
        >>> base, source = torch.tensor([[1.0, 1.0]]), torch.tensor([[3.0, 5.0]])
        >>> hidden = Coordinate("0")
        >>> net.collect(source, [hidden])[hidden].tolist()
        [[6.0, 10.0]]
        >>> net(base).tolist()
        [[4.0]]
        >>> net.intervene(base, [Interchange(Coordinate("0", Index.dims(0, 1)))], [source]).tolist()
        [[8.0]]
    """

    def __init__(self, model: nn.Module, *, stop_source_early: bool = True) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ArgumentTypeError(f"Interventionable wraps an nn.Module, got {type(model).__name__}")
        self.model = model
        self.interventions = nn.ModuleDict()
        self.stop_source_early = stop_source_early
        self.training = model.training  # mirror, without calling model.train()

    # ------------------------------------------------------------------ plain use
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped model's forward, unchanged."""
        return self.model(*args, **kwargs)

    def add_intervention(self, name: str, intervention: Intervention) -> None:
        """Register a (trainable) intervention so its parameters join ``parameters()`` and
        ``state_dict()`` under ``interventions.<name>``.

        Args:
            name: a module name (no dots, not empty).
            intervention: the intervention to register.

        Raises:
            InterventionError: ``intervention`` is not an `iit.Intervention`.
            NamingError: ``name`` is not a valid module name.
        """
        if not isinstance(intervention, Intervention):
            raise InterventionError(f"add_intervention takes an Intervention, got {type(intervention).__name__}")
        check_module_name(name)
        self.interventions[name] = intervention

    # ------------------------------------------------------------------ coordinates
    def resolve(self, coordinate: Any, inputs: Inputs) -> Coordinate:
        """Map a coordinate of this wrapper's coordinate system to a generic
        `Coordinate` for a run on ``inputs``.

        The generic system accepts `Coordinate` only. Subclasses extend this (for example
        to resolve token positions against each run's attention mask).

        Raises:
            CoordinateError: for anything that is not a coordinate of this system.
        """
        if isinstance(coordinate, Coordinate):
            return coordinate
        raise CoordinateError(
            f"{type(self).__name__} takes iit.Coordinate objects, got {type(coordinate).__name__}: "
            f"{coordinate!r}"
        )

    def module_paths(self) -> list[str]:
        """Every addressable module path (as in ``named_modules()``)."""
        return [name for name, _ in self.model.named_modules()]

    def _module_table(self) -> Mapping[str, nn.Module]:
        table = self.__dict__.get("_modules_by_path")
        if table is None or table.model is not self.model:
            table = _ModuleTable(self.model)
            self.__dict__["_modules_by_path"] = table  # a plain attribute: not a submodule
        return table

    def check_coordinate(self, coordinate: Any, inputs: Inputs) -> Coordinate:
        """Resolve ``coordinate`` for ``inputs`` and check that its module exists, without
        running the model.

        Raises:
            CoordinateError: unknown module (listing the nearest names) or coordinate type.
        """
        resolved = self.resolve(coordinate, inputs)
        find_module(self._module_table(), resolved.module)
        return resolved

    # ------------------------------------------------------------------ collect
    def collect(
        self,
        inputs: Inputs,
        coordinates: Sequence[Any],
        *,
        return_output: bool = False,
        detach: bool = False,
    ) -> Activations | tuple[Any, Activations]:
        """Run the model on ``inputs`` and return the values at ``coordinates``.

        Args:
            inputs: model inputs (tensor, tuple, or dict of keyword arguments).
            coordinates: where to read; the result is keyed by these objects.
            return_output: also return the model output (the run then goes to the end;
                otherwise it stops after the last coordinate is read, if ``stop_source_early``).
            detach: run without building an autograd graph.

        Returns:
            `Activations` (values ``[batch, ...]``), or ``(output, activations)``. The
            values are never tensors the model can still change in place (copied when needed;
            gradients flow through the copy).

        Raises:
            ArgumentTypeError: ``coordinates`` is a single coordinate instead of a list.
            InterventionError: ``coordinates`` is empty.
            CoordinateError: unknown module (before the forward), bad index or selector.
            HookFiringError: a module ran twice or never.
        """
        coordinates = require_list(coordinates, "collect: coordinates", "coordinates", "coordinate")
        if not coordinates:
            raise InterventionError("collect needs at least one coordinate")
        modules = self._module_table()
        reads = [(c, self.resolve(c, inputs)) for c in coordinates]
        run = HookRun(modules, reads, [], stop_early=self.stop_source_early and not return_output)
        with torch.no_grad() if detach else contextlib.nullcontext():
            output = run.run(lambda: call_model(self.model, inputs))
        activations = Activations({key: run.values[key] for key, _ in reads})
        return (output, activations) if return_output else activations

    # ------------------------------------------------------------------ intervene
    def intervene(
        self,
        base: Inputs,
        interventions: Sequence[Intervention | BoundIntervention],
        sources: Sequence[Inputs | Activations] = (),
        *,
        detach_sources: bool = False,
    ) -> Any:
        """Run the model on ``base`` with ``interventions`` applied; return its output.

        Each `iit.interventions.Interchange` reads its values from ``sources[i]``
        (``i = intervention.source``): either source inputs (then the source run happens here,
        stopped after its last needed value) or `Activations` collected earlier (no source
        run at all). Several interventions, sources and coordinates work in one call; row-limited
        interventions (``intervention.where(rows)``) let rows of one batch differ.

        Args:
            base: inputs of the base run (tensor, tuple, or dict of keyword arguments).
            interventions: what to do, applied in list order (at one module, later ones see the
                result of earlier ones).
            sources: source inputs or collected activations, indexed by ``Interchange.source``.
            detach_sources: cut gradients through the source runs (default False: gradients
                reach the model through the base run and the source runs).

        Returns:
            The wrapped model's output on the intervened base run.

        Raises:
            ArgumentTypeError: ``sources`` is a single input instead of a list.
            InterventionError: empty list, a missing source, bad row masks.
            InterventionShapeError: batch sizes that differ between base and sources; values
                that do not fit their slot (shape, dtype, device).
            CoordinateError: unknown module paths (before any forward), out-of-range indices.
            HookFiringError: a hooked module ran twice or never.
        """
        plan = self._plan(base, interventions, sources)
        modules = self._module_table()
        source_values = self._source_values(plan, sources, modules, detach_sources)
        writes = []
        for step in plan:
            source = source_values.get((step.source, step.intervention.source_coordinate))
            writes.append(WriteOp(
                step.coordinate,
                _bind(step.intervention, source),
                step.rows,
                name=f"{type(step.intervention).__name__} at {step.coordinate.describe()}",
                source=source,
            ))
        run = HookRun(modules, [], writes, stop_early=False)
        return run.run(lambda: call_model(self.model, base))

    # ------------------------------------------------------------------ in-batch sources
    def intervene_in_batch(
        self,
        base: Inputs,
        groups: Sequence[Sequence[Intervention | BoundIntervention]],
        source_rows: Tensor,
        *,
        detach_sources: bool = False,
        return_base_output: bool = True,
        one_pass: bool = True,
    ) -> tuple[Any, list[Any]]:
        """The base run's output and, for each group of interventions, the output of the base
        run intervened with sources taken from the same batch: row ``i`` reads row
        ``source_rows[i]`` of the plain base run (source slot 0 of every interchange).

        The same as ``collect(base, ..., return_output=True)``, ``Activations.rows(source_rows)``
        and one `intervene` per group, but by default in **one pass**: the base inputs are
        repeated ``1 + len(groups)`` times along the batch axis (every input tensor whose dim 0
        is the batch size) and run once; at each intervened site the first block gives the
        source values and block ``1 + g`` is written by group ``g`` (see `iit.in_batch`). The
        outputs and gradients are those of the separate runs (up to float rounding in
        matrix products over more rows). Two passes are used instead when ``one_pass`` is False,
        ``return_base_output`` is False (the source run can then stop early), the batch has one
        row, an interchange reads another site than it writes, an index is a per-row mask, the
        model has a batch-norm layer in training mode (rows would interact), or the model's
        output cannot be cut back into blocks (checked once per wrapper).

        Args:
            base: inputs of the base run (tensor, tuple, or dict of keyword arguments).
            groups: one list of interventions per intervened run; interchanges read source slot 0.
            source_rows: LongTensor ``[batch]`` (a permutation, typically): row ``i`` of every
                intervened run takes its source values from row ``source_rows[i]``.
            detach_sources: cut gradients through the source values.
            return_base_output: also return the base output (False: ``None`` in its place).
            one_pass: allow the one-pass run.

        Returns:
            ``(base output or None, [intervened output per group])``.

        Raises:
            ArgumentTypeError: ``source_rows`` is not a 1-D integer tensor.
            OutOfRangeError: ``source_rows`` has another length than the batch or a row outside it.
            InterventionError: no groups, an empty group, an intervention reading a source slot
                other than 0, bad row masks.
            InterventionShapeError: values that do not fit their slot.
            CoordinateError: unknown module paths (before any forward), out-of-range indices.
            HookFiringError: a hooked module ran twice or never.
        """
        if isinstance(groups, (Intervention, BoundIntervention)) or not groups:
            raise InterventionError(
                "intervene_in_batch takes a list of groups (one list of interventions per intervened run), "
                f"got {groups!r}"
            )
        n = batch_size(base)
        source_rows = check_row_index(source_rows, n)
        if source_rows.dtype == torch.bool or (n is not None and source_rows.shape[0] != n):
            raise OutOfRangeError(
                f"intervene_in_batch: source_rows needs one row number per base row ({n}), got "
                f"{source_rows.dtype} of shape {tuple(source_rows.shape)}"
            )
        plans, sites = self._in_batch_plans(base, groups, n)
        if (one_pass and return_base_output and n is not None and n > 1 and sites is not None
                and self.__dict__.get("_one_pass", True) and not rows_interact(self._module_table().modules())):
            rows = [step.rows for plan in plans for step in plan]
            blocks = 1 + len(plans)
            regions = self.__dict__.setdefault("_region_masks", {})
            writes = [
                WriteOp(site.coordinate, OnePassWrite(site, rows, n, blocks, source_rows, detach_sources, regions),
                        name=site.label)
                for site in sites
            ]
            run = HookRun(self._module_table(), [], writes, stop_early=False)
            output = run.run(lambda: call_model(self.model, repeat_rows(base, n, blocks)))
            try:
                first, *intervened = split_rows(output, n, blocks)
                return first, intervened
            except Unsplittable:
                self.__dict__["_one_pass"] = False  # this model's outputs do not split: two passes from now on
        coords = list(dict.fromkeys(
            s.intervention.source_coordinate for plan in plans for s in plan if s.source is not None
        ))
        if coords:
            collected = self.collect(base, coords, return_output=return_base_output)
            output, activations = collected if return_base_output else (None, collected)
            sources: list[Inputs | Activations] = [activations.rows(source_rows)]
        else:
            output, sources = (call_model(self.model, base) if return_base_output else None), []
        bound = [[BoundIntervention(s.intervention, s.rows, s.source) for s in plan] for plan in plans]
        return output, [self.intervene(base, g, sources, detach_sources=detach_sources) for g in bound]

    def _in_batch_plans(
        self, base: Inputs, groups: Sequence[Sequence[Intervention | BoundIntervention]], n: int | None
    ) -> tuple[list[list[_Step]], list[SitePlan] | None]:
        """The checked plan of each group and the one-pass writes per site (``None`` when the
        plans do not fit one pass). Kept between calls with the same interventions (same
        objects, rows or not, source slots) when coordinates do not depend on the inputs (this
        class's `resolve`); only the row masks are checked again."""
        groups = [require_list(g, "intervene_in_batch: each group", "interventions", "Interchange") for g in groups]
        cacheable = type(self).resolve is Interventionable.resolve
        if cacheable:
            entries = [[(e.intervention, e.rows, e.source) if isinstance(e, BoundIntervention) else (e, None, None)
                        for e in g] for g in groups]
            key = (n, tuple(tuple((id(iv), rows is None, slot) for iv, rows, slot in g) for g in entries))
            cache = self.__dict__.setdefault("_in_batch_cache", {})
            hit = cache.get(key)
            if hit is not None and all(a is b for a, b in zip(hit[0], (iv for g in entries for iv, _, _ in g))):
                plans = []
                for g, template in zip(entries, hit[1]):
                    for iv, rows, _ in g:
                        if rows is not None and n is not None and rows.shape[0] != n:
                            raise InterventionError(
                                f"{type(iv).__name__}: the row mask has {rows.shape[0]} entries but the batch has {n}"
                            )
                    plans.append([step._replace(rows=rows) for (_, rows, _), step in zip(g, template)])
                return plans, hit[2]
        plans = [self._plan(base, g, [base]) for g in groups]
        sites = self._one_pass_sites(base, plans)
        if cacheable:
            if len(cache) >= 64:
                cache.clear()
            templates = [[step._replace(rows=None) for step in plan] for plan in plans]  # keep no row masks
            cache[key] = (tuple(iv for g in entries for iv, _, _ in g), templates, sites)
        return plans, sites

    def _one_pass_sites(self, base: Inputs, plans: list[list[_Step]]) -> list[SitePlan] | None:
        """The writes of a one-pass run, one `SitePlan` per intervened site, or ``None`` when a
        plan does not fit one pass (an interchange reading another site than it writes, a mask
        index)."""
        by_site: dict[tuple, list[InBatchWrite]] = {}
        slot = 0
        for g, plan in enumerate(plans):
            for step in plan:
                coord = step.coordinate
                site = (coord.module, coord.io, coord.output)
                source = None
                if step.source is not None:
                    source = coord if step.intervention.source_coordinate is step.intervention.coordinate else (
                        self.resolve(step.intervention.source_coordinate, base))
                    if step.source != 0 or (source.module, source.io, source.output) != site or (
                            source.index.boolean_mask is not None):
                        return None
                if coord.index.boolean_mask is not None:
                    return None
                by_site.setdefault(site, []).append(InBatchWrite(1 + g, step.intervention, coord, source, slot))
                slot += 1
        return [SitePlan(writes) for writes in by_site.values()]

    def _plan(
        self,
        base: Inputs,
        interventions: Sequence[Intervention | BoundIntervention],
        sources: Sequence[Inputs | Activations],
    ) -> list[_Step]:
        check_sources(sources)
        if isinstance(interventions, (Intervention, BoundIntervention)):
            interventions = [interventions]
        if not interventions:
            raise InterventionError(
                "intervene needs at least one intervention; call the model directly for a plain forward"
            )
        n_base = batch_size(base)
        for i, source in enumerate(sources):
            n_source = source.batch_size if isinstance(source, Activations) else batch_size(source)
            if n_base is not None and n_source is not None and n_source != n_base:
                raise InterventionShapeError(
                    f"source {i} has batch size {n_source} but the base has {n_base}; base and "
                    "sources must have the same number of rows (row i of a source feeds row i of the base)"
                )
        modules = self._module_table()
        plan = []
        for entry in interventions:
            bound = entry if isinstance(entry, BoundIntervention) else None
            iv = bound.intervention if bound is not None else entry
            if not isinstance(iv, Intervention):
                raise InterventionError(
                    f"interventions must be iit.Intervention objects, got {type(iv).__name__}"
                )
            rows = bound.rows if bound is not None else None
            source = bound.source_slot if bound is not None else iv.source
            if rows is not None and n_base is not None and rows.shape[0] != n_base:
                raise InterventionError(
                    f"{type(iv).__name__}: the row mask has {rows.shape[0]} entries but the batch has {n_base}"
                )
            if iv.needs_source and (source is None or source >= len(sources)):
                raise InterventionError(
                    f"{type(iv).__name__} reads source {source} but {len(sources)} source(s) were "
                    f"given; pass sources=[...] with at least {0 if source is None else source + 1}"
                )
            coord = self.resolve(iv.coordinate, base)
            find_module(modules, coord.module)
            plan.append(_Step(iv, rows, source if iv.needs_source else None, coord))
        return plan

    def _source_values(
        self,
        plan: list[_Step],
        sources: Sequence[Inputs | Activations],
        modules: Mapping[str, nn.Module],
        detach: bool,
    ) -> dict[tuple[int, Any], Tensor]:
        """Values each source must give, keyed by ``(source slot, source coordinate)``; each
        source run reads every coordinate it owes once and stops after the last."""
        needed: dict[int, list[Any]] = {}
        for step in plan:
            if step.source is not None:
                coords = needed.setdefault(step.source, [])
                if step.intervention.source_coordinate not in coords:
                    coords.append(step.intervention.source_coordinate)
        values: dict[tuple[int, Any], Tensor] = {}
        for slot, coords in needed.items():
            source = sources[slot]
            if isinstance(source, Activations):
                values.update({(slot, c): source[c] for c in coords})
                continue
            reads = [((slot, c), self.resolve(c, source)) for c in coords]
            run = HookRun(modules, reads, [], stop_early=self.stop_source_early)
            with torch.no_grad() if detach else contextlib.nullcontext():
                run.run(lambda source=source: call_model(self.model, source))
            values.update(run.values)
        if detach:
            values = {k: v.detach() for k, v in values.items()}
        return values


class _ModuleTable(Mapping[str, nn.Module]):
    """``dict(model.named_modules())`` kept between calls, so a call does not walk the whole
    model: an entry is used only while its path still leads to the same module (walking
    ``_modules``, as ``named_modules`` does); a path that is missing or leads elsewhere (a
    submodule added, removed or replaced since) rebuilds the table first. Iterating it, as error
    messages do to list valid names, always rebuilds."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._table = dict(model.named_modules())

    def _refresh(self) -> dict[str, nn.Module]:
        self._table = table = dict(self.model.named_modules())
        return table

    def _at(self, path: str) -> nn.Module | None:
        module: nn.Module | None = self.model
        if path:
            for part in path.split("."):
                module = module._modules.get(part)
                if module is None:
                    return None
        return module

    def __getitem__(self, path: str) -> nn.Module:
        module = self._table.get(path)
        if module is None or self._at(path) is not module:
            return self._refresh()[path]
        return module

    def modules(self) -> Iterable[nn.Module]:
        """The modules of the table as last built (no walk of the model)."""
        return self._table.values()

    def __contains__(self, path: object) -> bool:
        try:
            self[path]  # type: ignore[index]
        except (KeyError, TypeError, AttributeError):
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._refresh())

    def __len__(self) -> int:
        return len(self._refresh())


class _Step(NamedTuple):
    """One intervention of a call: what, on which rows, from which source slot, where."""

    intervention: Intervention
    rows: Tensor | None
    source: int | None
    coordinate: Coordinate


def _bind(iv: Intervention, source: Tensor | None) -> Callable[[Tensor], Tensor]:
    def apply(base_values: Tensor) -> Tensor:
        # source values go to the device of the module that consumes them (accelerate placement)
        return iv(base_values, None if source is None else source.to(base_values.device))

    return apply
