"""Featurizer interventions in an alignment trained by IITModule (DAS mode): their parameters
are the module's trainable parameters and receive gradients through the IIT loss."""

from __future__ import annotations

import pytest
import torch

from causal_models import CounterfactualConfig, CounterfactualGenerator
from iit import Coordinate, Index
from iit.featurizers import FeatureInterchange, MaskedFeatureInterchange, RotationFeaturizer
from iit.featurizers.identity import IdentityFeaturizer
from iit.training import IITConfig, IITModule
from tasks.equality import HierarchicalEqualityMLP


class FeaturizedEquality(HierarchicalEqualityMLP):
    def alignments(self):
        # both variables on layers.0, on disjoint features of ONE shared rotation featurizer
        shared = RotationFeaturizer(8, generator=torch.Generator().manual_seed(0))
        place = Coordinate("layers.0", Index.all())
        return {"default": {"WX": FeatureInterchange(place, shared, (0, 3)), "YZ": FeatureInterchange(place, shared, (3, 6))}}


class MaskedEquality(HierarchicalEqualityMLP):
    def alignments(self):
        return {
            "default": {
                "WX": FeatureInterchange(
                    Coordinate("layers.0", Index.all()), RotationFeaturizer(8, 3, generator=torch.Generator().manual_seed(0)), (0, 3)
                ),
                "YZ": MaskedFeatureInterchange(Coordinate("layers.1", Index.all()), IdentityFeaturizer(8), init=0.1),
            }
        }


@pytest.mark.parametrize("task_class", [FeaturizedEquality, MaskedEquality])
def test_featurizers_train_inside_iit_module(task_class) -> None:
    task = task_class(train_entities=50, test_entities=10)
    module = IITModule(task, IITConfig(freeze_network=True, behaviour_weight=0.0))
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert any("rotation" in n for n in trainable)
    assert any("logits" in n for n in trainable) == (task_class is MaskedEquality)
    assert not any(n.startswith("network.model") for n in trainable)
    causal = task.causal_model()
    batch = CounterfactualGenerator(causal, CounterfactualConfig(variables=("WX", "YZ"), selection="subset"),
                                    task.train_sampler(causal), seed=0).generate(32)
    losses = module.compute_losses(batch, torch.Generator().manual_seed(0))
    losses["total"].backward()
    grads = {n: p.grad for n, p in module.named_parameters() if p.requires_grad}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values()), grads.keys()
