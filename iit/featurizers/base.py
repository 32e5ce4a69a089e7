"""The featurizer concept: a map from a hidden state to features and back.

A :class:`Featurizer` encodes a hidden state ``h`` (``[..., d]``) into features ``f``
(``[..., n]``) and decodes features back. What the decoder cannot reproduce is the
*reconstruction error* ``e = h - decode(encode(h))``; :meth:`Featurizer.featurize` returns
``(f, e)`` and :meth:`Featurizer.inverse` maps ``(f, e)`` back to ``decode(f) + e``, so the
round trip is the identity for every featurizer (PCA with fewer components and sparse
autoencoders included).

Featurizers are registered by kind (:func:`register_featurizer`) so an intervention that holds one
can be saved and rebuilt (:mod:`iit.serialization`).
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any, ClassVar

from torch import Tensor, nn

from iit.errors import InterventionError, InterventionShapeError

__all__ = ["Featurizer", "register_featurizer", "featurizer_from_config", "FEATURIZERS"]

FEATURIZERS: dict[str, type[Featurizer]] = {}


def register_featurizer(cls: type[Featurizer]) -> type[Featurizer]:
    """Class decorator: make ``cls`` loadable by its ``kind`` (see :func:`featurizer_from_config`)."""
    FEATURIZERS[cls.kind] = cls
    return cls


class Featurizer(nn.Module, metaclass=ABCMeta):
    """Base class: hidden state ``[..., d]`` <-> features ``[..., n_features]``.

    Subclasses set the class attribute ``kind``, the attributes ``d`` and ``n_features``, and
    implement :meth:`encode`, :meth:`decode` and :meth:`config` (the JSON-able constructor
    arguments that give tensors of the right shapes; the values come from ``state_dict``).
    """

    kind: ClassVar[str] = ""
    d: int
    n_features: int

    @abstractmethod
    def encode(self, h: Tensor) -> Tensor:
        """Features of ``h``: ``[..., d] -> [..., n_features]``."""

    @abstractmethod
    def decode(self, f: Tensor) -> Tensor:
        """Hidden state of features ``f``, without the reconstruction error: ``[..., n_features]
        -> [..., d]``."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (shapes and options, no tensor values)."""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Featurizer:
        """A featurizer with the shapes of ``config``; load its values with ``load_state_dict``."""
        return cls(**config)

    def check_width(self, h: Tensor, where: str) -> None:
        """Raise :class:`InterventionShapeError` unless ``h.shape[-1] == d``."""
        if h.dim() == 0 or h.shape[-1] != self.d:
            raise InterventionShapeError(
                f"{where}: the {self.kind} featurizer works on hidden states with last axis d={self.d}, "
                f"got values of shape {tuple(h.shape)}; select a slot whose last axis has {self.d} entries"
            )

    def featurize(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``(features [..., n_features], error [..., d])`` with ``inverse(*featurize(h)) == h``."""
        self.check_width(h, type(self).__name__)
        f = self.encode(h)
        return f, h - self.decode(f)

    def inverse(self, f: Tensor, error: Tensor) -> Tensor:
        """``decode(f) + error``: ``[..., n_features], [..., d] -> [..., d]``."""
        return self.decode(f) + error

    def extra_repr(self) -> str:
        return f"d={self.d}, n_features={self.n_features}"


def featurizer_from_config(kind: str, config: dict[str, Any]) -> Featurizer:
    """Rebuild a featurizer of a registered ``kind`` (values still to be loaded).

    Raises:
        InterventionError: an unknown kind (lists the registered ones).
    """
    if kind not in FEATURIZERS:
        raise InterventionError(f"unknown featurizer kind {kind!r}; registered: {sorted(FEATURIZERS)}")
    return FEATURIZERS[kind].from_config(config)
