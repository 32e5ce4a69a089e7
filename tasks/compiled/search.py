"""Alignment search on a compiled program: the program as a causal model over whole input
sequences, so `iit.search.search` can look for a variable's layer and dims.

For fixed-length inputs (the program's maximum length) the causal model has

* one input ``seq``: the index of the input sequence in `tasks.compiled.alignment.all_inputs`,
* the searched variable ``V``: the index of its value sequence among the values it takes,
* the output ``O``: the program's output at position ``position``, with ``V`` set (RASP evaluation
  with an override, so interchanging ``V`` gives the program's own counterfactual).

On the network side the place is a residual-stream point, all positions, all ``d_model`` dims;
the output read is the compiled model's output scores at that position.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from causal_models import CausalModel
from causal_models.domains import FiniteDomain, IntegerRange
from iit import Interventionable
from iit.errors import ArgumentError
from iit.search import CounterfactualSplits, SearchProblem, module_places
from iit.search.problem import Place
from tasks.compiled.alignment import all_inputs, residual_points
from tasks.compiled.convert import CompiledModel

__all__ = ["program_causal_model", "search_problem", "residual_places", "subspace_overlap"]


def program_causal_model(compiled: CompiledModel, variable: str, position: int) -> tuple[CausalModel, list[list[Any]]]:
    """``seq -> V -> O`` (see the module docstring) and the input sequences ``seq`` indexes.

    Raises:
        ArgumentError: a numerical program (the search scores categorical outputs) or a position
            outside the sequence.
    """
    from tracr.rasp import rasp

    if not compiled.spec.categorical:
        raise ArgumentError(f"{compiled.spec.name}: the search scores categorical outputs")
    n = compiled.spec.max_seq_len
    if not 0 <= position < n:
        raise ArgumentError(f"position must be in [0, {n}), got {position}")
    inputs = [s for s in all_inputs(compiled) if len(s) == n]
    exprs: dict[str, Any] = {}
    stack = [compiled.program]
    while stack:
        expr = stack.pop()
        if expr.label not in exprs:
            exprs[expr.label] = expr
            stack.extend(expr.children)
    values = [tuple(rasp.evaluate(exprs[variable], s)) for s in inputs]
    codes = sorted(set(values), key=values.index)
    code_of = {v: i for i, v in enumerate(codes)}
    outputs = compiled.output_values

    class _Override(rasp.DefaultRASPEvaluator):
        def __init__(self, value: Any) -> None:
            super().__init__()
            self.value = value

        def evaluate(self, expr: Any, xs: Any) -> Any:
            return list(self.value) if expr.label == variable else super().evaluate(expr, xs)

    def v_of(seq: int) -> int:
        return code_of[values[seq]]

    def o_of(v: int, seq: int) -> Any:
        return _Override(codes[v]).evaluate(compiled.program, inputs[seq])[position]

    model = CausalModel.from_mapping(
        {
            "seq": ((), None, IntegerRange(0, len(inputs))),
            "V": (("seq",), v_of, IntegerRange(0, len(codes)), False),
            "O": (("V", "seq"), o_of, FiniteDomain(tuple(outputs)), False),
        },
        outputs=["O"],
        name=f"{compiled.spec.name}: {variable} -> output[{position}]",
    )
    return model, inputs


def search_problem(
    compiled: CompiledModel, variable: str, position: int | None = None, sizes: tuple[int, int, int] = (512, 256, 512), seed: int = 0
) -> tuple[SearchProblem, CounterfactualSplits]:
    """The search problem for ``variable`` (output read at ``position``, default the last) and its
    counterfactual splits (``V`` interchanged)."""
    position = compiled.spec.max_seq_len - 1 if position is None else position
    causal, inputs = program_causal_model(compiled, variable, position)

    def encode(values: Mapping[str, Tensor]) -> Tensor:
        return compiled.encode([inputs[int(i)] for i in values["seq"]])

    def decode(output: Tensor) -> Tensor:
        return output[:, position + 1, :]

    problem = SearchProblem(Interventionable(compiled.module), causal, "V", encode, decode)
    splits = CounterfactualSplits.generate(causal, "V", sizes, seed=seed)
    return problem, splits


def residual_places(compiled: CompiledModel) -> list[Place]:
    """Every residual-stream point (all positions, all dims); ``layer`` numbers them in order."""
    return module_places(residual_points(compiled))


def subspace_overlap(basis: Tensor, dims: tuple[int, ...]) -> float:
    """Fraction of a learned basis' energy ``[d, k]`` (orthonormal columns) inside ``dims``:
    1.0 when the subspace lies in the labelled dims."""
    return float((basis[list(dims)] ** 2).sum() / (basis**2).sum())


