"""Batched evaluation of causal models: runs, ``do`` and interchange interventions.

Pure functions over a `CausalModel`; the model's methods (`CausalModel.run`, `CausalModel.do`,
`CausalModel.interchange`, `CausalModel.interchange_per_row`) call them. Every value is a tensor
``[batch, *domain.shape]``. Inputs are never modified in place.

Examples:
    >>> import torch
    >>> from causal_models import engine, standard
    >>> m = standard.digit_sum()  # S = x + y, O = S + z
    >>> t = torch.tensor
    >>> inputs = {"x": t([1, 2]), "y": t([3, 4]), "z": t([5, 5])}
    >>> engine.check_inputs(m, inputs)
    2
    >>> engine.evaluate(m, inputs, {"S": t([0, 0])}, None)["O"].tolist()
    [5, 5]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from causal_models.domains import _kind
from causal_models.errors import (
    BatchShapeError,
    CausalModelError,
    DomainError,
    InterventionSpecError,
    MechanismError,
    MissingInputError,
    UnknownVariableError,
    unknown_name_message,
)

if TYPE_CHECKING:
    from causal_models.model import CausalModel, Variable

__all__ = [
    "evaluate",
    "evaluate_checked",
    "interchange",
    "interchange_per_row",
    "per_row_overrides",
    "check_inputs",
]


def check_inputs(
    model: CausalModel, inputs: Mapping[str, Tensor], what: str = "input", validate: bool = True
) -> int:
    """Check that ``inputs`` gives every input variable a ``[batch, *shape]`` tensor.

    Args:
        model: The causal model.
        inputs: ``{input: [batch, *shape]}`` for every input variable.
        what: How to call ``inputs`` in error messages (``"base"``, ``"source 0"``, ...).
        validate: Also check the values' dtypes and that they lie in their domains (shapes are
            always checked).

    Returns:
        The common batch size.

    Raises:
        CausalModelError: ``inputs`` is not a mapping.
        UnknownVariableError: a key of ``inputs`` is not an input variable.
        MissingInputError: an input variable has no value.
        BatchShapeError: the inputs differ in batch size.
        DomainError: a value that is not a tensor ``[batch, *shape]``, or (with ``validate``) a
            value of another dtype kind or outside its domain.
    """
    if not isinstance(inputs, Mapping):
        raise CausalModelError(
            f"{what} must be a mapping {{input name: tensor}}, got {type(inputs).__name__}"
        )
    for k in inputs:
        if k not in model.inputs:
            raise UnknownVariableError(
                f"{what}: " + unknown_name_message(k, model.inputs, "input variable")
            )
    missing = [n for n in model.inputs if n not in inputs]
    if missing:
        raise MissingInputError(
            f"{what}: missing input(s) {', '.join(map(repr, missing))}; every input is needed: "
            f"{', '.join(model.inputs)}"
        )
    batch: int | None = None
    first = ""
    for n in model.inputs:
        value = inputs[n]
        dom = model.domain(n)
        if validate:
            dom.validate(value, f"{what} {n!r}")
        else:
            dom._check_shape(value, f"{what} {n!r}")
        if batch is None:
            batch, first = value.shape[0], n
        elif value.shape[0] != batch:
            raise BatchShapeError(
                f"{what}: {n!r} has batch size {value.shape[0]} but {first!r} has {batch}; "
                "every input needs the same batch size"
            )
    assert batch is not None
    return batch


def _apply_mechanism(var: Variable, args: list[Tensor], batch: int, device: torch.device) -> Tensor:
    """Compute ``var`` from its parents' values ``args`` (each ``[batch, *parent.shape]``).

    Constants are broadcast to ``[batch, *shape]``; per-row mechanisms are called once per row.

    Returns:
        ``[batch, *var.domain.shape]`` on ``device``.

    Raises:
        MechanismError: the mechanism raised (the original error is chained), or returned something
            other than a tensor of shape ``[batch, *shape]`` and of the domain's dtype kind.
    """
    dom = var.domain
    mech = var.mechanism
    assert mech is not None
    if not var.parents:  # constant
        try:
            value = torch.as_tensor(mech(), dtype=dom.dtype, device=device)
        except Exception as exc:
            raise MechanismError(
                f"constant mechanism of {var.name!r} raised {type(exc).__name__}: {exc}"
            ) from exc
        if tuple(value.shape) != dom.shape:
            raise MechanismError(
                f"constant mechanism of {var.name!r} returned shape {tuple(value.shape)}, "
                f"expected {dom.shape}"
            )
        return value.expand(batch, *dom.shape)
    if var.vectorized:
        try:
            out = mech(*args)
        except CausalModelError:
            raise
        except Exception as exc:
            shapes = ", ".join(
                f"{p}{tuple(a.shape)}" for p, a in zip(var.parents, args, strict=True)
            )
            raise MechanismError(
                f"mechanism of {var.name!r} raised {type(exc).__name__}: {exc} "
                f"(called with {shapes})"
            ) from exc
        if not isinstance(out, Tensor):
            raise MechanismError(
                f"vectorized mechanism of {var.name!r} returned {type(out).__name__}, expected a "
                f"Tensor [batch, *{dom.shape}]; use vectorized=False for per-row Python mechanisms"
            )
    else:
        rows = [a.tolist() if a.dim() == 1 else a for a in args]
        outs = []
        for i in range(batch):
            row = [r[i] for r in rows]
            try:
                value = torch.as_tensor(mech(*row), dtype=dom.dtype, device=device)
            except Exception as exc:
                raise MechanismError(
                    f"per-row mechanism of {var.name!r} raised {type(exc).__name__}: {exc} "
                    f"(row {i}, parents {dict(zip(var.parents, row, strict=True))!r})"
                ) from exc
            if tuple(value.shape) != dom.shape:
                raise MechanismError(
                    f"per-row mechanism of {var.name!r} returned shape {tuple(value.shape)} at "
                    f"row {i}, expected {dom.shape}"
                )
            outs.append(value)
        out = (
            torch.stack(outs)
            if outs
            else torch.empty((0, *dom.shape), dtype=dom.dtype, device=device)
        )
    expected = (batch, *dom.shape)
    if tuple(out.shape) != expected:
        raise MechanismError(
            f"mechanism of {var.name!r} returned shape {tuple(out.shape)}, expected {expected} "
            f"([batch, *domain.shape] for {dom!r})"
        )
    if not dom._accepts_kind(_kind(out.dtype)):
        raise MechanismError(
            f"mechanism of {var.name!r} returned dtype {out.dtype}, expected a {_kind(dom.dtype)} "
            f"dtype for {dom!r}"
        )
    return out


def _check_mask(mask: object, var: str, batch: int) -> Tensor:
    """Check a row mask ``rows[var]``: a bool tensor ``[batch]``.

    Raises:
        InterventionSpecError: not a bool tensor.
        BatchShapeError: not of shape ``[batch]``.
    """
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise InterventionSpecError(f"rows[{var!r}] must be a bool tensor [batch], got {mask!r}")
    if tuple(mask.shape) != (batch,):
        raise BatchShapeError(
            f"rows[{var!r}] has shape {tuple(mask.shape)}, expected [batch] = ({batch},)"
        )
    return mask


def evaluate(
    model: CausalModel,
    inputs: Mapping[str, Tensor],
    overrides: Mapping[str, Tensor],
    rows: Mapping[str, Tensor] | None,
    validate: bool = True,
) -> dict[str, Tensor]:
    """Evaluate every variable, replacing intervened variables by given values.

    Args:
        model: The causal model.
        inputs: ``{input: [batch, *shape]}`` for every input.
        overrides: ``{var: [batch, *shape]}``: these values replace the mechanism (or the input) of
            ``var``.
        rows: Optional ``{var: bool [batch]}`` restricting an override to some rows; keys must be
            overridden variables.
        validate: Check the dtypes and values of inputs and overrides, and the values of mechanism
            outputs, against their domains (shapes, and the dtypes of mechanism outputs, are always
            checked).

    Returns:
        ``{var: [batch, *shape]}`` for every variable, in topological order.

    Raises:
        CausalModelError: ``inputs`` is not a mapping.
        UnknownVariableError: a key of ``inputs`` is not an input variable, or a key of
            ``overrides`` or ``rows`` is not a variable.
        MissingInputError: an input variable has no value.
        BatchShapeError: the inputs, overrides and row masks differ in batch size.
        DomainError: a value that is not a tensor ``[batch, *shape]``, or (with ``validate``) a
            value of another dtype kind or outside its domain.
        InterventionSpecError: ``overrides`` is not a mapping, or a row mask is not a bool tensor or
            is given for a variable that is not overridden.
        MechanismError: a mechanism raised or returned a wrong value.
    """
    batch = check_inputs(model, inputs, "input", validate)
    if not isinstance(overrides, Mapping):
        raise InterventionSpecError(
            f"interventions must be a mapping {{variable: tensor}}, got {type(overrides).__name__}"
        )
    for var, value in overrides.items():
        dom = model.domain(var)  # raises UnknownVariableError
        if validate:
            dom.validate(value, f"intervention on {var!r}")
        else:
            dom._check_shape(value, f"intervention on {var!r}")
        if value.shape[0] != batch:
            raise BatchShapeError(
                f"intervention on {var!r} has batch size {value.shape[0]}, inputs have {batch}"
            )
    masks: dict[str, Tensor] = {}
    for var, mask in (rows or {}).items():
        model.domain(var)
        if var not in overrides:
            raise InterventionSpecError(
                f"rows[{var!r}] given but {var!r} is not intervened (intervened: "
                f"{', '.join(overrides) or 'none'})"
            )
        masks[var] = _check_mask(mask, var, batch)
    return evaluate_checked(model, inputs, overrides, masks, batch, validate)


def evaluate_checked(
    model: CausalModel,
    inputs: Mapping[str, Tensor],
    overrides: Mapping[str, Tensor],
    masks: Mapping[str, Tensor],
    batch: int,
    validate: bool,
) -> dict[str, Tensor]:
    """`evaluate` for arguments already checked (names, shapes, batch size, input domains).

    Used to avoid re-checking the same tensors; ``validate`` then only checks mechanism outputs.

    Args:
        model: The causal model.
        inputs: ``{input: [batch, *shape]}`` for every input (checked).
        overrides: ``{var: [batch, *shape]}`` replacing the mechanism (or input) of ``var``.
        masks: ``{var: bool [batch]}`` restricting an override to some rows (checked).
        batch: The batch size.
        validate: Check mechanism outputs against their domains.

    Returns:
        ``{var: [batch, *shape]}`` for every variable, in topological order.

    Raises:
        MechanismError: a mechanism raised, returned a wrong value, or (with ``validate``) a value
            outside its domain.
    """
    values: dict[str, Tensor] = {}
    device = next(iter(inputs.values())).device
    for name in model.variables:
        var = model.variable(name)
        full = name in overrides and name not in masks
        if full:
            values[name] = overrides[name]
            continue
        if var.is_input:
            out = inputs[name]
        else:
            out = _apply_mechanism(var, [values[p] for p in var.parents], batch, device)
            if validate:
                try:
                    var.domain.validate(out, f"value of {name!r}")
                except DomainError as exc:
                    raise MechanismError(f"mechanism of {name!r}: {exc}") from exc
        if name in masks:
            m = masks[name].reshape(batch, *([1] * len(var.domain.shape)))
            out = torch.where(m, overrides[name], out)
        values[name] = out
    return values


def _check_sources(
    model: CausalModel,
    base: Mapping[str, Tensor],
    sources: Sequence[Mapping[str, Tensor]],
    validate: bool,
) -> int:
    """Check the base and the sources of an interchange; returns the common batch size.

    Raises:
        InterventionSpecError: ``sources`` is not a sequence of mappings.
        BatchShapeError: a source's batch size differs from the base's.
    """
    batch = check_inputs(model, base, "base", validate)
    if isinstance(sources, Mapping) or not isinstance(sources, Sequence):
        raise InterventionSpecError(
            f"sources must be a sequence of input mappings, got {type(sources).__name__}"
        )
    for i, src in enumerate(sources):
        b = check_inputs(model, src, f"source {i}", validate)
        if b != batch:
            raise BatchShapeError(f"source {i} has batch size {b}, base has {batch}")
    return batch


def interchange(
    model: CausalModel,
    base: Mapping[str, Tensor],
    sources: Sequence[Mapping[str, Tensor]],
    variables: Mapping[str, int],
    rows: Mapping[str, Tensor] | None = None,
    validate: bool = True,
) -> dict[str, Tensor]:
    """Interchange intervention; the checks and evaluation behind `CausalModel.interchange`.

    Args:
        model: The causal model.
        base: ``{input: [batch, *shape]}`` for every input variable.
        sources: Source inputs, each ``{input: [batch, *shape]}``.
        variables: ``{var: source index}``.
        rows: Optional ``{var: bool [batch]}`` restricting an intervention to some rows.
        validate: As in `evaluate`.

    Returns:
        Every variable's counterfactual value ``{var: [batch, *shape]}``.

    Raises:
        CausalModelError: the base or a source is not a mapping.
        UnknownVariableError: a key of the base or of a source is not an input variable, or an
            intervened variable is not a variable.
        MissingInputError: an input has no value in the base or in a source.
        BatchShapeError: the base, the sources and the masks differ in batch size.
        DomainError: an input value that does not fit its domain.
        MechanismError: a mechanism raised or returned a wrong value.
        InterventionSpecError: ``sources`` is not a sequence, ``variables`` is not a mapping, a
            source index out of range, or a row mask that is not a bool tensor or is given for a
            variable that is not intervened.
    """
    batch = _check_sources(model, base, sources, validate)
    if not isinstance(variables, Mapping):
        raise InterventionSpecError(
            f"variables must map each variable to a source index, got {type(variables).__name__}"
        )
    for var, idx in variables.items():
        model.domain(var)
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < len(sources):
            raise InterventionSpecError(
                f"source index {idx!r} for {var!r} is out of range: {len(sources)} source(s), "
                f"valid indices 0..{len(sources) - 1}"
            )
    for var in rows or {}:
        if var not in variables:
            model.domain(var)
            raise InterventionSpecError(
                f"rows[{var!r}] given but {var!r} is not intervened (intervened: "
                f"{', '.join(variables) or 'none'})"
            )
    masks = {var: _check_mask(m, var, batch) for var, m in (rows or {}).items()}
    runs = {
        i: evaluate_checked(model, sources[i], {}, {}, batch, validate)
        for i in sorted(set(variables.values()))
    }
    overrides = {var: runs[idx][var] for var, idx in variables.items()}
    return evaluate_checked(model, base, overrides, masks, batch, validate)


def interchange_per_row(
    model: CausalModel,
    base: Mapping[str, Tensor],
    sources: Sequence[Mapping[str, Tensor]],
    variables: Sequence[str],
    intervened: Tensor,
    source_index: Tensor,
    validate: bool = True,
) -> dict[str, Tensor]:
    """Per-row interchange; the checks and evaluation behind `CausalModel.interchange_per_row`.

    Args:
        model: The causal model.
        base: ``{input: [batch, *shape]}`` for every input variable.
        sources: Source inputs, each ``{input: [batch, *shape]}``.
        variables: Candidate variables ``V``.
        intervened: bool ``[batch, len(V)]``.
        source_index: int64 ``[batch, len(V)]`` (ignored where not intervened).
        validate: As in `evaluate`.

    Returns:
        Every variable's counterfactual value ``{var: [batch, *shape]}``.

    Raises:
        CausalModelError: the base or a source is not a mapping.
        UnknownVariableError: a key of the base or of a source is not an input variable, or a
            candidate variable is not a variable.
        MissingInputError: an input has no value in the base or in a source.
        BatchShapeError: the base, the sources, ``intervened`` and ``source_index`` differ in batch
            size.
        DomainError: an input value that does not fit its domain.
        MechanismError: a mechanism raised or returned a wrong value.
        InterventionSpecError: ``sources`` is not a sequence, the candidates repeat a name,
            ``intervened`` is not a bool tensor, ``source_index`` is not an integer tensor, or an
            intervened row uses a source index out of range.
    """
    batch = _check_sources(model, base, sources, validate)
    variables = list(variables)
    for var in variables:
        model.domain(var)
    if len(set(variables)) != len(variables):
        raise InterventionSpecError(f"candidate variables repeat a name: {variables!r}")
    shape = (batch, len(variables))
    if not isinstance(intervened, Tensor) or intervened.dtype != torch.bool:
        raise InterventionSpecError(f"intervened must be a bool tensor {list(shape)}")
    if not isinstance(source_index, Tensor) or _kind(source_index.dtype) != "int":
        raise InterventionSpecError(f"source_index must be an integer tensor {list(shape)}")
    for name, t in (("intervened", intervened), ("source_index", source_index)):
        if tuple(t.shape) != shape:
            raise BatchShapeError(
                f"{name} has shape {tuple(t.shape)}, expected [batch, n_variables] = {shape}"
            )
    used = source_index[intervened]
    if used.numel() and (int(used.min()) < 0 or int(used.max()) >= len(sources)):
        raise InterventionSpecError(
            f"source_index has values outside 0..{len(sources) - 1} on intervened rows "
            f"(found {int(used.min())}..{int(used.max())})"
        )
    slots = sorted(set(used.unique().tolist()))
    runs = {s: evaluate_checked(model, sources[s], {}, {}, batch, validate) for s in slots}
    overrides, rows = per_row_overrides(runs, variables, intervened, source_index)
    return evaluate_checked(model, base, overrides, rows, batch, validate)


def per_row_overrides(
    source_runs: Mapping[int, Mapping[str, Tensor]],
    variables: Sequence[str],
    intervened: Tensor,
    source_index: Tensor,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Override values and row masks for a per-row interchange.

    Args:
        source_runs: ``{slot: {var: [batch, *shape]}}`` runs of the sources that are used.
        variables: Candidate variables (the columns of the two tensors below).
        intervened: bool ``[batch, len(variables)]`` (checked by the caller).
        source_index: int64 ``[batch, len(variables)]``: the source slot of each intervened variable
            (checked by the caller).

    Returns:
        ``({var: [batch, *shape]}, {var: bool [batch]})``: the override values and row masks that
        `evaluate_checked` takes.
    """
    slots = sorted(source_runs)
    batch = intervened.shape[0]
    overrides: dict[str, Tensor] = {}
    rows: dict[str, Tensor] = {}
    if not slots:
        return overrides, rows
    for j, var in enumerate(variables):
        value = source_runs[slots[0]][var]
        extra = (1,) * (value.dim() - 1)
        for s in slots[1:]:
            pick = (source_index[:, j] == s).reshape(batch, *extra)
            value = torch.where(pick, source_runs[s][var], value)
        overrides[var] = value
        rows[var] = intervened[:, j]
    return overrides, rows
