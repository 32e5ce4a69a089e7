"""Alignment: validation, and the same interchange vocabulary on causal model and network.

The independent reference is a hand-crafted hierarchical-equality network whose first hidden
layer computes |w - x| in units 0..3 and |y - z| in units 4..7 (reference task A): under the
alignment WX -> units [0, 4), YZ -> [4, 8) its IIA is exactly 1, under a swapped one it is not.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from causal_models import CounterfactualConfig, CounterfactualGenerator, standard
from causal_models.standard import EqualityPatternSampler, make_entity_pools
from iit import Alignment, AlignmentError, Coordinate, CoordinateError, Index, Interventionable
from iit.interventions import ZeroAblation


class HandcraftedEquality(nn.Module):
    """[W, X, Y, Z] (4 x 2 dims) -> layer1: relu(±(w-x)), relu(±(y-z)) -> ... -> logits
    [False, True] with True iff (w == x) == (y == z) (for entities at least 1e-3 apart)."""

    def __init__(self, k: float = 1e3) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
        w = torch.zeros(8, 8)
        for unit, (a, b, dim) in enumerate([(0, 2, 0), (0, 2, 1), (4, 6, 0), (4, 6, 1)]):
            w[2 * unit, a + dim], w[2 * unit, b + dim] = 1.0, -1.0
            w[2 * unit + 1, a + dim], w[2 * unit + 1, b + dim] = -1.0, 1.0
        # reorder so units 0..3 hold |w-x| parts and 4..7 hold |y-z| parts
        self.layer1[0].weight.data = w
        self.layer1[0].bias.data.zero_()
        self.layer2 = nn.Sequential(nn.Linear(8, 4), nn.ReLU())  # [a k, a k - 1, b k, b k - 1]
        w2 = torch.zeros(4, 8)
        w2[0, :4] = w2[1, :4] = k
        w2[2, 4:] = w2[3, 4:] = k
        self.layer2[0].weight.data = w2
        self.layer2[0].bias.data = torch.tensor([0.0, -1.0, 0.0, -1.0])
        self.layer3 = nn.Sequential(nn.Linear(4, 2), nn.ReLU())  # relu(sa - sb), relu(sb - sa)
        self.layer3[0].weight.data = torch.tensor([[1.0, -1.0, -1.0, 1.0], [-1.0, 1.0, 1.0, -1.0]])
        self.layer3[0].bias.data.zero_()
        self.head = nn.Linear(2, 2)
        self.head.weight.data = torch.tensor([[0.0, 0.0], [-1.0, -1.0]])
        self.head.bias.data = torch.tensor([0.0, 0.5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer3(self.layer2(self.layer1(x))))


def encode(values):
    return torch.cat([values[k] for k in "WXYZ"], dim=1)


@pytest.fixture
def setup():
    model = standard.hierarchical_equality(emb_dim=2)
    train, _ = make_entity_pools(200, 10, emb_dim=2, seed=0)
    config = CounterfactualConfig(variables=("WX", "YZ"), selection="subset")
    batch = CounterfactualGenerator(model, config, EqualityPatternSampler(train), seed=0).generate(2048)
    return model, Interventionable(HandcraftedEquality()), batch


def iia(network, alignment, batch):
    run = alignment.interchange(network, batch, encode)
    return (run.neural_output.argmax(-1) == run.counterfactual_label.long()).float().mean().item()


def test_handcrafted_network_solves_the_task(setup):
    model, network, batch = setup
    assert torch.equal(network(encode(batch.base)).argmax(-1), batch.base_output.long())


def test_correct_alignment_has_iia_exactly_one_and_a_swapped_one_does_not(setup):
    model, network, batch = setup
    good = Alignment(model, {"WX": Coordinate("layer1", Index.dims(0, 4)), "YZ": Coordinate("layer1", Index.dims(4, 8))})
    swapped = Alignment(model, {"WX": Coordinate("layer1", Index.dims(4, 8)), "YZ": Coordinate("layer1", Index.dims(0, 4))})
    good.check(network, encode(batch.base))
    assert iia(network, good, batch) == 1.0
    assert iia(network, swapped, batch) < 0.9
    run = good.interchange(network, batch, encode)
    # the causal side agrees with the batch's own labels (computed by the generator)
    assert torch.equal(run.counterfactual_label, batch.counterfactual_output)
    assert 0.3 < run.impactful.float().mean().item() < 0.9


def test_per_row_variables_and_multiple_sources(setup):
    model, network, _ = setup
    train, _ = make_entity_pools(200, 10, emb_dim=2, seed=1)
    config = CounterfactualConfig(variables=("WX", "YZ"), n_sources=2, selection="subset")
    batch = CounterfactualGenerator(model, config, EqualityPatternSampler(train), seed=3).generate(1024)
    assert (batch.source_index[batch.intervened] == 1).any() and (batch.source_index[batch.intervened] == 0).any()
    good = Alignment(model, {"WX": Coordinate("layer1", Index.dims(0, 4)), "YZ": Coordinate("layer1", Index.dims(4, 8))})
    assert iia(network, good, batch) == 1.0


def test_alignment_errors():
    model = standard.hierarchical_equality(emb_dim=2)
    with pytest.raises(AlignmentError, match=r"unknown causal variable 'WY'.*WX"):
        Alignment(model, {"WY": Coordinate("layer1")})
    with pytest.raises(AlignmentError, match="at least one variable"):
        Alignment(model, {})
    with pytest.raises(AlignmentError, match="not a coordinate"):
        Alignment(model, {"WX": "layer1"})
    with pytest.raises(AlignmentError, match="reads no source"):
        Alignment(model, {"WX": ZeroAblation(Coordinate("layer1"))})
    with pytest.raises(AlignmentError, match="unknown output variable"):
        Alignment(model, {"WX": Coordinate("layer1")}, output="Q")
    alignment = Alignment(model, {"WX": Coordinate("layer1")})
    with pytest.raises(AlignmentError, match=r"\['YZ'\] are intervened on by the data but not aligned"):
        alignment.require_aligned(["WX", "YZ"])


def test_check_catches_unknown_coordinates_and_overlaps():
    model = standard.hierarchical_equality(emb_dim=2)
    network = Interventionable(HandcraftedEquality())
    x = torch.randn(4, 8)
    with pytest.raises(CoordinateError, match="layer1"):
        Alignment(model, {"WX": Coordinate("layer_1")}).check(network, x)
    with pytest.raises(CoordinateError, match="out of bounds"):
        Alignment(model, {"WX": Coordinate("layer1", Index.dims(0, 12))}).check(network, x)
    overlapping = {"WX": Coordinate("layer1", Index.dims(0, 5)), "YZ": Coordinate("layer1", Index.dims(4, 8))}
    with pytest.raises(AlignmentError, match="share units"):
        Alignment(model, overlapping).check(network, x)
    Alignment(model, overlapping, allow_overlap=True).check(network, x)
    # disjoint slices given as positions of another shape are fine
    Alignment(model, {"WX": Coordinate("layer1", Index.slices([0, 2])), "YZ": Coordinate("layer1", Index.slices([1, 3]))}).check(network, x)


def test_describe_lists_each_variable():
    model = standard.hierarchical_equality(emb_dim=2)
    alignment = Alignment(model, {"YZ": Coordinate("layer1", Index.dims(4, 8)), "WX": Coordinate("layer1", Index.dims(0, 4))})
    assert alignment.variables == ["WX", "YZ"]
    assert alignment.describe() == "WX -> layer1.output[dims 0:4]\nYZ -> layer1.output[dims 4:8]"


def _featurized(wx_features, yz_features, shared_with_rotated: bool = False):
    from iit.featurizers import FeatureInterchange, RotationFeaturizer
    from iit.learned import RotatedInterchange

    place = Coordinate("layer1", Index.all())
    shared = RotationFeaturizer(8, generator=torch.Generator().manual_seed(0))
    yz = (
        RotatedInterchange(place, shared.rotation, yz_features)
        if shared_with_rotated
        else FeatureInterchange(place, shared, yz_features)
    )
    return {"WX": FeatureInterchange(place, shared, wx_features), "YZ": yz}


@pytest.mark.parametrize("shared_with_rotated", [False, True], ids=["featurizer", "featurizer+rotated"])
def test_shared_rotation_featurizer_disjoint_accepted_overlapping_refused(shared_with_rotated: bool) -> None:
    model = standard.hierarchical_equality(emb_dim=2)
    network = Interventionable(HandcraftedEquality())
    x = torch.randn(4, 8)
    Alignment(model, _featurized((0, 4), (4, 8), shared_with_rotated)).check(network, x)
    with pytest.raises(AlignmentError, match=r"overlap on .*\[3, 4\)"):  # refused at construction already
        Alignment(model, _featurized((0, 4), (3, 8), shared_with_rotated))
    Alignment(model, _featurized((0, 4), (3, 8), shared_with_rotated), allow_overlap=True).check(network, x)


def test_featurizer_wider_than_its_slot_refused_in_check() -> None:
    from iit.featurizers import FeatureInterchange, MaskedFeatureInterchange, RotationFeaturizer
    from iit.featurizers.identity import IdentityFeaturizer

    model = standard.hierarchical_equality(emb_dim=2)
    network = Interventionable(HandcraftedEquality())
    x = torch.randn(4, 8)
    wide = FeatureInterchange(Coordinate("layer1", Index.dims(0, 4)), RotationFeaturizer(8), (0, 2))
    with pytest.raises(AlignmentError, match=r"d=8 units.*has 4 units"):
        Alignment(model, {"WX": wide}).check(network, x)
    masked = MaskedFeatureInterchange(Coordinate("layer2", Index.all()), IdentityFeaturizer(8))
    with pytest.raises(AlignmentError, match=r"d=8 units.*has 4 units"):
        Alignment(model, {"YZ": masked}).check(network, x)
