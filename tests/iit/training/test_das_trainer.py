"""One DAS code path: train_das and IITModule(freeze_network=True) drive learned interventions
through the same protocol (iit.trainable) and give the same parameters on the same data."""

from __future__ import annotations

import copy

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from iit import Coordinate, Interventionable
from iit.das import DASBatch, DASConfig, train_das
from iit.learned import BoundlessRotatedInterchange, LowRankRotatedInterchange, RotatedInterchange
from iit.trainable import LearnedInterventions, TrainingProgress
from iit.training import CounterfactualDataModule, IITConfig, IITModule
from tests.iit.training.tiny import TinyDigitSum

COORD = Coordinate("layers.0")


class DASTiny(TinyDigitSum):
    """The tiny task with ``S`` aligned to a given learned intervention at ``layers.0``."""

    def __init__(self, intervention: nn.Module) -> None:
        super().__init__(variables=("S",))
        self.intervention = intervention

    def alignments(self):
        return {"default": {"S": self.intervention}}


def _make(kind: str) -> nn.Module:
    torch.manual_seed(1)
    if kind == "full":
        return RotatedInterchange(COORD, 16, dims=(0, 6))
    if kind == "low_rank":
        return LowRankRotatedInterchange(COORD, 16, 4)
    return BoundlessRotatedInterchange(COORD, 16, boundary=0.5)


@pytest.mark.parametrize("kind", ["full", "low_rank", "boundless"])
def test_train_das_and_the_lightning_module_train_the_same_intervention(kind, tmp_path):
    epochs, lr, boundary_lr, temperature = 2, 5e-2, 2e-2, (20.0, 0.5)
    template = _make(kind)
    net = TinyDigitSum().build_network()

    # Lightning: IITModule in DAS mode on the data module's pairs (their own sources)
    task = DASTiny(copy.deepcopy(template))
    config = IITConfig(behaviour_weight=0.0, freeze_network=True, in_batch_sources=False, lr=lr,
                       boundary_lr=boundary_lr, temperature=temperature, seed=0)
    module = IITModule(task, config, network=copy.deepcopy(net))
    data = CounterfactualDataModule(task, train_size=96, val_size=32, batch_size=32, seed=0)
    seen = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch)

    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=[Record()])
    trainer.fit(module, data)

    # train_das on exactly the batches Lightning saw, in order
    iv = copy.deepcopy(template)
    frozen = Interventionable(copy.deepcopy(net).requires_grad_(False))
    model = task.causal_model()
    batches = [
        DASBatch(task.encode_inputs(b.base), [task.encode_inputs(s) for s in b.sources],
                 task.labels(model, b.counterfactual_output))
        for b in seen
    ]
    assert all(bool(b.intervened.all()) for b in seen)  # every row intervenes on S
    losses = train_das(frozen, [iv], batches, nn.functional.cross_entropy,
                       DASConfig(epochs=1, lr=lr, boundary_lr=boundary_lr, temperature=temperature))
    assert len(losses) == len(seen) == 6
    trained = module.learned["S_0"].state_dict()
    for name, value in iv.state_dict().items():
        torch.testing.assert_close(trained[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.allclose(iv.state_dict()[next(iter(iv.state_dict()))], template.state_dict()[next(iter(iv.state_dict()))])
    if kind == "boundless":
        assert float(iv.temperature) == pytest.approx(temperature[1])
        assert float(module.learned["S_0"].temperature) == pytest.approx(temperature[1])


def test_protocol_groups_regularizer_schedule_and_projection():
    iv = BoundlessRotatedInterchange(COORD, 8, boundary=0.9)
    plain = RotatedInterchange(COORD, 8, dims=(0, 2))
    learned = LearnedInterventions([iv, plain, iv])
    assert len(learned.interventions) == 2
    groups = learned.param_groups(1e-3, {"boundary": 1e-2})
    assert [g["lr"] for g in groups] == [1e-3, 1e-2] and groups[1]["params"] == [iv.boundary]
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in [*iv.parameters(), *plain.parameters()])
    with pytest.raises(KeyError, match="learning-rate group 'boundary'"):
        learned.param_groups(1e-3, {})
    assert float(learned.regularizer().detach()) == pytest.approx(0.9)  # only Boundless has one
    assert LearnedInterventions([plain]).regularizer() is None
    learned.on_training_step(TrainingProgress(step=2, total_steps=5, temperature=(10.0, 2.0)))
    assert float(iv.temperature) == pytest.approx(10.0 + (2.0 - 10.0) * 2 / 4)
    with torch.no_grad():
        iv.boundary.fill_(1.7)
    learned.after_optimizer_step()
    assert float(iv.boundary) == 1.0
