"""True alignments of compiled programs and their interchange-intervention accuracy.

A compiled program writes each variable into its own residual dims (labelled
``"<variable>:<value>"``) once, at one sublayer; the dims stay untouched afterwards. So the true
alignment of a variable is: its labelled dims, at the first residual-stream point where they
carry values (`true_alignment`). Interchanging them there from a source run must give, on
every pair, the program's output with that variable set to its value on the source
(`counterfactual_outputs`, by RASP evaluation with the variable overridden).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any

import torch

from iit import Coordinate, Index, Interchange, Interventionable
from iit.errors import ArgumentError
from tasks.compiled.convert import CompiledModel

__all__ = ["TrueAlignment", "residual_points", "true_alignment", "counterfactual_outputs", "interchange_iia", "all_inputs", "InterchangeScore"]


@dataclass(frozen=True)
class TrueAlignment:
    """A variable's residual dims and the point where they are first written."""

    variable: str
    point: str
    dims: tuple[int, ...]

    def coordinate(self, point: str | None = None) -> Coordinate:
        """The dims at ``point`` (default: the true point), all positions: ``[batch, seq, k]``."""
        return Coordinate(point or self.point, Index.slices(None, list(self.dims)))


def residual_points(compiled: CompiledModel) -> list[str]:
    """Residual-stream points in order: ``embed``, then ``blocks.{i}.resid_mid`` /
    ``blocks.{i}.resid_post`` per layer."""
    points = ["embed"]
    for i in range(len(compiled.module.blocks)):
        points += [f"blocks.{i}.resid_mid", f"blocks.{i}.resid_post"]
    return points


def all_inputs(compiled: CompiledModel) -> list[list[Any]]:
    """Every input sequence over the vocabulary, of every length ``1 .. max_seq_len``."""
    valid = compiled.spec.valid or (lambda seq: True)
    return [
        list(s) for n in range(1, compiled.spec.max_seq_len + 1) for s in itertools.product(compiled.spec.vocab, repeat=n)
        if valid(list(s))
    ]


def true_alignment(compiled: CompiledModel, variable: str) -> TrueAlignment:
    """The variable's labelled dims at the first point where they are non-zero on some input.

    Raises:
        NamingError: an unknown variable label.
        ArgumentError: dims that stay zero at every point.
    """
    dims = tuple(compiled.variable_dims(variable))
    model = Interventionable(compiled.module)
    tokens = compiled.encode(all_inputs(compiled))
    coords = {p: Coordinate(p, Index.all()) for p in residual_points(compiled)}
    with torch.no_grad():
        acts = model.collect(tokens, list(coords.values()))
    for point, coord in coords.items():
        if acts[coord][..., list(dims)].abs().max() > 1e-6:
            return TrueAlignment(variable, point, dims)
    raise ArgumentError(f"variable {variable!r} is never written to its dims {dims}")


def _exprs(program: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    stack = [program]
    while stack:
        expr = stack.pop()
        if expr.label not in out:
            out[expr.label] = expr
            stack.extend(expr.children)
    return out


def counterfactual_outputs(compiled: CompiledModel, variable: str, base: list[Any], source: list[Any]) -> list[Any]:
    """The program's output on ``base`` with ``variable`` set to its value on ``source``
    (RASP evaluation with an override)."""
    from tracr.rasp import rasp

    exprs = _exprs(compiled.program)
    value = list(rasp.evaluate(exprs[variable], source))[: len(base)]

    class _Override(rasp.DefaultRASPEvaluator):
        def evaluate(self, expr: Any, xs: Any) -> Any:
            if expr.label == variable:
                return value
            return super().evaluate(expr, xs)

    return list(_Override().evaluate(compiled.program, base))


@dataclass(frozen=True)
class InterchangeScore:
    """IIA on the pairs whose counterfactual output is defined, and on the impactful ones among
    them (counterfactual output != base output); ``n_undefined`` pairs were left out (the
    program's output with the interchanged value is undefined: RASP gives ``None``, e.g. a
    length longer than the base selects positions the base does not have)."""

    iia: float
    iia_impactful: float
    n_pairs: int
    n_impactful: int
    n_undefined: int


def _same(compiled: CompiledModel, got: list[Any], want: list[Any], atol: float) -> bool:
    if compiled.spec.categorical:
        return got == want
    return all(w is not None and abs(x - w) <= atol for x, w in zip(got, want))


def interchange_iia(
    compiled: CompiledModel, alignment: TrueAlignment, *, point: str | None = None, n_pairs: int = 512, seed: int = 0,
    atol: float = 0.02,
) -> InterchangeScore:
    """Interchange ``alignment``'s dims at ``point`` (default: its own point) on random pairs
    (``seed``; every length, the source at least as long as the base, so every base position
    has a source value) and compare the whole output with the counterfactual output.
    Numerical outputs match within ``atol``."""
    inputs = all_inputs(compiled)
    rng = random.Random(seed)
    pairs = []
    while len(pairs) < n_pairs:
        b, s = rng.choice(inputs), rng.choice(inputs)
        if len(s) >= len(b):
            pairs.append((b, s))
    base = compiled.encode([b for b, _ in pairs])
    source = compiled.encode([s for _, s in pairs])
    lengths = [len(b) for b, _ in pairs]
    model = Interventionable(compiled.module)
    with torch.no_grad():
        out = model.intervene(base, [Interchange(alignment.coordinate(point))], [source])
    got = compiled.decode(out, lengths)
    ok = ok_imp = n_imp = undefined = 0
    from tracr.rasp import rasp

    for (b, s), g in zip(pairs, got):
        want = counterfactual_outputs(compiled, alignment.variable, b, s)
        if any(w is None for w in want):
            undefined += 1
            continue
        good = _same(compiled, g, want, atol)
        ok += good
        if not _same(compiled, list(rasp.evaluate(compiled.program, b)), want, 1e-9):
            n_imp += 1
            ok_imp += good
    n = n_pairs - undefined
    return InterchangeScore(ok / n if n else float("nan"), ok_imp / n_imp if n_imp else float("nan"), n, n_imp, undefined)
