"""Pointer-value task: alignment blocks, unaligned (non-circuit) blocks, encoding and labels."""

from __future__ import annotations

import pytest
import torch

from iit import Interventionable
from tasks.pvr import QUADRANTS, PointerValueMLP


def _units(task: PointerValueMLP, coordinates: list, layer: str) -> list[set[int]]:
    """The unit indices each coordinate covers on ``layer``, read back from a real forward."""
    net = Interventionable(task.build_network())
    tokens = torch.zeros(2, 4, dtype=torch.long)
    out = []
    for c in coordinates:
        if c.module != layer:
            continue
        probe = torch.arange(task.hidden, dtype=torch.float).expand(2, task.hidden)
        out.append({int(u) for u in c.index.read(probe)[0].tolist()})
    net.collect(tokens, coordinates)  # every coordinate resolves on the network
    return out


def test_blocks_partition_the_first_hidden_layer() -> None:
    task = PointerValueMLP(d_embed=4, block=8, n_unaligned=3, unaligned_block=4)
    assert task.hidden == 44
    aligned = [task.alignments()["default"][q] for q in QUADRANTS]
    unaligned = list(task.unaligned_coordinates())
    assert len(unaligned) == 6
    blocks = _units(task, aligned, "layers.0") + _units(task, unaligned, "layers.0")
    assert sum(len(b) for b in blocks) == 44 and set().union(*blocks) == set(range(44))
    assert [sorted(b)[:1] for b in blocks[:4]] == [[0], [8], [16], [24]]
    second = _units(task, unaligned, "layers.1")
    assert set().union(*second) == set(range(32, 44)) and all(len(b) == 4 for b in second)


def test_rotated_alignment_gives_each_quadrant_the_next_block() -> None:
    task = PointerValueMLP(d_embed=4, block=8, n_unaligned=1, unaligned_block=4)
    default, rotated = task.alignments()["default"], task.alignments()["rotated_blocks"]
    for i, q in enumerate(QUADRANTS):
        assert rotated[q] == default[QUADRANTS[(i + 1) % 4]]


def test_encoding_order_and_labels() -> None:
    task = PointerValueMLP()
    values = {"BR": torch.tensor([7]), "TL": torch.tensor([8]), "BL": torch.tensor([5]), "TR": torch.tensor([6])}
    assert task.encode_inputs(values).tolist() == [[8, 6, 5, 7]]
    model = task.causal_model()
    out = model.run(values)["O"]
    assert out.tolist() == [7]  # TL = 8 points to BR
    assert task.labels(model, out).tolist() == [7]


def test_bad_sizes() -> None:
    with pytest.raises(ValueError, match="sizes must be positive"):
        PointerValueMLP(block=0)
    with pytest.raises(ValueError, match="n_unaligned >= 0"):
        PointerValueMLP(n_unaligned=-1)
