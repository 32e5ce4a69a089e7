"""Exceptions raised by :mod:`iit`. Every message says what was wrong, what would be valid and,
where there is one, the fix.

Every class derives from :class:`IITError` *and* from the builtin exception that the same mistake
used to raise (``ValueError``, ``KeyError``, ``TypeError``, ``IndexError``, ``FileNotFoundError``),
so ``except ValueError`` code keeps working while ``except iit.IITError`` catches everything the
library raises on purpose.

Nearest names: :func:`did_you_mean` (``"; did you mean 'layers.0'?"``) is the project's one helper
for unknown names. It is defined in :mod:`causal_models.errors` (the lowest layer: ``causal_models``
imports nothing from ``iit``) and re-exported here; do not call ``difflib`` elsewhere.

Symptom / cause / fix of the general-purpose classes:

``ArgumentError``
    *Symptom*: ``n_steps must be >= 2 ...``. *Cause*: an argument or setting outside its valid
    range or set, or a tensor argument of the wrong shape. *Fix*: use a value the message allows.
``ArgumentTypeError``
    *Symptom*: ``coordinates must be a list of coordinates, got one Coordinate; wrap it in [...]``.
    *Cause*: an argument of the wrong type. *Fix*: as the message says.
``NamingError``
    *Symptom*: ``unknown task 'equalty'; did you mean 'equality'?``. *Cause*: a name that is not one
    of the valid ones, or one that is not allowed (a ``.`` in an intervention name). *Fix*: use a
    listed name.
``OutOfRangeError``
    *Symptom*: ``row 5 is out of range for activations of 3 rows``. *Cause*: an integer index
    (a row, a token position) outside its axis. *Fix*: keep it inside the range given.
``DamagedFileError``
    *Symptom*: ``... is damaged or unsafe and was not loaded: ...``. *Cause*: a safetensors file or
    checkpoint that is truncated, random, tampered with (unknown class, bad metadata, missing
    tensor) or holds code (a pickle payload). *Fix*: re-create the file with the code that wrote
    it; never load files from sources you do not trust.
``MissingFileError``
    *Symptom*: ``no file ...`` / ``folder ... does not exist``. *Cause*: a path to read that does
    not exist, or a folder to write into that does not exist. *Fix*: create the folder or correct
    the path.
"""

from __future__ import annotations

from collections.abc import Iterable

from causal_models.errors import did_you_mean

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
]


class IITError(Exception):
    """Base class of every error raised by :mod:`iit`."""


class CoordinateError(IITError, KeyError):
    """A coordinate does not resolve on the model: unknown module, bad output selector, or an
    index outside the hidden state's shape."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class InterventionShapeError(IITError, ValueError):
    """Values written at a coordinate do not fit it (shape, dtype, device or batch size)."""


class InterventionError(IITError, ValueError):
    """An intervention request is malformed (empty list, missing source, bad row mask, ...)."""


class HookFiringError(IITError, RuntimeError):
    """A hooked module ran more than once in one forward pass (weight tying, shared blocks,
    activation checkpointing) or never ran at all."""


class AlignmentError(IITError, ValueError):
    """An alignment does not match its causal model or its neural model."""


class TargetError(IITError, ValueError):
    """An attribution target does not fit the model output."""


class UnsupportedOpError(IITError, TypeError):
    """A traced computation contains an operation that a custom backward pass (semiring
    backpropagation) has no rule for.

    Symptom: ``semiring_backward`` fails before running. Cause: the model uses an ATen op outside
    the supported table (listed in the message). Fix: rewrite that part of the model with
    supported ops, or detach it if it does not depend on the inputs.
    """


class ArgumentError(IITError, ValueError):
    """An argument or setting outside its valid range or set, or a tensor argument of the wrong
    shape (configs of attribution methods, training and tasks, Boundless DAS boundaries, ...)."""


class ArgumentTypeError(IITError, TypeError):
    """An argument of the wrong type: one tensor or one coordinate where a list is expected, an
    object that is not a module, a tensor that should be a list of them, ..."""


class NamingError(IITError, KeyError, ValueError):
    """A name that is not one of the valid ones (the nearest are listed) or that is not allowed
    (a ``'.'`` in an intervention name). Both a ``KeyError`` and a ``ValueError``: the two
    builtins such mistakes raised before."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class OutOfRangeError(IITError, IndexError):
    """An integer index (a row of collected activations, a token position) outside its axis."""


class DamagedFileError(IITError, ValueError):
    """A file that is damaged, tampered with or unsafe; it was not loaded (the original error is
    chained as ``__cause__``)."""


class MissingFileError(IITError, FileNotFoundError):
    """A file to read, or the folder to write into, does not exist."""

    def __str__(self) -> str:  # OSError would format (errno, strerror)
        return str(self.args[0]) if self.args else ""


def unknown_name(name: object, valid: Iterable[object], what: str) -> str:
    """``"unknown {what} 'name'; did you mean 'x'? valid: [...]"`` for any iterable of valid names."""
    names = [str(v) for v in valid]
    hint = did_you_mean(name, names)
    return f"unknown {what} {name!r}{hint}{' ' if hint else '; '}valid: {names}"
