"""What a learned intervention needs from a trainer, declared by the intervention itself.

A trainer (`iit.train_das`, `iit.training.IITModule`) drives every learned
intervention through `LearnedInterventions`, which calls these optional methods when an
intervention defines them (no ``isinstance`` checks on concrete classes):

* ``training_regularizer() -> Tensor``: a scalar added to the loss, times the trainer's
  ``regularizer_weight`` (Boundless DAS: the boundary size);
* ``on_training_step(progress: TrainingProgress) -> None``: called before every optimizer step
  (Boundless DAS: the temperature schedule);
* ``after_optimizer_step() -> None``: called after every optimizer step (Boundless DAS: clamp
  the boundary back into ``[1e-3, 1]``);
* ``parameter_groups() -> Mapping[str, Sequence[nn.Parameter]]``: parameters that want their own
  learning rate, by group name (Boundless DAS: ``{"boundary": [b]}``; the trainer maps names to
  rates, e.g. ``boundary_lr``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from iit.errors import NamingError

__all__ = ["LearnedInterventions", "TrainingProgress"]


@dataclass(frozen=True)
class TrainingProgress:
    """Where training stands at an optimizer step.

    Attributes:
        step: the optimizer step about to run (0-based).
        total_steps: optimizer steps in the whole run.
        temperature: the trainer's ``(start, end)`` temperature range for annealed masks.

    Raises:
        TypeError: a missing or unknown field.
    """

    step: int
    total_steps: int
    temperature: tuple[float, float] = (50.0, 0.1)


class LearnedInterventions:
    """The trainer's side of the protocol for a set of interventions (duplicates by identity
    are visited once).

    Args:
        interventions: learned interventions (any ``nn.Module``; methods they lack are skipped).

    Raises:
        TypeError: ``interventions`` is not iterable.

    Examples:
        >>> import torch
        >>> from iit import BoundlessRotatedInterchange, Coordinate
        >>> _ = torch.manual_seed(0)
        >>> boundless = BoundlessRotatedInterchange(Coordinate("0"), 4, boundary=0.25)
        >>> learned = LearnedInterventions([boundless, boundless])   # visited once
        >>> learned.regularizer()
        tensor(0.2500, grad_fn=<SumBackward0>)
        >>> [group["lr"] for group in learned.param_groups(1e-3, {"boundary": 1e-2})]
        [0.001, 0.01]
    """

    def __init__(self, interventions: Iterable[nn.Module]) -> None:
        unique: dict[int, nn.Module] = {}
        for iv in interventions:
            unique.setdefault(id(iv), iv)
        self.interventions = list(unique.values())

    def _call(self, method: str, *args: Any) -> list[Any]:
        return [getattr(iv, method)(*args) for iv in self.interventions if callable(getattr(iv, method, None))]

    def param_groups(self, lr: float, group_lrs: Mapping[str, float], extra: Sequence[nn.Parameter] = ()) -> list[dict]:
        """Optimizer parameter groups: every trainable parameter of the interventions (and
        ``extra``) at ``lr``, except those an intervention puts in a named group, which get
        ``group_lrs[name]``.

        Raises:
            NamingError: a group name the trainer has no learning rate for.
        """
        named: dict[str, list[nn.Parameter]] = {}
        for groups in self._call("parameter_groups"):
            for name, params in groups.items():
                if name not in group_lrs:
                    raise NamingError(f"an intervention asks for a learning-rate group {name!r}; the trainer has {sorted(group_lrs)}")
                named.setdefault(name, []).extend(p for p in params if p.requires_grad)
        special = {id(p) for ps in named.values() for p in ps}
        seen: set[int] = set()
        plain = []
        for p in [*extra, *(q for iv in self.interventions for q in iv.parameters())]:
            if p.requires_grad and id(p) not in special and id(p) not in seen:
                seen.add(id(p))
                plain.append(p)
        groups_out = [{"params": plain, "lr": lr}] if plain else []
        groups_out += [{"params": ps, "lr": group_lrs[name]} for name, ps in named.items() if ps]
        return groups_out

    def on_training_step(self, progress: TrainingProgress) -> None:
        """Before an optimizer step (schedules)."""
        self._call("on_training_step", progress)

    def regularizer(self) -> Tensor | None:
        """The sum of the interventions' regularizer terms (``None`` when none has one).

        Returns:
            A 0-d tensor ``[]``, or ``None``.
        """
        terms = self._call("training_regularizer")
        return torch.stack([t.reshape(()) for t in terms]).sum() if terms else None

    def after_optimizer_step(self) -> None:
        """After an optimizer step (projections), without gradients."""
        with torch.no_grad():
            self._call("after_optimizer_step")
