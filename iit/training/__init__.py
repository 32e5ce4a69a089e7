"""Interchange intervention training (IIT) with PyTorch Lightning."""

from iit.training.data import CounterfactualDataModule, EpochShuffle
from iit.training.evaluation import evaluate_alignment, format_table, load_module
from iit.training.inputs import check_encoded_inputs
from iit.training.metrics import InterchangeAccuracy
from iit.training.module import IITConfig, IITModule
from iit.training.objectives import correct, prediction_loss
from iit.training.seed import resolve_seed
from iit.training.task import IITTask
from iit.training.trainer import IITTrainer, make_trainer, quiet_lightning

__all__ = [
    "CounterfactualDataModule",
    "EpochShuffle",
    "IITConfig",
    "IITModule",
    "IITTask",
    "IITTrainer",
    "InterchangeAccuracy",
    "check_encoded_inputs",
    "correct",
    "evaluate_alignment",
    "format_table",
    "load_module",
    "make_trainer",
    "prediction_loss",
    "quiet_lightning",
    "resolve_seed",
]
