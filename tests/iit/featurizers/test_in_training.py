"""Featurizer interventions in an alignment trained by IITModule (DAS mode): their parameters
are the module's trainable parameters and receive gradients through the IIT loss."""

from __future__ import annotations

import torch

from causal_models import CounterfactualConfig, CounterfactualGenerator
from iit import Coordinate, Index
from iit.featurizers import FeatureInterchange, MaskedFeatureInterchange, RotationFeaturizer
from iit.featurizers.identity import IdentityFeaturizer
from iit.training import IITConfig, IITModule
from tasks.equality import HierarchicalEqualityMLP


class FeaturizedEquality(HierarchicalEqualityMLP):
    def alignments(self):
        # two places: variables on one place would overlap (a whole-slot rotation and a neuron
        # mask over the same units), which Alignment.check refuses
        return {
            "default": {
                "WX": FeatureInterchange(
                    Coordinate("layers.0", Index.all()),
                    RotationFeaturizer(8, 3, generator=torch.Generator().manual_seed(0)),
                    range(3),
                ),
                "YZ": MaskedFeatureInterchange(Coordinate("layers.1", Index.all()), IdentityFeaturizer(8), init=0.1),
            }
        }


def test_featurizers_train_inside_iit_module() -> None:
    task = FeaturizedEquality(train_entities=50, test_entities=10)
    module = IITModule(task, IITConfig(freeze_network=True, behaviour_weight=0.0))
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert any("rotation" in n for n in trainable) and any("logits" in n for n in trainable)
    assert not any(n.startswith("network.model") for n in trainable)
    causal = task.causal_model()
    batch = CounterfactualGenerator(causal, CounterfactualConfig(variables=("WX", "YZ"), selection="subset"),
                                    task.train_sampler(causal), seed=0).generate(32)
    losses = module.compute_losses(batch, torch.Generator().manual_seed(0))
    losses["total"].backward()
    grads = {n: p.grad for n, p in module.named_parameters() if p.requires_grad}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values()), grads.keys()
