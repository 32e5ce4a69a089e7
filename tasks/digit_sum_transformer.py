"""Digit sum with a small transformer (seed 004's ``train3.py``): ``x, y, z -> S = x + y -> O =
S + z``, the digits as tokens ``[x, y, z, READ]`` and the sum read out at the last (``READ``)
position.

``S`` is aligned to a slice of the residual stream after the first block at the read-out
position (generic `iit.Coordinate` with `iit.Index.positions`), so the second block
must add ``z`` to the partial sum that the first one left there.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from causal_models import CausalModel, standard
from iit import Coordinate, Index
from iit.alignment import AlignedTo
from iit.errors import ArgumentError
from iit.training import IITTask
from tasks.networks import TinyTransformer

__all__ = ["DigitSumTransformer"]


class DigitSumTransformer(IITTask):
    """Three digits ``0..max_digit`` as tokens, a 2-block transformer, ``S`` aligned to the
    residual stream.

    Args:
        max_digit: largest digit; the read-out token is ``max_digit + 1``.
        d_model: residual width.
        n_heads: attention heads per block.
        n_layers: number of blocks (>= 2: ``S`` sits after block ``s_layer`` and needs a later
            block to be combined with ``z``).
        s_layer: the block whose output holds ``S``.
        s_width: ``S`` occupies dims ``[0, s_width)`` of the residual stream at the read-out
            position.

    Raises:
        ValueError: ``s_layer`` not followed by another block, or ``s_width > d_model``.
    """

    name = "digit_sum_transformer"

    def __init__(
        self,
        max_digit: int = 9,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        s_layer: int = 0,
        s_width: int = 32,
    ) -> None:
        if not 0 <= s_layer < n_layers - 1:
            raise ArgumentError(f"s_layer must be in [0, {n_layers - 1}) so a later block can add z, got {s_layer}")
        if not 0 < s_width <= d_model:
            raise ArgumentError(f"s_width must be in (0, d_model={d_model}], got {s_width}")
        self.max_digit, self.d_model, self.n_heads, self.n_layers = max_digit, d_model, n_heads, n_layers
        self.s_layer, self.s_width = s_layer, s_width

    @property
    def read_token(self) -> int:
        """The id of the read-out token appended after the digits."""
        return self.max_digit + 1

    def causal_model(self) -> CausalModel:
        return standard.digit_sum(self.max_digit)

    def build_network(self) -> nn.Module:
        return TinyTransformer(
            vocab=self.max_digit + 2,
            seq_len=4,
            d_model=self.d_model,
            n_heads=self.n_heads,
            d_mlp=4 * self.d_model,
            n_layers=self.n_layers,
            n_out=3 * self.max_digit + 1,
        )

    def _s(self, layer: int, position: int, dims: tuple[int, int]) -> Coordinate:
        return Coordinate(f"blocks.{layer}", Index.positions([position], dims=dims))

    def alignments(self) -> Mapping[str, Mapping[str, AlignedTo]]:
        """``default``: ``S`` -> ``blocks.{s_layer}`` at the read-out position (3), dims
        ``[0, s_width)``; ``S_at_y`` (same dims at the ``y`` token, position 1) and
        ``S_other_dims`` (the next ``s_width`` dims, when they exist) are alternatives to compare."""
        w = self.s_width
        out: dict[str, dict[str, AlignedTo]] = {
            "default": {"S": self._s(self.s_layer, 3, (0, w))},
            "S_at_y": {"S": self._s(self.s_layer, 1, (0, w))},
        }
        if 2 * w <= self.d_model:
            out["S_other_dims"] = {"S": self._s(self.s_layer, 3, (w, 2 * w))}
        return out

    def encode_inputs(self, values: Mapping[str, Tensor]) -> Tensor:
        """Tokens ``[batch, 4]``: ``x, y, z`` and the read-out token."""
        digits = torch.stack([values["x"], values["y"], values["z"]], dim=1)  # [batch, 3]
        read = torch.full_like(digits[:, :1], self.read_token)  # [batch, 1]
        return torch.cat([digits, read], dim=1)
