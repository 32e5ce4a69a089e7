"""`Alignment`: which neural coordinates (or learned interventions) stand for each high-level
variable of a causal model, and the one interchange vocabulary that runs on both sides.

```python
alignment = Alignment(causal_model, {
    "WX": Coordinate("layers.0", Index.dims(0, 4)),
    "YZ": Coordinate("layers.0", Index.dims(4, 8)),
})
alignment.check(network, example_inputs)             # every coordinate resolves and fits
run = alignment.interchange(network, batch, encode)  # causal label + network output
```

A variable may map to several coordinates (all are interchanged together) and to learned
interventions (e.g. a DAS rotation) instead of plain coordinates. Input variables may be aligned
to hidden coordinates too (pointer-value tasks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from causal_models import CausalModel
from causal_models.data import CounterfactualBatch
from iit.activations import Activations
from iit.alignment_checks import check_alignment, check_shared_rotations
from iit.coordinates import Index
from iit.errors import AlignmentError, ArgumentTypeError, InterventionShapeError, unknown_name
from iit.hooks import Inputs, batch_size, call_model
from iit.interventionable import Interventionable
from iit.interventions import BoundIntervention, Interchange, Intervention

__all__ = ["Alignment", "AlignedRun"]

AlignedTo = Any  # a coordinate, an Intervention, or a sequence of them


@dataclass(frozen=True)
class AlignedRun:
    """The result of one interchange run on both sides.

    Attributes:
        neural_output: the network's output on the intervened base run.
        causal_values: every causal variable's counterfactual value ``{var: [batch, ...]}``.
        counterfactual_label: the causal output variable's counterfactual value ``[batch]``.
        base_label: the causal output on the unintervened base ``[batch]``.

    Raises:
        TypeError: a missing or unknown field (made by `Alignment.interchange`, which checks
            its inputs).
    """

    neural_output: Any
    causal_values: dict[str, Tensor]
    counterfactual_label: Tensor
    base_label: Tensor

    @property
    def impactful(self) -> Tensor:
        """bool ``[batch]``: the intervention changed the causal output."""
        diff = self.counterfactual_label != self.base_label
        return diff.reshape(diff.shape[0], -1).any(dim=1)


class Alignment:
    """Map high-level variables of a causal model to neural coordinates.

    Args:
        causal_model: the high-level model.
        mapping: ``{variable: coordinate | Intervention | [coordinates / Interventions]}``.
            A coordinate means "interchange these units"; an `iit.Intervention` (with its
            own coordinate and parameters, e.g. a DAS rotation) is used as given.
        output: the causal output variable the network predicts (default: the only output).
        allow_overlap: let coordinates of different variables share units (checked by
            `check` otherwise).

    Raises:
        ArgumentTypeError: ``causal_model`` is not a ``CausalModel`` or ``mapping`` not a mapping.
        AlignmentError: a variable the causal model lacks (nearest names listed), an empty
            mapping, an entry that is neither a coordinate nor an intervention, an unknown output, two
            variables on overlapping dims of one shared Rotation at one coordinate.

    Examples:
        A network that computes the digit sum ``O = (x + y) + z`` exactly, with ``x + y`` in
        unit 0 of its hidden layer. Interchanging ``S = x + y`` from the source
        (``4 + 4 = 8``) into the base (``1 + 2 + 3 = 6``) gives ``8 + 3 = 11`` on both sides:

        >>> import torch
        >>> from torch import nn
        >>> from causal_models.data import CounterfactualBatch
        >>> from causal_models.standard import digit_sum
        >>> from iit import Coordinate, Index, Interventionable
        >>> net = nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 1, bias=False))
        >>> _ = net[0].weight.data.copy_(torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
        >>> _ = net[1].weight.data.fill_(1.0)
        >>> alignment = Alignment(digit_sum(), {"S": Coordinate("0", Index.dims(0, 1))})
        >>> print(alignment.describe())
        S -> 0.output[dims 0:1]
        >>> def encode(values):
        ...     return torch.stack([values["x"], values["y"], values["z"]], 1).float()
        >>> base = {"x": torch.tensor([1]), "y": torch.tensor([2]), "z": torch.tensor([3])}
        >>> source = {"x": torch.tensor([4]), "y": torch.tensor([4]), "z": torch.tensor([0])}
        >>> batch = CounterfactualBatch(base, [source], ("S",), intervened=torch.tensor([[True]]),
        ...     source_index=torch.tensor([[0]]), base_output=torch.tensor([6]),
        ...     counterfactual_output=torch.tensor([11]))
        >>> run = alignment.interchange(Interventionable(net), batch, encode)
        >>> run.base_label.tolist(), run.counterfactual_label.tolist(), run.neural_output.tolist()
        ([6], [11], [[11.0]])
    """

    def __init__(
        self,
        causal_model: CausalModel,
        mapping: Mapping[str, AlignedTo],
        *,
        output: str | None = None,
        allow_overlap: bool = False,
    ) -> None:
        if not isinstance(causal_model, CausalModel):
            raise ArgumentTypeError(
                f"Alignment needs a causal_models.CausalModel first, got {type(causal_model).__name__}"
            )
        if not isinstance(mapping, Mapping):
            raise ArgumentTypeError(
                f"Alignment needs a mapping {{variable: coordinate(s)}}, got {type(mapping).__name__}; "
                "e.g. {'S': Coordinate('layers.0', Index.dims(0, 8))}"
            )
        if not mapping:
            raise AlignmentError("an alignment needs at least one variable")
        self.causal_model = causal_model
        self.allow_overlap = allow_overlap
        known = list(causal_model.variables)
        if output is None:
            if len(causal_model.outputs) != 1:
                raise AlignmentError(
                    f"the causal model has outputs {causal_model.outputs}; name the one the network predicts with output="
                )
            output = causal_model.outputs[0]
        if output not in known:
            raise AlignmentError(_unknown(output, known, "output variable"))
        self.output = output
        self._templates: dict[str, tuple[Intervention, ...]] = {}
        self._learned = nn.ModuleDict()
        for variable, aligned in mapping.items():
            if variable not in known:
                raise AlignmentError(_unknown(variable, known, "causal variable"))
            items = list(aligned) if isinstance(aligned, (list, tuple)) else [aligned]
            if not items:
                raise AlignmentError(f"variable {variable!r} is aligned to nothing")
            templates = []
            for k, item in enumerate(items):
                if isinstance(item, Intervention):
                    if not item.needs_source:
                        raise AlignmentError(
                            f"variable {variable!r}: {type(item).__name__} reads no source; an aligned "
                            "intervention must interchange values from a source run"
                        )
                    templates.append(item)
                    if any(True for _ in item.parameters()):
                        self._learned[f"{variable}_{k}"] = item
                elif isinstance(item, (str, Index, slice)):
                    raise AlignmentError(
                        f"variable {variable!r}: {item!r} is not a coordinate; use iit.Coordinate(module, index)"
                    )
                else:
                    templates.append(Interchange(item))
            self._templates[variable] = tuple(templates)
        check_shared_rotations(self._templates, allow_overlap)

    # ------------------------------------------------------------------ access
    @property
    def variables(self) -> list[str]:
        """The aligned variables, in causal (topological) order."""
        return [v for v in self.causal_model.variables if v in self._templates]

    def interventions(self, variable: str) -> tuple[Intervention, ...]:
        """The interventions standing for ``variable`` (plain coordinates become Interchange)."""
        self._require(variable)
        return self._templates[variable]

    def coordinates(self, variable: str) -> list[Any]:
        """The neural coordinates of ``variable``."""
        return [iv.coordinate for iv in self.interventions(variable)]

    def source_coordinates(self) -> list[Any]:
        """Every coordinate a source run must give for any aligned variable (deduplicated)."""
        out: list[Any] = []
        for variable in self.variables:
            for iv in self._templates[variable]:
                if iv.source_coordinate not in out:
                    out.append(iv.source_coordinate)
        return out

    @property
    def learned(self) -> nn.ModuleDict:
        """Aligned interventions with parameters (e.g. DAS rotations), as a module dict."""
        return self._learned

    def _require(self, variable: str) -> None:
        if variable not in self._templates:
            raise AlignmentError(_unknown(variable, list(self._templates), "aligned variable"))

    def require_aligned(self, variables: Sequence[str]) -> None:
        """Raise `AlignmentError` if any of ``variables`` is not aligned (use it at
        setup time, on a dataset's intervened variables).

        Args:
            variables: names of causal variables.

        Raises:
            AlignmentError: naming the variables that are not aligned and those that are.
        """
        missing = [v for v in variables if v not in self._templates]
        if missing:
            raise AlignmentError(
                f"variables {missing} are intervened on by the data but not aligned; aligned: {self.variables}"
            )

    def describe(self) -> str:
        """One line per variable: ``WX -> layers.0.output[dims 0:4]``."""
        lines = []
        for variable in self.variables:
            places = ", ".join(
                iv.where_text() if type(iv) is Interchange else f"{type(iv).__name__}({iv.where_text()})"
                for iv in self._templates[variable]
            )
            lines.append(f"{variable} -> {places}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Alignment({self.causal_model.name if hasattr(self.causal_model, 'name') else 'causal model'}:\n{self.describe()})"

    # ------------------------------------------------------------------ validation
    def check(self, model: Interventionable, example_inputs: Inputs) -> None:
        """Check the alignment against a network, with one probe forward on ``example_inputs``
        (see `iit.alignment_checks` for the full list).

        Raises:
            CoordinateError: a coordinate that does not resolve (unknown module, bad index).
            AlignmentError: a learned intervention whose width differs from its hidden state's
                (both widths named), a source slot shaped unlike its base slot, or units of
                different variables that overlap (unless ``allow_overlap``), also when two hook
                sites reach one tensor (a module's output and the next module's input).
            InterventionError: a learned parameter outside its range (a Boundless boundary).
        """
        check_alignment(self, model, example_inputs)

    # ------------------------------------------------------------------ running
    def bound_interventions(
        self, variables: Sequence[str], intervened: Tensor, source_index: Tensor
    ) -> list[BoundIntervention]:
        """The neural interventions for per-row variable choices.

        Args:
            variables: candidate variables ``V`` (columns of the two tensors).
            intervened: bool ``[batch, len(V)]``: row ``i`` intervenes on ``V[j]``.
            source_index: int ``[batch, len(V)]``: the source slot giving ``V[j]`` in row ``i``.

        Returns:
            Interventions restricted to their rows and bound to their source slots, one per
            (variable, source slot, aligned intervention) that occurs in the batch.

        Raises:
            AlignmentError: a candidate variable that is not aligned.
        """
        self.require_aligned(variables)
        bound: list[BoundIntervention] = []
        present = intervened.any(dim=0).tolist()  # one sync for all columns
        slots_used = source_index[intervened].unique().tolist()
        for j, variable in enumerate(variables):
            if not present[j]:
                continue
            column = intervened[:, j]
            if len(slots_used) == 1:  # one source slot in the whole batch: no per-column split
                groups = [(slots_used[0], column)]
            else:
                groups = [
                    (slot, column & (source_index[:, j] == slot))
                    for slot in source_index[:, j][column].unique().tolist()
                ]
            for slot, rows in groups:
                for iv in self._templates[variable]:
                    bound.append(BoundIntervention(iv, rows=rows, source=int(slot)))
        return bound

    def interchange(
        self,
        model: Interventionable,
        batch: CounterfactualBatch,
        encode_inputs: Callable[[Mapping[str, Tensor]], Inputs],
        sources: Sequence[Inputs | Activations] | None = None,
        *,
        detach_sources: bool = False,
    ) -> AlignedRun:
        """Run the same interchange on the causal model and, through the alignment, on the
        network.

        Args:
            model: the network, wrapped.
            batch: bases, sources and per-row intervened variables (from
                `causal_models.CounterfactualGenerator` or a dataset).
            encode_inputs: maps causal input values ``{input: [batch, ...]}`` to network inputs.
            sources: network-side sources (inputs or collected `iit.Activations`);
                default: ``encode_inputs`` of each of the batch's sources.
            detach_sources: cut gradients through the source runs.

        Returns:
            `AlignedRun` with the network output and the causal counterfactual values.

        Raises:
            InterventionShapeError: ``encode_inputs`` gives another number of rows than the batch.
            AlignmentError: a variable of the batch that is not aligned.
        """
        causal = self.causal_model.interchange_per_row(
            batch.base, batch.sources, batch.variables, batch.intervened, batch.source_index
        )
        bound = self.bound_interventions(batch.variables, batch.intervened, batch.source_index)
        base_inputs = encode_inputs(batch.base)
        rows, encoded = batch.intervened.shape[0], batch_size(base_inputs)
        if encoded is not None and encoded != rows:
            raise InterventionShapeError(
                f"encode_inputs returned inputs with {encoded} rows for a batch of {rows} pairs; it must "
                "encode each row of the causal values into one row of network inputs"
            )
        if not bound:
            output = call_model(model, base_inputs)
        else:
            if sources is None:
                sources = [encode_inputs(s) for s in batch.sources]
            output = model.intervene(base_inputs, bound, sources, detach_sources=detach_sources)
        return AlignedRun(output, causal, causal[self.output], batch.base_output)


def _unknown(name: str, valid: Sequence[str], what: str) -> str:
    return unknown_name(name, valid, what)

