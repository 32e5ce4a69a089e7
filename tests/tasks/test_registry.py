"""Every registered task builds, resolves all its alignments, trains a few steps and validates;
every task config matches its registry entry, and ``iit fit`` runs from a config."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import yaml

from iit.training import CounterfactualDataModule, IITConfig, IITModule, IITTask
from iit.training.cli import main as iit_main
from tasks.das_equality import BaseNetwork, DASEquality
from tasks.minilm_equality import BaseFineTune, MiniLMEqualityDAS
from tasks.registry import TASKS

CONFIGS = Path(__file__).resolve().parents[2] / "tasks" / "configs"
TINY_BASE = BaseNetwork(epochs=1, train_size=512, batch_size=128)


def _make(name: str) -> IITTask:
    """The registered task; DAS gets a base network trained for one short epoch (speed)."""
    task = TASKS[name].make()
    if isinstance(task, DASEquality):
        return DASEquality(task.layer, task.k, task.rotation_seed, base=TINY_BASE)
    if isinstance(task, MiniLMEqualityDAS):
        return MiniLMEqualityDAS(task.k, task.rotation_seed, base=BaseFineTune(epochs=1, train_size=32, val_size=32))
    return task


def _trainer(**overrides: Any) -> pl.Trainer:
    settings: dict[str, Any] = dict(
        max_epochs=1, limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    settings.update(overrides)
    return pl.Trainer(**settings)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_builds_trains_and_validates(name: str) -> None:
    spec = TASKS[name]
    task = _make(name)
    assert task.name == name.removesuffix("_strict")
    torch.manual_seed(0)
    module = IITModule(task, spec.config)  # task.check: alignment resolves, output size fits
    model = module.causal_model
    for alignment_name in task.alignments():
        hypothesis = task.alignment(model, alignment_name)
        task.check(task.wrap_network(task.build_network()), model, hypothesis, for_training=False)
    trainable = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in module.named_parameters() if not p.requires_grad}
    data = CounterfactualDataModule(task, train_size=256, val_size=128, batch_size=64, seed=0)
    trainer = _trainer()
    trainer.fit(module, data)
    params = dict(module.named_parameters())
    assert trainable and all(not torch.equal(params[n], v) for n, v in trainable.items() if "bias" not in n)
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    # DAS freezes the whole network; other tasks may freeze parts (MiniLM: its word embeddings)
    assert spec.config.freeze_network == (not any(p.requires_grad for p in module.network.parameters()))
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/total_loss"])
    for variable in task.candidate_variables():
        assert 0.0 <= float(metrics[f"val/iia/{variable}"]) <= 1.0
    assert 0.0 <= float(metrics["val/task_acc"]) <= 1.0
    assert ("val/strict_acc" in metrics) == bool(task.unaligned_coordinates())


def _load(name: str) -> dict[str, Any]:
    with open(CONFIGS / f"{name}.yaml") as handle:
        return yaml.safe_load(handle)


def test_one_config_per_task() -> None:
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(TASKS)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_config_matches_registry(name: str) -> None:
    config, spec = _load(name), TASKS[name]
    module_name, class_name = config["model"]["task"]["class_path"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    args = dict(config["model"]["task"].get("init_args", {}))
    if "base" in args:
        args["base"] = BaseNetwork(**args["base"])
    task, expected = cls(**args), spec.make()
    assert type(task) is type(expected) and vars(task) == vars(expected)
    assert IITConfig(**config["model"].get("config", {})) == spec.config
    assert config["trainer"]["max_epochs"] == spec.epochs
    data = config["data"]
    assert (data["train_size"], data["val_size"], data["batch_size"]) == (
        spec.train_size, spec.val_size, spec.batch_size
    )
    assert config["seed_everything"] == spec.seed and config["threads"] == 1


@pytest.mark.parametrize(
    "name, extra",
    [("pvr_mlp_strict", []),
     ("das_equality", ["--model.task.init_args.base.epochs=1", "--model.task.init_args.base.train_size=512"])],
)
def test_iit_fit_from_config(name: str, extra: list[str], tmp_path: Path) -> None:
    iit_main([
        "fit", "--config", str(CONFIGS / f"{name}.yaml"), "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--data.train_size=128",
        "--data.val_size=64", "--data.batch_size=64", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.logger=false", "--trainer.enable_progress_bar=false", *extra,
    ])
    (path,) = tmp_path.glob("**/*.ckpt")
    stored = torch.load(path, map_location="cpu", weights_only=True)["iit"]
    assert stored["task"] == TASKS[name].make().name
    first = TASKS[name].make().candidate_variables()[0]
    assert stored["alignment"].startswith(f"{first} -> ")
