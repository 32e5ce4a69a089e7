"""Exceptions raised by `iit`.

Every message says what was wrong, what would be valid and, where there is one, the fix.

Every class derives from `IITError` *and* from the builtin exception that the same mistake used to
raise (``ValueError``, ``KeyError``, ``TypeError``, ``IndexError``, ``FileNotFoundError``), so
``except ValueError`` code keeps working while ``except iit.IITError`` catches everything the
library raises on purpose.

Nearest names: `did_you_mean` (``"; did you mean 'layers.0'?"``) is the project's one helper for
unknown names. It is defined in `causal_models.errors` (the lowest layer: ``causal_models`` imports
nothing from ``iit``) and re-exported here; do not call ``difflib`` elsewhere.

Symptom, cause and fix of the general-purpose classes:

* `ArgumentError`. Symptom: ``n_steps must be >= 2 ...``. Cause: an argument or setting outside its
  valid range or set, or a tensor argument of the wrong shape. Fix: use a value the message allows.
* `ArgumentTypeError`. Symptom:
  ``coordinates must be a list of coordinates, got one Coordinate; wrap it in [...]``. Cause: an
  argument of the wrong type. Fix: as the message says.
* `NamingError`. Symptom: ``unknown task 'equalty'; did you mean 'equality'?``. Cause: a name that
  is not one of the valid ones, or one that is not allowed (a ``.`` in an intervention name). Fix:
  use a listed name.
* `OutOfRangeError`. Symptom: ``row 5 is out of range for activations of 3 rows``. Cause: an integer
  index (a row, a token position) outside its axis. Fix: keep it inside the range given.
* `DamagedFileError`. Symptom: ``... is damaged or unsafe and was not loaded: ...``. Cause: a
  safetensors file or checkpoint that is truncated, random, tampered with (unknown class, bad
  metadata, missing tensor) or holds code (a pickle payload). Fix: re-create the file with the code
  that wrote it; never load files from sources you do not trust.
* `MissingFileError`. Symptom: ``no file ...`` / ``folder ... does not exist``. Cause: a path to
  read that does not exist, or a folder to write into that does not exist. Fix: create the folder or
  correct the path.

Examples:
    >>> from iit.errors import ArgumentError, IITError
    >>> try:
    ...     raise ArgumentError("n_steps must be >= 2, got 1")
    ... except ValueError as exc:  # also an IITError
    ...     print(isinstance(exc, IITError), exc)
    True n_steps must be >= 2, got 1
"""

from __future__ import annotations

from collections.abc import Iterable

from causal_models.errors import add_help_note, did_you_mean, error_page

__all__ = [
    "IITError",
    "CoordinateError",
    "InterventionShapeError",
    "InterventionError",
    "HookFiringError",
    "AlignmentError",
    "TargetError",
    "UnsupportedOpError",
    "ArgumentError",
    "ArgumentTypeError",
    "NamingError",
    "OutOfRangeError",
    "DamagedFileError",
    "MissingFileError",
    "did_you_mean",
    "unknown_name",
    "error_page",
]


class IITError(Exception):
    """Base class of every error raised by `iit`.

    ``except iit.IITError`` catches every error the library raises on purpose. Each error carries
    a note (PEP 678, printed under the message in tracebacks) naming its documentation page, e.g.
    ``Help: docs/errors/naming-error.md``; ``str(error)`` is the message alone.

    Raises:
        TypeError: an unknown keyword argument.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        add_help_note(self, DOCUMENTED_ERRORS)


class CoordinateError(IITError, KeyError):
    """A coordinate does not resolve on the model.

    An unknown module, a bad output selector, or an index outside the hidden state's shape. Also a
    ``KeyError``; ``str(error)`` is the plain message.

    Raises:
        TypeError: an unknown keyword argument.
    """

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class InterventionShapeError(IITError, ValueError):
    """Values written at a coordinate do not fit it (shape, dtype, device or batch size).

    Raises:
        TypeError: an unknown keyword argument.
    """


class InterventionError(IITError, ValueError):
    """An intervention request is malformed (empty list, missing source, bad row mask, ...).

    Raises:
        TypeError: an unknown keyword argument.
    """


class HookFiringError(IITError, RuntimeError):
    """A hooked module ran more than once in one forward pass, or never ran at all.

    Weight tying, shared blocks and activation checkpointing make a module run several times.

    Raises:
        TypeError: an unknown keyword argument.
    """


class AlignmentError(IITError, ValueError):
    """An alignment does not match its causal model or its neural model.

    Raises:
        TypeError: an unknown keyword argument.
    """


class TargetError(IITError, ValueError):
    """An attribution target does not fit the model output.

    Raises:
        TypeError: an unknown keyword argument.
    """


class UnsupportedOpError(IITError, TypeError):
    """A traced computation contains an operation that a custom backward pass has no rule for.

    Symptom: ``semiring_backward`` fails before running. Cause: the model uses an ATen op outside
    the supported table (listed in the message). Fix: rewrite that part of the model with supported
    ops, or detach it if it does not depend on the inputs.

    Raises:
        TypeError: an unknown keyword argument.
    """


class ArgumentError(IITError, ValueError):
    """An argument or setting outside its valid range or set, or a tensor of the wrong shape.

    Raised for configs of attribution methods, training and tasks, Boundless DAS boundaries, ...

    Raises:
        TypeError: an unknown keyword argument.
    """


class ArgumentTypeError(IITError, TypeError):
    """An argument of the wrong type.

    One tensor or one coordinate where a list is expected, an object that is not a module, a tensor
    that should be a list of them, ...

    Raises:
        TypeError: an unknown keyword argument.
    """


class NamingError(IITError, KeyError, ValueError):
    """A name that is not one of the valid ones (the nearest are listed) or that is not allowed.

    A ``'.'`` in an intervention name is not allowed. Both a ``KeyError`` and a ``ValueError``: the
    two builtins such mistakes raised before; ``str(error)`` is the plain message.

    Raises:
        TypeError: an unknown keyword argument.
    """

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class OutOfRangeError(IITError, IndexError):
    """An integer index (a row of collected activations, a token position) outside its axis.

    Raises:
        TypeError: an unknown keyword argument.
    """


class DamagedFileError(IITError, ValueError):
    """A file that is damaged, tampered with or unsafe; it was not loaded.

    The original error is chained as ``__cause__``.

    Raises:
        TypeError: an unknown keyword argument.
    """


class ManifestMismatchError(ArgumentError):
    """A results folder holds results computed from other settings, data, weights or places.

    Reusing a search's ``out_dir`` then would give stale results: use a new folder or delete it.

    Raises:
        TypeError: an unknown keyword argument.
    """


class MissingFileError(IITError, FileNotFoundError):
    """A file to read, or the folder to write into, does not exist.

    Also a ``FileNotFoundError``; ``str(error)`` is the plain message.

    Raises:
        TypeError: an unknown keyword argument.
    """

    def __str__(self) -> str:  # OSError would format (errno, strerror)
        return str(self.args[0]) if self.args else ""


def unknown_name(name: object, valid: Iterable[object], what: str) -> str:
    """The message for an unknown name, for any iterable of valid names.

    Args:
        name: The offending name.
        valid: Every valid name (any objects; listed as strings).
        what: What the names denote (``"module"``, ``"task"``, ...).

    Returns:
        ``"unknown {what} 'name'; did you mean 'x'? valid: [...]"``.

    Raises:
        TypeError: ``valid`` is not iterable.

    Examples:
        >>> unknown_name("equalty", ["equality", "digit_sum"], "task")
        "unknown task 'equalty'; did you mean 'equality'? valid: ['equality', 'digit_sum']"
    """
    names = [str(v) for v in valid]
    hint = did_you_mean(name, names)
    return f"unknown {what} {name!r}{hint}{' ' if hint else '; '}valid: {names}"


DOCUMENTED_ERRORS: tuple[type[BaseException], ...] = (
    IITError, CoordinateError, InterventionShapeError, InterventionError, HookFiringError,
    AlignmentError, TargetError, UnsupportedOpError, ArgumentError, ArgumentTypeError, NamingError,
    OutOfRangeError, DamagedFileError, ManifestMismatchError, MissingFileError,
)
"""The classes with a page under ``docs/errors/`` (every error class of this module); `error_page`
names the page of a class."""
