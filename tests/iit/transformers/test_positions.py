"""Padding-aware positions: left, right and no padding give the same intervened outputs."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from iit import Interchange
from iit.errors import CoordinateError, InterventionShapeError
from iit.transformers import (
    Tokens,
    TransformerCoordinate,
    TransformerInterventionable,
    position_ids_from_mask,
    real_token_positions,
)
from tests.iit.transformers._models import VOCAB, tiny_model


def test_real_token_positions_match_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        mask = (torch.rand(4, 9, generator=g) > 0.4).long()
        mask[:, 3] = 1  # at least one real token... and a few more below
        mask[:, 5] = 1
        for indices in [(0,), (-1,), (1, -2), (0, 1)]:
            got = real_token_positions(Tokens.at(*indices), mask)
            for row in range(4):
                real = [j for j in range(9) if mask[row, j]]
                assert got[row].tolist() == [real[i] for i in indices]


def test_too_few_real_tokens_is_a_clear_error() -> None:
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    with pytest.raises(CoordinateError, match="row 1 has 1 real tokens"):
        real_token_positions(Tokens.at(1), mask)


def _pad(rows: list[Tensor], side: str) -> dict[str, Tensor]:
    T = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(T - len(r), T) if side == "left" else slice(0, len(r))
        ids[i, sl] = r
        mask[i, sl] = 1
    return {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids_from_mask(mask)}


def _real_rows(out: Tensor, inputs: dict[str, Tensor]) -> list[Tensor]:
    return [out[i][inputs["attention_mask"][i].bool()] for i in range(out.shape[0])]


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama"])
def test_left_right_and_no_padding_agree(family: str) -> None:
    net = TransformerInterventionable(tiny_model(family))
    g = torch.Generator().manual_seed(3)
    base_rows = [torch.randint(2, VOCAB, (n,), generator=g) for n in (5, 3, 6)]
    source_rows = [torch.randint(2, VOCAB, (n,), generator=g) for n in (4, 6, 2)]
    layer = 1
    c_last = TransformerCoordinate(layer, "block_output", position=Tokens.last())
    c_head = TransformerCoordinate(layer, "head_attention_output", position=Tokens.at(0, -1), head=1)
    ivs = [Interchange(c_last), Interchange(c_head)]

    def run(base: dict, source: dict) -> list[Tensor]:
        return _real_rows(net.intervene(base, ivs, sources=[source]).last_hidden_state, base)

    reference = [
        run(_pad([b], "right"), _pad([s], "right"))[0] for b, s in zip(base_rows, source_rows)
    ]  # unpadded: one row at a time
    plain = [net(**_pad([b], "right")).last_hidden_state[0] for b in base_rows]
    assert max((r - p).abs().max() for r, p in zip(reference, plain)) > 1e-3  # the patch does something
    for base_side in ("left", "right"):
        for source_side in ("left", "right"):
            got = run(_pad(base_rows, base_side), _pad(source_rows, source_side))
            for row, (a, b) in enumerate(zip(got, reference)):
                torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=f"{family} {base_side}/{source_side} row {row}")


def test_different_lengths_at_all_positions_fail_clearly() -> None:
    net = TransformerInterventionable(tiny_model("gpt2"))
    base = _pad([torch.arange(2, 7)], "right")
    source = _pad([torch.arange(2, 5)], "right")
    with pytest.raises(InterventionShapeError, match="use Tokens"):
        net.intervene(base, [Interchange(TransformerCoordinate(0, "block_output"))], sources=[source])
    # an explicit rule works: the first three real tokens of each
    c = TransformerCoordinate(0, "block_output", position=Tokens.at(0, 1, 2))
    out = net.intervene(base, [Interchange(c)], sources=[source])
    assert out.last_hidden_state.shape == (1, 5, 16)


def test_per_row_absolute_positions_and_describe() -> None:
    net = TransformerInterventionable(tiny_model("llama"))
    x = _pad([torch.arange(2, 8), torch.arange(3, 9)], "right")
    pos = torch.tensor([[1], [4]])
    c = TransformerCoordinate(0, "mlp_output", position=pos, dims=(2, 5))
    full = TransformerCoordinate(0, "mlp_output")
    acts = net.collect(x, [c, full])
    want = torch.stack([acts[full][0, 1, 2:5], acts[full][1, 4, 2:5]])[:, None]
    torch.testing.assert_close(acts[c], want)
    assert "per-row" in c.describe() and "dims 2:5" in c.describe()
    with pytest.raises(CoordinateError, match="Tokens.at"):
        TransformerCoordinate(0, "mlp_output", position=-1)
