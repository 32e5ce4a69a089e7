"""Equality with pyvene 0.1.8 on GPT-2: vanilla, rotated-space and low-rank interchange with the
same rotation weights."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor

from iit import Interchange
from iit.learned import LowRankRotatedInterchange, RotatedInterchange
from iit.transformers import TransformerCoordinate, TransformerInterventionable
from tests.iit.transformers._models import tiny_model

pv = pytest.importorskip("pyvene")

POSITIONS = [1, 4]


def _inputs() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(2, 60, (3, 6), generator=g), torch.randint(2, 60, (3, 6), generator=g)


def _pyvene_run(model: torch.nn.Module, intervention: object, base: Tensor, source: Tensor) -> Tensor:
    pvm = pv.IntervenableModel(
        {"layer": 1, "component": "block_output", "intervention": intervention}, model=copy.deepcopy(model)
    )
    locs = [[POSITIONS] * base.shape[0]]
    _, out = pvm({"input_ids": base}, [{"input_ids": source}], {"sources->base": (locs, locs)})
    return out.last_hidden_state


def _ours(model: torch.nn.Module, iv: object, base: Tensor, source: Tensor) -> Tensor:
    net = TransformerInterventionable(model)
    return net.intervene({"input_ids": base}, [iv], [{"input_ids": source}]).last_hidden_state


def test_vanilla_interchange_equals_pyvene() -> None:
    model = tiny_model("gpt2")
    base, source = _inputs()
    theirs = _pyvene_run(model, pv.VanillaIntervention(embed_dim=16, keep_last_dim=True), base, source)
    c = TransformerCoordinate(1, "block_output", position=tuple(POSITIONS))
    ours = _ours(model, Interchange(c), base, source)
    torch.testing.assert_close(ours, theirs)
    assert (ours - model(base).last_hidden_state).abs().max() > 0.1


def test_rotated_interchange_equals_pyvene_with_same_rotation() -> None:
    model = tiny_model("gpt2")
    base, source = _inputs()
    theirs_iv = pv.RotatedSpaceIntervention(embed_dim=16, keep_last_dim=True)
    theirs_iv.set_interchange_dim(5)
    c = TransformerCoordinate(1, "block_output", position=tuple(POSITIONS))
    ours_iv = RotatedInterchange(c, 16, dims=(0, 5))
    ours_iv.rotation.weight = theirs_iv.rotate_layer.weight.detach().clone()
    torch.testing.assert_close(ours_iv.rotation.matrix(), theirs_iv.rotate_layer.weight)
    theirs = _pyvene_run(model, theirs_iv, base, source)
    torch.testing.assert_close(_ours(model, ours_iv, base, source), theirs, atol=1e-5, rtol=1e-5)


def test_low_rank_interchange_equals_pyvene_with_same_basis() -> None:
    model = tiny_model("gpt2")
    base, source = _inputs()
    theirs_iv = pv.LowRankRotatedSpaceIntervention(embed_dim=16, low_rank_dimension=3, keep_last_dim=True)
    c = TransformerCoordinate(1, "block_output", position=tuple(POSITIONS))
    ours_iv = LowRankRotatedInterchange(c, 16, 3)
    ours_iv.rotation.weight = theirs_iv.rotate_layer.weight.detach().clone()
    theirs = _pyvene_run(model, theirs_iv, base, source)
    torch.testing.assert_close(_ours(model, ours_iv, base, source), theirs, atol=1e-5, rtol=1e-5)
