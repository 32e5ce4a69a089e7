"""Exceptions raised by `causal_models`.

Every message says what was wrong and what would be valid. All exceptions derive from
`CausalModelError`, itself a ``ValueError``, so ``except ValueError`` keeps working.

Symptom, cause and fix of each class:

* `UnknownVariableError`. Symptom: ``unknown variable 'S3' ... did you mean 'S2'?``. Cause: a
  name that is not a variable of the model (a typo, or a variable of another model). Fix: use one
  of the listed names.
* `GraphError`. Symptom: ``cycle S -> O -> S``, ``parent 'q' of 'S' is not a variable``. Cause:
  the DAG or the mapping given to `CausalModel` is not a valid causal model. Fix: edit the graph
  as the message says.
* `DomainError`. Symptom: ``value 12 of 'x' (row 3) is outside IntegerRange(0, 10)``. Cause: an
  input or an intervention value lies outside the variable's domain, or has the wrong dtype or
  shape. Fix: pass values of the listed dtype and shape inside the domain.
* `MechanismError`. Symptom: ``mechanism of 'S' raised ...`` or ``returned shape (4, 2), expected
  (4,)``. Cause: a user mechanism is broken or does not return ``[batch, *domain.shape]``. Fix:
  correct it.
* `BatchShapeError`. Symptom: ``source 1 has batch size 8, base has 16``. Cause: tensors that must
  share the batch dimension do not. Fix: give every input, source and mask the same leading size.
* `InterventionSpecError`. Symptom: ``source index 2 for 'S' is out of range``. Cause: a malformed
  intervention request (a bad source index, a row mask for a variable that is not intervened).
  Fix: as the message says.
* `MissingInputError`. Symptom: ``missing input 'z'``. Cause: ``run``, ``do`` and ``interchange``
  need a value for every input variable. Fix: pass all inputs listed in the message.
* `SamplingError`. Symptom: ``could not balance labels: class 0 appeared 3 times in 100000
  draws``. Cause: a sampler or a dataset option cannot be satisfied. Fix: relax the option or
  change the sampler.
* `DatasetIndexError`. Symptom: ``index 12 out of range for a dataset of 10 examples``. Cause: an
  example index outside the dataset. Fix: use ``0 <= i < len(dataset)`` (it is also an
  ``IndexError``).

Nearest names: `did_you_mean` is the one "did you mean" helper of the whole project. It lives
here, in the lowest layer, because `causal_models` imports nothing from `iit`; `iit.errors`
re-exports it, and every unknown-name message of `iit`, `causal_models` and `tasks` uses it.

Examples:
    Every error is also the builtin exception the same mistake would raise, and names the
    nearest valid names:

    >>> from causal_models import CausalModel, IntegerRange
    >>> model = CausalModel.from_mapping(
    ...     {"x": ((), None, IntegerRange(0, 3)), "S2": (("x",), lambda x: x, IntegerRange(0, 3))},
    ...     outputs=["S2"],
    ... )
    >>> try:
    ...     model.domain("S3")
    ... except KeyError as exc:
    ...     print(exc)
    unknown variable 'S3'; did you mean 'S2'? (valid: x, S2)
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

__all__ = [
    "CausalModelError",
    "UnknownVariableError",
    "GraphError",
    "DomainError",
    "MechanismError",
    "BatchShapeError",
    "InterventionSpecError",
    "MissingInputError",
    "SamplingError",
    "DatasetIndexError",
    "did_you_mean",
    "unknown_name_message",
    "error_page",
]

HELP_PAGES = "docs/errors"
"""Folder (in the repository) of the error pages; the site serves them under ``errors/``."""


def error_page(cls: type[BaseException]) -> str:
    """The documentation page of an error class: its name in kebab case under ``docs/errors/``.

    Args:
        cls: an error class of ``causal_models`` or ``iit``.

    Returns:
        The page's path in the repository, e.g. ``"docs/errors/naming-error.md"``.

    Raises:
        TypeError: ``cls`` is not a class.

    Examples:
        >>> error_page(UnknownVariableError)
        'docs/errors/unknown-variable-error.md'
    """
    slug = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", cls.__name__).lower()
    return f"{HELP_PAGES}/{slug}.md"


def _help_note(error: BaseException, documented: tuple[type[BaseException], ...]) -> str:
    """``"Help: <page> ..."`` for the nearest class in ``error``'s MRO that has a page."""
    cls = next(c for c in type(error).__mro__ if c in documented)
    page = error_page(cls)
    return f"Help: {page} (the site's errors/{page.rsplit('/', 1)[-1][:-3]}/ page; python3 dev.py docs builds it)"


def add_help_note(error: BaseException, documented: tuple[type[BaseException], ...]) -> None:
    """Attach the help note (PEP 678) naming ``error``'s documentation page, once.

    ``str(error)`` is unchanged; tracebacks print the note under the message.

    Args:
        error: the exception being constructed.
        documented: the classes that have a page (``error``'s nearest one is named).

    Raises:
        StopIteration: no class in ``error``'s MRO is in ``documented``.
    """
    note = _help_note(error, documented)
    if note not in getattr(error, "__notes__", ()):
        error.add_note(note)


class CausalModelError(ValueError):
    """Base class of every error raised by `causal_models` (also a ``ValueError``).

    Each error carries a note (PEP 678, printed under the message in tracebacks) naming its
    documentation page (`error_page`); ``str(error)`` is the message alone.

    Raises:
        TypeError: keyword arguments (the constructor takes only the message).
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        add_help_note(self, DOCUMENTED_ERRORS)


class UnknownVariableError(CausalModelError, KeyError):
    """A variable name is not part of the model; the message lists the nearest valid names.

    Also a ``KeyError``; ``str(error)`` is the plain message.

    Raises:
        TypeError: keyword arguments (the constructor takes only the message).
    """

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class GraphError(CausalModelError):
    """The graph is not a valid causal model.

    A cycle, a missing parent, a root with a mechanism, a non-root without one, or an output not
    reachable from any input.

    Raises:
        TypeError: keyword arguments (the constructor takes only the message).
    """


class DomainError(CausalModelError):
    """A value is outside its variable's domain, or has the wrong dtype or shape for it.

    Raises:
        TypeError: keyword arguments (the constructor takes only the message).
    """


class MechanismError(CausalModelError):
    """A mechanism raised, or returned a value of the wrong shape or dtype.

    A mechanism must return ``[batch, *domain.shape]`` of the domain's dtype kind.

    Raises:
        TypeError: keyword arguments (the constructor takes only the message).
    """


class BatchShapeError(CausalModelError):
    """Tensors that must share a batch dimension (inputs, sources, row masks) do not.

    Raises:
        TypeError: keyword arguments (the constructor takes only the message).
    """


class InterventionSpecError(CausalModelError):
    """An intervention request is malformed (source index out of range, stray row mask, ...).

    Raises:
        TypeError: keyword arguments (the constructor takes only the message).
    """


class MissingInputError(CausalModelError, KeyError):
    """A run was given no value for some input variable; the message lists every input needed.

    Also a ``KeyError``; ``str(error)`` is the plain message.

    Raises:
        TypeError: keyword arguments (the constructor takes only the message).
    """

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class SamplingError(CausalModelError):
    """A sampler or a counterfactual-data option cannot be satisfied.

    Raises:
        TypeError: keyword arguments (the constructor takes only the message).
    """


class DatasetIndexError(CausalModelError, IndexError):
    """An example index outside a dataset.

    Also an ``IndexError``, so iteration protocols work.

    Raises:
        TypeError: keyword arguments (the constructor takes only the message).
    """


def did_you_mean(name: object, valid: Iterable[object], *, n: int = 3, cutoff: float = 0.5) -> str:
    """The ``"; did you mean 'a' or 'b'?"`` hint for an unknown name.

    Compares the string forms with ``difflib.get_close_matches``.

    Args:
        name: The offending name.
        valid: The valid names (any objects; compared as strings).
        n: At most this many suggestions.
        cutoff: Similarity in ``[0, 1]`` a suggestion needs.

    Returns:
        The hint, or ``""`` when no valid name is close.

    Raises:
        ValueError: ``n <= 0`` or ``cutoff`` outside ``[0, 1]`` (from ``difflib``).
        TypeError: ``valid`` is not iterable.

    Examples:
        >>> did_you_mean("layer.0", ["layers.0", "layers.1", "head"])
        "; did you mean 'layers.0' or 'layers.1'?"
        >>> did_you_mean("zzz", ["layers.0"])
        ''
    """
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=n, cutoff=cutoff)
    if not close:
        return ""
    names = [repr(c) for c in close]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f"; did you mean {listed}?"


def unknown_name_message(name: object, valid: Iterable[str], what: str = "variable") -> str:
    """The message for an unknown name: what it is, the nearest valid names, and every valid name.

    Args:
        name: The offending name.
        valid: Every valid name, in the order to list them.
        what: What the names denote (``"variable"``, ``"input"``, ...).

    Returns:
        ``"unknown {what} 'name'; did you mean ...? (valid: ...)"``.

    Raises:
        TypeError: ``valid`` is not iterable.

    Examples:
        >>> unknown_name_message("S3", ["x", "S2"])
        "unknown variable 'S3'; did you mean 'S2'? (valid: x, S2)"
    """
    valid_list = [str(v) for v in valid]
    return f"unknown {what} {name!r}{did_you_mean(name, valid_list)} (valid: {', '.join(valid_list)})"


DOCUMENTED_ERRORS: tuple[type[BaseException], ...] = (
    CausalModelError, UnknownVariableError, GraphError, DomainError, MechanismError, BatchShapeError,
    InterventionSpecError, MissingInputError, SamplingError, DatasetIndexError,
)
"""The classes with a page under ``docs/errors/`` (every error class of this module)."""
