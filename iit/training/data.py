"""`CounterfactualDataModule`: seeded counterfactual pairs from a task's causal model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from causal_models import CounterfactualDataset
from causal_models.data import CounterfactualBatch
from iit.errors import ArgumentError
from iit.training.seed import resolve_seed
from iit.training.task import IITTask

__all__ = ["CounterfactualDataModule", "EpochShuffle"]


class _Batched(Dataset):
    """A precomputed counterfactual set that hands out whole batches (``__getitems__``), so a
    batch is one vectorised index instead of ``batch_size`` Python calls."""

    def __init__(self, data: CounterfactualBatch) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> CounterfactualBatch:
        return self.data.select(torch.tensor([i]))

    def __getitems__(self, indices: Sequence[int]) -> CounterfactualBatch:
        return self.data.select(torch.as_tensor(list(indices), dtype=torch.long))


def _identity(batch: CounterfactualBatch) -> CounterfactualBatch:
    return batch


class EpochShuffle(Sampler[int]):
    """A shuffling sampler whose order depends only on ``(seed, epoch)`` (Lightning calls
    `set_epoch`), so a run resumed from a checkpoint sees the same batches as an
    uninterrupted one.

    Args:
        size: number of items.
        seed: the run's seed.

    Raises:
        TypeError: a missing or extra argument.

    Examples:
        >>> sampler = EpochShuffle(5, seed=0)
        >>> first = list(sampler)
        >>> sampler.set_epoch(1)
        >>> sorted(first) == sorted(sampler) == [0, 1, 2, 3, 4], list(sampler) == list(sampler)
        (True, True)
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` from now on (Lightning calls it at each epoch's start).

        Args:
            epoch: the epoch number.
        """
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class CounterfactualDataModule(pl.LightningDataModule):
    """Training and held-out counterfactual pairs for a task.

    Training pairs come from the task's training sampler, validation pairs from its evaluation
    sampler (e.g. unseen entities), both precomputed with fixed seeds.

    Args:
        task: the task (its causal model, samplers and counterfactual configuration).
        train_size: training pairs.
        val_size: held-out pairs.
        batch_size: pairs per batch.
        seed: seeds data generation and shuffling (``None``: the ``seed_everything`` seed,
            else 0; see `iit.training.resolve_seed`).

    Raises:
        ArgumentError: a size below 1.
    """

    def __init__(
        self, task: IITTask, train_size: int = 20_000, val_size: int = 2_000, batch_size: int = 64, seed: int | None = None
    ) -> None:
        super().__init__()
        if min(train_size, val_size, batch_size) < 1:
            raise ArgumentError(f"sizes must be >= 1, got train={train_size}, val={val_size}, batch={batch_size}")
        self.task = task
        self.train_size, self.val_size, self.batch_size = train_size, val_size, batch_size
        self.seed = resolve_seed(seed)
        self.train_data: CounterfactualBatch | None = None
        self.val_data: CounterfactualBatch | None = None

    def setup(self, stage: str | None = None) -> None:
        """Generate the training and validation pairs (once; later calls do nothing).

        Args:
            stage: Lightning's stage name (unused: both splits are made).

        Raises:
            ArgumentError: the task's causal model, samplers or counterfactual configuration
                reject the sizes or seeds (raised by `causal_models` data generation).
        """
        if self.train_data is not None:
            return
        model = self.task.causal_model()
        config = self.task.counterfactual_config()
        self.train_data = CounterfactualDataset(
            model, self.train_size, config, self.task.train_sampler(model), seed=self.seed
        ).data
        self.val_data = CounterfactualDataset(
            model, self.val_size, config, self.task.eval_sampler(model), seed=self.seed + 1
        ).data

    def train_dataloader(self) -> DataLoader:
        """Training batches of ``batch_size`` pairs, shuffled by `EpochShuffle` (call `setup`
        first)."""
        assert self.train_data is not None
        dataset = _Batched(self.train_data)
        return DataLoader(
            dataset, batch_size=self.batch_size, sampler=EpochShuffle(len(dataset), self.seed), collate_fn=_identity
        )

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move a `CounterfactualBatch` with its own ``to`` (Lightning's default walks the
        dataclass field by field, a cost per step); other batches as Lightning does.

        Args:
            batch: the batch from the data loader.
            device: the module's device.
            dataloader_idx: the data loader's index (Lightning's).
        """
        if isinstance(batch, CounterfactualBatch):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def val_dataloader(self) -> DataLoader:
        """Validation batches of ``max(batch_size, 512)`` pairs, in order (call `setup` first)."""
        assert self.val_data is not None
        return DataLoader(_Batched(self.val_data), batch_size=max(self.batch_size, 512), collate_fn=_identity)
