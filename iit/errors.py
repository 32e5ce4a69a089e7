"""Exceptions raised by :mod:`iit`. Every message says what was wrong and what would be valid."""

from __future__ import annotations

__all__ = [
    "IITError",
    "CoordinateError",
    "InterventionShapeError",
    "InterventionError",
    "HookFiringError",
    "AlignmentError",
    "TargetError",
    "UnsupportedOpError",
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
