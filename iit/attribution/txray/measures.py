"""TX-Ray measures between two recordings (two models, or two training stages) per neuron."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from iit.attribution.txray.distributions import NeuronDistributions
from iit.errors import ArgumentError

__all__ = ["hellinger_distance", "TXRayComparison", "compare"]


def hellinger_distance(p: Tensor, q: Tensor) -> Tensor:
    """Row-wise Hellinger distance ``sqrt(0.5 Σ (√p - √q)²)`` of distributions ``[..., F]``.

    Returns ``[...]`` in ``[0, 1]`` (0 = identical, 1 = disjoint supports).

    Raises:
        ArgumentError: if the shapes differ or an entry is negative.
    """
    if p.shape != q.shape:
        raise ArgumentError(
            f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}"
        )
    if (p < 0).any() or (q < 0).any():
        raise ArgumentError("distributions must be non-negative")
    return torch.sqrt(0.5 * ((p.sqrt() - q.sqrt()) ** 2).sum(-1))


@dataclass(frozen=True)
class TXRayComparison:
    """Per-neuron comparison of stage/model ``a`` with ``b`` (all tensors ``[N]``).

    Attributes:
        shared: neurons active in both (the only ones with a defined distance).
        hellinger: Hellinger distance (NaN where not shared).
        hellinger_length: size of the union of both supports.
        length_a, length_b: support sizes; ``length_shift = length_b - length_a``
            (negative = specialisation, positive = generalisation).
        mass_a, mass_b: each neuron's share of its layer's activation mass.
    """

    shared: Tensor
    hellinger: Tensor
    hellinger_length: Tensor
    length_a: Tensor
    length_b: Tensor
    length_shift: Tensor
    mass_a: Tensor
    mass_b: Tensor

    def ranked(self, k: int, which: str = "top") -> list[int]:
        """Indices of the ``k`` shared neurons with the largest (``"top"``) or smallest
        (``"least"``) Hellinger distance.

        Raises:
            ArgumentError: for another ``which``.
        """
        if which not in ("top", "least"):
            raise ArgumentError(f"which must be 'top' or 'least', got {which!r}")
        idx = torch.nonzero(self.shared).flatten()
        order = self.hellinger[idx].argsort(descending=which == "top")
        return idx[order][:k].tolist()


def compare(a: NeuronDistributions, b: NeuronDistributions) -> TXRayComparison:
    """Compare two recordings of the same layer, neuron by neuron.

    Raises:
        ArgumentError: if the neuron or feature counts differ.
    """
    if a.mass.shape != b.mass.shape:
        raise ArgumentError(
            f"recordings differ in shape [neurons, features]: {tuple(a.mass.shape)} vs {tuple(b.mass.shape)}"
        )
    shared = a.active() & b.active()
    h = hellinger_distance(a.distributions(), b.distributions())
    h = torch.where(shared, h, torch.full_like(h, float("nan")))
    union = ((a.mass > 0) | (b.mass > 0)).sum(1)
    la, lb = a.length(), b.length()
    return TXRayComparison(
        shared, h, union, la, lb, lb - la, a.activation_mass(), b.activation_mass()
    )
