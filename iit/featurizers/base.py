"""The featurizer concept: a map from a hidden state to features and back.

A `Featurizer` encodes a hidden state ``h`` (``[..., d]``) into features ``f``
(``[..., n]``) and decodes features back. What the decoder cannot reproduce is the
*reconstruction error* ``e = h - decode(encode(h))``; `Featurizer.featurize` returns
``(f, e)`` and `Featurizer.inverse` maps ``(f, e)`` back to ``decode(f) + e``, so the
round trip is the identity for every featurizer (PCA with fewer components and sparse
autoencoders included).

Featurizers are registered by kind (`register_featurizer`) so an intervention that holds one
can be saved and rebuilt (`iit.serialization`).
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from iit.errors import InterventionError, InterventionShapeError

__all__ = ["Featurizer", "register_featurizer", "featurizer_from_config", "FEATURIZERS"]

FEATURIZERS: dict[str, type[Featurizer]] = {}
"""The registry of featurizer classes by name (filled by `register_featurizer`); `featurizer_from_config` looks names up here."""


def in_compute_dtype(x: Tensor, *weights: Tensor) -> tuple[Tensor, ...]:
    """``x`` and ``weights`` in ``promote_types`` of all their dtypes, the weights moved to ``x``'s
    device (a float64 hidden state is never rounded to a float32 weight's dtype; a half-precision
    one computes in the float32 weights' dtype)."""
    dtype = x.dtype
    for w in weights:
        dtype = torch.promote_types(dtype, w.dtype)
    return (x.to(dtype), *(w.to(x.device, dtype) for w in weights))


def dtype_name(dtype: torch.dtype) -> str:
    """``"float32"`` for ``torch.float32`` (JSON-able configs)."""
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    """Inverse of `dtype_name`.

    Raises:
        InterventionError: not a floating torch dtype.
    """
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InterventionError(f"unknown floating dtype {name!r} in a featurizer config")
    return dtype


def register_featurizer(cls: type[Featurizer]) -> type[Featurizer]:
    """Class decorator: make ``cls`` loadable by its ``kind`` (see `featurizer_from_config`).

    Args:
        cls: a `Featurizer` subclass with a class attribute ``kind``; a class registered
            earlier under the same kind is replaced.

    Returns:
        ``cls`` itself (so it works as a decorator).

    Raises:
        AttributeError: ``cls`` has no ``kind`` attribute.
    """
    FEATURIZERS[cls.kind] = cls
    return cls


class Featurizer(nn.Module, metaclass=ABCMeta):
    """Base class: hidden state ``[..., d]`` <-> features ``[..., n_features]``.

    Subclasses set the class attribute ``kind``, the attributes ``d`` and ``n_features``, and
    implement `encode`, `decode` and `config` (the JSON-able constructor
    arguments that give tensors of the right shapes; the values come from ``state_dict``).

    Attributes:
        kind: the registry name (`register_featurizer`, `featurizer_from_config`).
        d: width of the hidden state.
        n_features: number of features.

    Raises:
        TypeError: instantiating the abstract base class or a subclass that does not implement
            `encode`, `decode` and `config`.

    Examples:
        Every featurizer's round trip ``inverse(*featurize(h))`` gives ``h`` back, also when
        the decoder alone cannot (a rank-1 PCA of 2-d points):

        >>> import torch
        >>> from iit.featurizers import PCAFeaturizer
        >>> acts = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [2.0, 2.1], [-2.0, -2.1]])
        >>> pca = PCAFeaturizer.fit(acts, k=1)
        >>> h = torch.tensor([[3.0, 1.0]])
        >>> f, error = pca.featurize(h)
        >>> f.shape, error.shape
        (torch.Size([1, 1]), torch.Size([1, 2]))
        >>> torch.allclose(pca.inverse(f, error), h)
        True
        >>> torch.allclose(pca.decode(f), h)
        False
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

    def basis(self) -> object:
        """The object whose features interventions share (itself; a
        `RotationFeaturizer` answers its `Rotation`, so it
        is checked together with the `iit.learned` interventions on that rotation)."""
        return self

    def check_width(self, h: Tensor, where: str) -> None:
        """Check that ``h`` (``[..., d]``) has this featurizer's width on its last axis.

        Args:
            h: hidden state ``[..., d]``.
            where: what the message names as the place of the check (e.g. the intervention).

        Raises:
            InterventionShapeError: ``h`` is a scalar or ``h.shape[-1] != d``.
        """
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
        """``"d=<d>, n_features=<n>"`` in the module's printed form."""
        return f"d={self.d}, n_features={self.n_features}"


def featurizer_from_config(kind: str, config: dict[str, Any]) -> Featurizer:
    """Rebuild a featurizer of a registered ``kind`` (values still to be loaded).

    Raises:
        InterventionError: an unknown kind (lists the registered ones).
    """
    if kind not in FEATURIZERS:
        raise InterventionError(f"unknown featurizer kind {kind!r}; registered: {sorted(FEATURIZERS)}")
    return FEATURIZERS[kind].from_config(config)
