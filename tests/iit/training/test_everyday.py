"""Everyday use: one seed, evaluation from Python, input checks, quiet trainer, epoch logging."""

from __future__ import annotations

import csv
from collections.abc import Mapping

import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from iit import Alignment, Coordinate, Index
from iit.errors import IITError
from iit.training import (
    CounterfactualDataModule,
    IITConfig,
    IITModule,
    evaluate_alignment,
    load_module,
    make_trainer,
    resolve_seed,
)
from tests.iit.training.tiny import TinyDigitSum, TinyNet


class UnseededTiny(TinyDigitSum):
    """The tiny task without its own reseeding: weights depend on the run's seed only."""

    def build_network(self) -> nn.Module:
        return TinyNet()


def _fit(seed: int, tmp_path, epochs: int = 1, config: IITConfig | None = None, task=None, **trainer_args):
    pl.seed_everything(seed, verbose=False)
    task = task or UnseededTiny()
    module = IITModule(task, config or IITConfig(lr=1e-2))
    data = CounterfactualDataModule(task, train_size=128, val_size=64, batch_size=32)
    args = dict(root=tmp_path, logger=False, checkpointing=False, progress_bar=False)
    args.update(trainer_args)
    trainer = make_trainer(task, max_epochs=epochs, **args)
    trainer.fit(module, data)
    return module, data, trainer


def test_seed_everything_alone_fixes_weights_data_and_permutations(tmp_path, monkeypatch):
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    a, data_a, _ = _fit(3, tmp_path)
    b, data_b, _ = _fit(3, tmp_path)
    c, data_c, _ = _fit(4, tmp_path)
    for (name, x), (_, y), (_, _z) in zip(a.state_dict().items(), b.state_dict().items(), c.state_dict().items()):
        assert torch.equal(x, y), name
    assert any(not torch.equal(x, z) for x, z in zip(a.state_dict().values(), c.state_dict().values()))
    # each of the three sources of randomness follows the seed
    assert a.seed == b.seed == 3 and c.seed == 4
    assert torch.equal(data_a.train_data.base["x"], data_b.train_data.base["x"])
    assert not torch.equal(data_a.train_data.base["x"], data_c.train_data.base["x"])
    pl.seed_everything(3, verbose=False)
    init_3 = IITModule(UnseededTiny()).state_dict()
    pl.seed_everything(4, verbose=False)
    init_4 = IITModule(UnseededTiny()).state_dict()
    assert not torch.equal(init_3["network.model.head.weight"], init_4["network.model.head.weight"])


def test_explicit_seed_wins_over_the_global_one(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    assert resolve_seed(None) == 7 and resolve_seed(2) == 2
    assert IITModule(UnseededTiny(), IITConfig(seed=5)).seed == 5
    assert CounterfactualDataModule(UnseededTiny()).seed == 7
    monkeypatch.delenv("PL_GLOBAL_SEED")
    assert resolve_seed(None) == 0
    with pytest.raises(ValueError, match="seed must be >= 0"):
        resolve_seed(-1)


def _hand_iia(net: TinyNet, data: CounterfactualDataModule, variable: str, dims: slice) -> float:
    """IIA of ``variable`` aligned to ``layers.0`` units ``dims``, with a raw hook."""
    batch = data.val_data
    base, source = batch.base, batch.sources[0]
    encode = TinyDigitSum().encode_inputs
    store = {}
    handle = net.layers[0].register_forward_hook(lambda m, a, o: store.__setitem__("h", o))
    with torch.no_grad():
        net(encode(source))
    handle.remove()

    def patch(m, a, o):
        o = o.clone()
        o[:, dims] = store["h"][:, dims]
        return o

    handle = net.layers[0].register_forward_hook(patch)
    with torch.no_grad():
        pred = net(encode(base)).argmax(-1)
    handle.remove()
    if variable == "S":
        label = source["x"] + source["y"] + base["z"]
    else:
        label = base["x"] + base["y"] + source["z"]
    return float((pred == label).float().mean())


def test_evaluate_any_alignment_from_a_module_a_network_or_a_checkpoint(tmp_path):
    module, data, trainer = _fit(0, tmp_path, epochs=2, task=TinyDigitSum(), checkpointing=True, logger=True)
    model = module.causal_model
    swapped = Alignment(model, {"S": Coordinate("layers.0", Index.dims(8, 16)), "z": Coordinate("layers.0", Index.dims(0, 8))}, output="O")
    by_name = evaluate_alignment(module, data, "swapped")
    by_object = evaluate_alignment(module, data, swapped)
    by_mapping = evaluate_alignment(module, data, {"S": Coordinate("layers.0", Index.dims(8, 16))})
    assert by_name == by_object
    net = module.network.model
    assert by_object["iia/S"] == pytest.approx(_hand_iia(net, data, "S", slice(8, 16)))
    assert by_object["iia/z"] == pytest.approx(_hand_iia(net, data, "z", slice(0, 8)))
    assert by_mapping["iia/S"] == by_object["iia/S"] and "iia/z" not in by_mapping
    trained = evaluate_alignment(module, data)
    assert trained["iia/S"] == pytest.approx(_hand_iia(net, data, "S", slice(0, 8)))
    assert evaluate_alignment(net, data) == trained  # a plain network, wrapped by the task
    ckpt = next((tmp_path / "tiny_digit_sum").rglob("*.ckpt"))
    assert evaluate_alignment(str(ckpt), data, "swapped") == by_name
    loaded = load_module(ckpt, TinyDigitSum())
    for (name, x), (_, y) in zip(module.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(x, y), name
    with pytest.raises(TypeError, match="alignment must be a name, an Alignment"):
        evaluate_alignment(module, data, 3)


class LongInputs(TinyDigitSum):
    def encode_inputs(self, values: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([nn.functional.one_hot(values[k].long(), 5) for k in "xyz"], dim=1)


class NarrowInputs(TinyDigitSum):
    def encode_inputs(self, values: Mapping[str, Tensor]) -> Tensor:
        return super().encode_inputs(values)[:, :12]


def test_wrong_input_dtype_or_shape_names_the_task_method_before_any_step():
    with pytest.raises(IITError, match=r"LongInputs\.encode_inputs returned int64 \[4, 15\].*'layers\.0\.0'.*expects float32 \[\.\.\., 15\]"):
        IITModule(LongInputs())
    with pytest.raises(IITError, match=r"NarrowInputs\.encode_inputs returned float32 \[4, 12\].*expects float32 \[\.\.\., 15\]"):
        IITModule(NarrowInputs())


def test_make_trainer_is_quiet_and_logs_epoch_means_under_runs_task(tmp_path, capfd):
    class StepLosses(pl.Callback):
        def __init__(self) -> None:
            self.losses: list[list[float]] = []

        def on_train_epoch_start(self, trainer, module) -> None:
            self.losses.append([])

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self.losses[-1].append(float(outputs["loss"]))

    steps = StepLosses()
    _fit(0, tmp_path, epochs=2, logger=True, progress_bar=True, callbacks=[steps])
    out = capfd.readouterr()
    printed = out.out + out.err
    for noise in ("GPU available", "TPU available", "Tip", "FLOPs", "Trainable params", "many workers"):
        assert noise not in printed
    path = tmp_path / "tiny_digit_sum" / "version_0" / "metrics.csv"
    rows = [r for r in csv.DictReader(path.open()) if r.get("train/total_loss")]
    assert len(rows) == 2  # one row per epoch, none per step
    for row, losses in zip(rows, steps.losses):  # equal batches: the epoch mean of the step losses
        assert float(row["train/total_loss"]) == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert {"train/behaviour_loss", "train/iit_loss"} <= set(rows[0])


def test_behaviour_only_run_does_not_log_iit_losses(tmp_path):
    _fit(0, tmp_path, config=IITConfig(lr=1e-2, iit_weight=0.0), logger=True)
    header = next((tmp_path / "tiny_digit_sum").rglob("metrics.csv")).read_text().splitlines()[0]
    assert "train/behaviour_loss" in header and "train/total_loss" in header
    assert "train/iit_loss" not in header and "train/strict_loss" not in header
