"""Digit-sum tasks (seed 004): ``x, y, z -> S = x + y -> O = S + z`` and the 4-input variant.

* `DigitSumMLP`: alignment over the whole causal graph (inputs to embedding slices,
  ``S`` to a slice of the second hidden layer), seed 004's ``train.py``.
* `DigitSumPartialMLP`: the 4-input graph ``S1 = w + x``, ``S2 = S1 + y``,
  ``O = S2 + z``, aligning only ``S1`` and ``S2`` (part of the graph), seed 004's ``train2.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from causal_models import CausalModel, standard
from iit import Coordinate, Index
from iit.training import IITTask
from tasks.networks import TokenMLP, stack_inputs

__all__ = ["DigitSumMLP", "DigitSumPartialMLP"]


class DigitSumMLP(IITTask):
    """Three digits ``0..max_digit``; MLP over one-hot-like embeddings.

    Args:
        max_digit: largest digit.
        d_embed: embedding width per digit (the slices aligned to ``x, y, z``).
        hidden: hidden width; ``S`` is aligned to ``layers.1`` units ``[0, d_embed)``.
    """

    name = "digit_sum_mlp"

    def __init__(self, max_digit: int = 9, d_embed: int = 32, hidden: int = 96) -> None:
        self.max_digit, self.d_embed, self.hidden = max_digit, d_embed, hidden

    def causal_model(self) -> CausalModel:
        return standard.digit_sum(self.max_digit)

    def build_network(self) -> nn.Module:
        return TokenMLP(self.max_digit + 1, 3, self.d_embed, self.hidden, 3, 3 * self.max_digit + 1)

    def alignments(self) -> Mapping[str, Mapping[str, object]]:
        e = self.d_embed
        emb = {v: Coordinate("embedded", Index.dims(i * e, (i + 1) * e)) for i, v in enumerate("xyz")}
        return {
            "default": {**emb, "S": Coordinate("layers.1", Index.dims(0, e))},
            "S_only": {"S": Coordinate("layers.1", Index.dims(0, e))},
            "S_elsewhere": {"S": Coordinate("layers.1", Index.dims(e, 2 * e))},
            "S_first_layer": {"S": Coordinate("layers.0", Index.dims(0, e))},
        }

    def encode_inputs(self, values: Mapping[str, Tensor]) -> Tensor:
        return stack_inputs(dict(values), ("x", "y", "z"))


class DigitSumPartialMLP(IITTask):
    """Four digits; only the partial sums ``S1`` and ``S2`` are aligned."""

    name = "digit_sum_partial_mlp"

    def __init__(self, max_digit: int = 9, d_embed: int = 16, hidden: int = 96, slice_width: int = 32) -> None:
        self.max_digit, self.d_embed, self.hidden, self.width = max_digit, d_embed, hidden, slice_width

    def causal_model(self) -> CausalModel:
        return standard.digit_sum4(self.max_digit)

    def build_network(self) -> nn.Module:
        return TokenMLP(self.max_digit + 1, 4, self.d_embed, self.hidden, 3, 4 * self.max_digit + 1)

    def alignments(self) -> Mapping[str, Mapping[str, object]]:
        w = self.width
        return {
            "default": {"S1": Coordinate("layers.0", Index.dims(0, w)), "S2": Coordinate("layers.1", Index.dims(0, w))},
            "swapped": {"S1": Coordinate("layers.1", Index.dims(0, w)), "S2": Coordinate("layers.0", Index.dims(0, w))},
        }

    def encode_inputs(self, values: Mapping[str, Tensor]) -> Tensor:
        return stack_inputs(dict(values), ("w", "x", "y", "z"))
