"""The ready tasks with the settings that produce the README's figures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from iit.training import IITConfig, IITTask
from tasks.digit_sum import DigitSumMLP, DigitSumPartialMLP

__all__ = ["TaskSpec", "TASKS"]


@dataclass(frozen=True)
class TaskSpec:
    """A task with its training settings.

    Attributes:
        make: builds the task.
        config: IIT hyper-parameters.
        epochs, train_size, val_size, batch_size, seed: the run.
    """

    make: Callable[[], IITTask]
    config: IITConfig = field(default_factory=IITConfig)
    epochs: int = 10
    train_size: int = 20_000
    val_size: int = 2_000
    batch_size: int = 64
    seed: int = 0

    def behaviour_config(self) -> IITConfig:
        """The same settings without the IIT and strict losses (the baseline)."""
        return replace(self.config, iit_weight=0.0, strict_weight=0.0, behaviour_weight=1.0)


TASKS: dict[str, TaskSpec] = {
    "digit_sum_mlp": TaskSpec(DigitSumMLP, IITConfig(lr=2e-3), epochs=10),
    "digit_sum_partial_mlp": TaskSpec(DigitSumPartialMLP, IITConfig(lr=2e-3), epochs=10),
}
