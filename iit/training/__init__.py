"""Interchange intervention training (IIT) with PyTorch Lightning."""

from iit.training.data import CounterfactualDataModule, EpochShuffle
from iit.training.metrics import InterchangeAccuracy
from iit.training.module import IITConfig, IITModule
from iit.training.objectives import correct, prediction_loss
from iit.training.task import IITTask

__all__ = [
    "CounterfactualDataModule",
    "EpochShuffle",
    "IITConfig",
    "IITModule",
    "IITTask",
    "InterchangeAccuracy",
    "correct",
    "prediction_loss",
]
