"""Save / load interventions with their coordinates through safetensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from iit import Addition, Coordinate, Index, Interchange, Interventionable, ZeroAblation
from iit.errors import CoordinateError, DamagedFileError, InterventionError, NamingError
from iit.learned import (
    BoundlessRotatedInterchange,
    LowRankRotatedInterchange,
    RotatedInterchange,
    Rotation,
)
from iit.serialization import load_interventions, save_interventions
from iit.transformers import Tokens, TransformerCoordinate, TransformerInterventionable
from tests.iit.transformers._models import tiny_model


def _inputs(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 60, (2, 5), generator=g)
    return {"input_ids": ids, "attention_mask": torch.tensor([[1] * 5, [0, 1, 1, 1, 1]])}


def test_round_trip_reproduces_outputs(tmp_path: Path) -> None:
    net = TransformerInterventionable(tiny_model("llama"))
    shared = Rotation(16, generator=torch.Generator().manual_seed(3))
    last = TransformerCoordinate(1, "block_output", position=Tokens.last(), label="last")
    ivs = {
        "a": RotatedInterchange(last, shared, dims=(0, 3)),
        "b": RotatedInterchange(last, shared, dims=(3, 6), source=1),
        "low": LowRankRotatedInterchange(TransformerCoordinate(0, "mlp_output", position=(1, 2)), 16, 2),
        "bound": BoundlessRotatedInterchange(TransformerCoordinate(2, "block_input", position=Tokens.at(0)), 16, boundary=0.3, temperature=2.0),
        "head": Interchange(
            TransformerCoordinate(1, "head_attention_output", head=(1, 3), position=Tokens.last()),
            source_coordinate=TransformerCoordinate(1, "head_attention_output", head=(1, 3), position=Tokens.at(0)),
        ),
        "steer": Addition(Coordinate("layers.2.mlp", Index.positions([0], dims=(0, 4))), nn.Parameter(torch.randn(1, 4)), scale=0.5),
        "zero": ZeroAblation(Coordinate("layers.0.mlp.down_proj", Index.slices(None, slice(2, 6)))),
    }
    with torch.no_grad():  # move away from the initial values so loading must restore them
        for iv in ivs.values():
            for p in iv.parameters():
                p.add_(0.1 * torch.randn_like(p))
    path = tmp_path / "ivs.safetensors"
    save_interventions(path, ivs)
    loaded = load_interventions(path, net)
    assert loaded["a"].rotation is loaded["b"].rotation  # sharing survives
    assert loaded["a"].rotation is not shared
    base, s0, s1 = _inputs(0), _inputs(1), _inputs(2)
    want = net.intervene(base, list(ivs.values()), [s0, s1]).last_hidden_state
    got = net.intervene(base, list(loaded.values()), [s0, s1]).last_hidden_state
    assert torch.equal(want, got)
    assert (want - net(**base).last_hidden_state).abs().max() > 1e-3
    assert float(loaded["bound"].temperature) == 2.0
    assert loaded["a"].coordinate.label == "last" and loaded["head"].coordinate.heads == (1, 3)
    assert isinstance(loaded["steer"].vector, nn.Parameter)


def test_loading_where_a_coordinate_no_longer_resolves(tmp_path: Path) -> None:
    path = tmp_path / "ivs.safetensors"
    save_interventions(path, {"deep": RotatedInterchange(TransformerCoordinate(2, "block_output"), 16, dims=(0, 2))})
    small = tiny_model("llama")
    small.layers = small.layers[:2]
    small.config.num_hidden_layers = 2
    with pytest.raises(CoordinateError, match=r"'deep'.*layers 0\.\.1"):
        load_interventions(path, TransformerInterventionable(small))
    save_interventions(path, {"gen": ZeroAblation(Coordinate("layers.5.mlp"))})
    with pytest.raises(CoordinateError, match="'gen'.*no module 'layers.5.mlp'"):
        load_interventions(path, Interventionable(tiny_model("llama")))
    save_interventions(path, {"heads": Interchange(TransformerCoordinate(0, "query", head=3))})
    other = tiny_model("gpt2")
    other.config.num_attention_heads = 2  # a model with fewer heads
    with pytest.raises(CoordinateError, match="'heads'.*valid heads are 0..1"):
        load_interventions(path, TransformerInterventionable(other))


def test_unsupported_things_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    per_row = TransformerCoordinate(0, "block_output", position=torch.tensor([[1], [2]]))
    with pytest.raises(InterventionError, match="per-row"):
        save_interventions(path, {"x": Interchange(per_row)})
    with pytest.raises(NamingError, match="without '.'"):
        save_interventions(path, {"a.b": ZeroAblation(Coordinate("x"))})
    save_file({"w": torch.zeros(1)}, str(path))
    with pytest.raises(DamagedFileError, match="not an iit interventions file"):
        load_interventions(path, Interventionable(nn.Linear(1, 1)))
