"""torchmetrics metrics for interchange intervention accuracy (IIA), impact-aware."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from iit.errors import ArgumentError

__all__ = ["InterchangeAccuracy"]


class InterchangeAccuracy(Metric):
    """Interchange intervention accuracy over (base, source, variable) pairs, also on the
    *impactful* pairs only (those where the causal model's counterfactual output differs from
    its base output), so unchanged pairs cannot inflate the score.

    ``update(correct, impactful)`` takes bool ``[batch]`` tensors; ``compute()`` returns
    ``{"iia", "iia_impactful", "impactful_fraction"}`` (``nan`` where undefined).
    States are summed across processes under DDP.

    Raises:
        TypeError: any argument (it takes none).

    Examples:
        Three pairs, two predicted correctly; of the two impactful pairs one is correct:

        >>> import torch
        >>> metric = InterchangeAccuracy()
        >>> metric.update(torch.tensor([True, True, False]), torch.tensor([True, False, True]))
        >>> {k: round(float(v), 4) for k, v in metric.compute().items()}
        {'iia': 0.6667, 'iia_impactful': 0.5, 'impactful_fraction': 0.6667}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("correct", "total", "impactful_correct", "impactful_total"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, correct: Tensor, impactful: Tensor) -> None:
        """Add a batch: ``correct`` and ``impactful`` are bool ``[batch]``.

        Args:
            correct: bool ``[batch]``: the intervened network predicted the counterfactual label.
            impactful: bool ``[batch]``: the pair changes the causal model's output.

        Raises:
            ArgumentError: the two are not vectors of one length.
        """
        if correct.shape != impactful.shape or correct.dim() != 1:
            raise ArgumentError(
                f"correct and impactful must be bool vectors of one length, got {tuple(correct.shape)} "
                f"and {tuple(impactful.shape)}"
            )
        correct, impactful = correct.bool(), impactful.bool().to(correct.device)
        self.correct += correct.sum()
        self.total += correct.numel()
        self.impactful_correct += (correct & impactful).sum()
        self.impactful_total += impactful.sum()

    def compute(self) -> dict[str, Tensor]:
        """``{"iia", "iia_impactful", "impactful_fraction"}`` as 0-d tensors ``[]`` (``nan``
        where no pair, or no impactful pair, was seen)."""
        nan = torch.tensor(float("nan"))
        total, imp = self.total.float(), self.impactful_total.float()
        return {
            "iia": self.correct / total if self.total > 0 else nan,
            "iia_impactful": self.impactful_correct / imp if self.impactful_total > 0 else nan,
            "impactful_fraction": imp / total if self.total > 0 else nan,
        }
