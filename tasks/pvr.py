"""Pointer-value retrieval with an MLP (synthetic MNIST-PVR; reference §2.3, tasks E and F).

``TL, TR, BL, BR`` are digits ``0..9``; ``O`` is the digit in the quadrant ``TL`` points to
(``0..3 -> TR``, ``4..6 -> BL``, ``7..9 -> BR``). The four digits are tokens embedded and
concatenated; each input variable is aligned to its own block of the first hidden layer
(``layers.0``). The circuit reads those blocks with the first ``4 * block`` units of the second
hidden layer (``layers.1``); the remaining units of both hidden layers form the unaligned,
non-circuit blocks that strict IIT resample-ablates. Plain IIT already keeps the unaligned
``layers.0`` units from mattering (every interchange of an aligned block contradicts them), but
not the unaligned ``layers.1`` units: they compute from the intervened blocks, like a non-circuit
attention head reading the residual stream, so only strict IIT makes them irrelevant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from causal_models import CausalModel, standard
from iit import Coordinate, Index
from iit.alignment import AlignedTo
from iit.errors import ArgumentError
from iit.training import IITTask
from tasks.networks import TokenMLP, stack_inputs

__all__ = ["PointerValueMLP", "QUADRANTS"]

QUADRANTS: tuple[str, ...] = ("TL", "TR", "BL", "BR")


class PointerValueMLP(IITTask):
    """``tokens [batch, 4]`` -> ``TokenMLP`` (2 hidden layers) -> 10 classes.

    Both hidden layers have width ``4 * block + n_unaligned * unaligned_block``. ``layers.0``
    holds ``TL, TR, BL, BR`` in blocks ``[0, block)``, ``[block, 2 block)``, ...; in each hidden
    layer the ``n_unaligned`` blocks after the first ``4 * block`` units are outside the
    circuit (`unaligned_coordinates`).

    Args:
        d_embed: embedding width per digit.
        block: units per aligned variable.
        n_unaligned: number of unaligned blocks in ``layers.0``.
        unaligned_block: units per unaligned block.

    Raises:
        ValueError: non-positive sizes.
    """

    name = "pvr_mlp"

    def __init__(self, d_embed: int = 16, block: int = 32, n_unaligned: int = 1, unaligned_block: int = 128) -> None:
        if min(d_embed, block, unaligned_block) < 1 or n_unaligned < 0:
            raise ArgumentError(
                f"sizes must be positive (n_unaligned >= 0), got d_embed={d_embed}, block={block}, "
                f"n_unaligned={n_unaligned}, unaligned_block={unaligned_block}"
            )
        self.d_embed, self.block, self.n_unaligned, self.unaligned_block = d_embed, block, n_unaligned, unaligned_block

    @property
    def hidden(self) -> int:
        """Width of both hidden layers."""
        return 4 * self.block + self.n_unaligned * self.unaligned_block

    def causal_model(self) -> CausalModel:
        return standard.pointer_value()

    def build_network(self) -> nn.Module:
        return TokenMLP(10, 4, self.d_embed, self.hidden, 2, 10)

    def alignments(self) -> Mapping[str, Mapping[str, AlignedTo]]:
        """``default``: quadrant ``i`` -> ``layers.0`` units ``[i * block, (i + 1) * block)``;
        ``rotated_blocks`` gives each quadrant the next quadrant's block."""
        b = self.block
        blocks = [Coordinate("layers.0", Index.dims(i * b, (i + 1) * b)) for i in range(4)]
        return {
            "default": dict(zip(QUADRANTS, blocks)),
            "rotated_blocks": dict(zip(QUADRANTS, blocks[1:] + blocks[:1])),
        }

    def unaligned_coordinates(self) -> Sequence[Coordinate]:
        """The ``n_unaligned`` blocks after the first ``4 * block`` units, in ``layers.0`` and
        then in ``layers.1``."""
        start, u = 4 * self.block, self.unaligned_block
        return [
            Coordinate(f"layers.{layer}", Index.dims(start + i * u, start + (i + 1) * u))
            for layer in (0, 1)
            for i in range(self.n_unaligned)
        ]

    def encode_inputs(self, values: Mapping[str, Tensor]) -> Tensor:
        """Digit tokens ``[batch, 4]`` in the order ``TL, TR, BL, BR``."""
        return stack_inputs(dict(values), QUADRANTS)
