"""The RASP programs compiled for ground truth (tracr's library versions), each with the
vocabulary and maximum length it is compiled for."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ProgramSpec", "PROGRAMS"]


@dataclass(frozen=True)
class ProgramSpec:
    """A RASP program to compile.

    Attributes:
        name: short name.
        build: returns the program's output SOp (imports tracr when called).
        vocab: input tokens.
        max_seq_len: longest input (without the BOS token).
        categorical: the output is categorical (else numerical, one residual dim).
        valid: the program's precondition on inputs (e.g. distinct keys for ``sort``).
    """

    name: str
    build: Callable[[], Any]
    vocab: tuple[Any, ...]
    max_seq_len: int
    categorical: bool = True
    valid: Callable[[list[Any]], bool] | None = None


def _distinct(tokens: list[Any]) -> bool:
    return len(set(tokens)) == len(tokens)


def _reverse() -> Any:
    from tracr.compiler import lib
    from tracr.rasp import rasp

    return lib.make_reverse(rasp.tokens)


def _sort() -> Any:
    from tracr.compiler import lib
    from tracr.rasp import rasp

    return lib.make_sort_unique(rasp.tokens, rasp.tokens)


def _frac_prevs() -> Any:
    from tracr.compiler import lib
    from tracr.rasp import rasp

    return lib.make_frac_prevs(rasp.tokens == "x")


def _hist() -> Any:
    from tracr.compiler import lib

    return lib.make_hist()


PROGRAMS: dict[str, ProgramSpec] = {
    "reverse": ProgramSpec("reverse", _reverse, (1, 2, 3), 4),
    "sort": ProgramSpec("sort", _sort, (1, 2, 3, 4), 4, valid=_distinct),
    "frac_prevs": ProgramSpec("frac_prevs", _frac_prevs, ("x", "y"), 4, categorical=False),
    "hist": ProgramSpec("hist", _hist, (1, 2, 3), 4),
}
