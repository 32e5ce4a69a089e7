"""Faithfulness of token attributions: AUPC comprehensiveness and sufficiency.

Following the ALTI paper's Table 2 (after DeYoung et al. 2020, ERASER): rank the content tokens
of a sequence by attribution (special tokens at the ends are never deleted), *delete* tokens
(the sequence gets shorter; nothing is masked) and re-run the model:

* comprehensiveness deletes the ``k`` most important tokens; score ``p(x) - p(x \\ top_k)``,
  with the probability curve forced non-increasing (running minimum). Higher is better.
* sufficiency keeps only the ``k`` most important tokens; score ``p(x) - p(top_k)``, with the
  probability curve forced non-decreasing (running maximum). Lower is better.

``p`` is the softmax probability of the class the model predicted on the full input. ``k``
runs over ``{0} ∪ {⌈b·n⌉ : b in bins}`` (bins 1, 5, 10, 20, 50 %) or one by one
``0, 1, ..., min(n, max_skip)``; AUPC is the mean of the scores over these points (area under
the perturbation curve, steps equally spaced). Sequences longer than ``max_len`` are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from iit.attribution.targets import output_tensor
from iit.errors import ArgumentError
from iit.precision import upcast

Schedule = Literal["bins", "one_by_one"]
Kind = Literal["comprehensiveness", "sufficiency"]
TokenScorer = Callable[[Tensor, int], Tensor]

__all__ = [
    "AUPCConfig",
    "AUPCRow",
    "AUPCTable",
    "Kind",
    "Schedule",
    "TokenScorer",
    "aupc_table",
    "deletion_counts",
    "perturbation_curve",
]


@dataclass(frozen=True)
class AUPCConfig:
    """Settings of the AUPC evaluation.

    Attributes:
        schedules: which deletion schedules to report (one table row per method and schedule).
        bins: deletion fractions of the ``bins`` schedule.
        max_skip: last ``k`` of the ``one_by_one`` schedule.
        max_len: sequences with more tokens (specials included) are skipped.
        prefix_specials: leading tokens never deleted (``[CLS]``: 1; GPT-2: 0).
        suffix_specials: trailing tokens never deleted (``[SEP]``: 1; GPT-2: 0).

    Raises:
        ArgumentError: an unknown schedule, a bin outside ``(0, 1]``, ``max_skip`` or
            ``max_len`` below 1, or a negative number of special tokens.
    """

    schedules: tuple[Schedule, ...] = ("bins", "one_by_one")
    bins: tuple[float, ...] = (0.01, 0.05, 0.10, 0.20, 0.50)
    max_skip: int = 30
    max_len: int = 200
    prefix_specials: int = 1
    suffix_specials: int = 1

    def __post_init__(self) -> None:
        for schedule in self.schedules:
            if schedule not in ("bins", "one_by_one"):
                raise ArgumentError(f"unknown schedule {schedule!r}; valid: ['bins', 'one_by_one']")
        if any(not 0 < b <= 1 for b in self.bins):
            raise ArgumentError(f"bins must be fractions in (0, 1], got {self.bins}")
        if self.max_skip < 1 or self.max_len < 1:
            raise ArgumentError("max_skip and max_len must be >= 1")
        if self.prefix_specials < 0 or self.suffix_specials < 0:
            raise ArgumentError("prefix_specials and suffix_specials must be >= 0")


@dataclass(frozen=True)
class AUPCRow:
    """One method under one schedule: mean AUPC over the evaluated sequences.

    Attributes:
        method: the method's name (a key of ``methods`` in `aupc_table`).
        schedule: ``"bins"`` or ``"one_by_one"``.
        comprehensiveness: mean area between the full probability and the curve as the
            top-scored tokens are deleted (higher is better).
        sufficiency: the same as only the top-scored tokens are kept (lower is better).
        n_sequences: how many sequences were evaluated (not longer than ``max_len``).

    Raises:
        TypeError: a missing or unknown field (dataclass construction); `aupc_table` builds rows.
    """

    method: str
    schedule: Schedule
    comprehensiveness: float
    sufficiency: float
    n_sequences: int


@dataclass(frozen=True)
class AUPCTable:
    """Rows of an AUPC evaluation; ``str(table)`` is a fixed-width table.

    Attributes:
        rows: one `AUPCRow` per method and schedule.

    Raises:
        TypeError: an unknown field (dataclass construction); `aupc_table` builds tables.
    """

    rows: list[AUPCRow] = field(default_factory=list)

    def __str__(self) -> str:
        head = f"{'method':<20} {'schedule':<11} {'comp (↑)':>9} {'suff (↓)':>9} {'n':>5}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(
                f"{r.method:<20} {r.schedule:<11} {r.comprehensiveness:>9.4f} "
                f"{r.sufficiency:>9.4f} {r.n_sequences:>5d}"
            )
        return "\n".join(lines)

    def to_pandas(self) -> Any:
        """The rows as a ``pandas.DataFrame`` (one column per `AUPCRow` field).

        Raises:
            ImportError: pandas is not installed.
        """
        import pandas as pd

        return pd.DataFrame([r.__dict__ for r in self.rows])


def deletion_counts(n_content: int, schedule: Schedule, config: AUPCConfig) -> list[int]:
    """How many tokens are deleted (or kept) at each step: starts at 0, non-decreasing.

    Args:
        n_content: number of content tokens (specials excluded).
        schedule: ``"bins"`` (fractions ``config.bins`` of the content, rounded up) or
            ``"one_by_one"`` (0, 1, ..., up to ``config.max_skip``).
        config: the evaluation settings.

    Returns:
        The counts, one per point of the curve.

    Raises:
        TypeError: ``n_content`` is not a number (the only failure; any schedule other than
            ``"bins"`` is read as ``"one_by_one"``, as `AUPCConfig` checks schedules).

    Examples:
        >>> from iit.attribution import AUPCConfig, deletion_counts
        >>> deletion_counts(40, "bins", AUPCConfig())
        [0, 1, 2, 4, 8, 20]
        >>> deletion_counts(3, "one_by_one", AUPCConfig())
        [0, 1, 2, 3]
    """
    if schedule == "bins":
        return [0] + [min(n_content, math.ceil(b * n_content)) for b in config.bins]
    return list(range(0, min(n_content, config.max_skip) + 1))


def _probability(forward: Callable[[Tensor], Any], ids: Tensor, label: int) -> float:
    with torch.no_grad():
        logits = output_tensor(forward(ids.unsqueeze(0)))
    if logits.dim() != 2 or logits.shape[0] != 1:
        raise ArgumentError(
            f"AUPC needs classifier logits [1, classes] per sequence, got {tuple(logits.shape)}"
        )
    return torch.softmax(upcast(logits), -1)[0, label].item()


def perturbation_curve(
    forward: Callable[[Tensor], Any],
    ids: Tensor,
    scores: Tensor,
    label: int,
    kind: Kind,
    schedule: Schedule,
    config: AUPCConfig,
    cache: dict[tuple[int, ...], float] | None = None,
) -> list[float]:
    """Monotone probability curve of ``label`` as tokens are deleted (comp) or kept (suff).

    Args:
        forward: ``ids [1, seq] -> logits [1, classes]`` (or an output holding them).
        ids: one sequence ``[seq]`` including its special tokens.
        scores: token attributions ``[seq]`` (specials are ignored).
        label: the class whose probability is tracked.
        kind: ``"comprehensiveness"`` (delete the top-scored tokens) or ``"sufficiency"``
            (keep only them).
        schedule: ``"bins"`` or ``"one_by_one"`` (see `deletion_counts`).
        config: the evaluation settings (special tokens, bins, ``max_skip``).
        cache: optional memo of probabilities keyed by the kept content positions, shared
            between calls on the same ``ids`` and ``label`` (the same subset is run once).

    Returns:
        The probabilities of ``label``, one per deletion count, made monotone (non-increasing
        for comprehensiveness, non-decreasing for sufficiency).

    Raises:
        ArgumentError: shapes differ, no content tokens are left, or ``forward`` does not
            return logits ``[1, classes]``.
    """
    if ids.dim() != 1 or scores.shape != ids.shape:
        raise ArgumentError(
            f"ids must be [seq] and scores the same shape, got {tuple(ids.shape)} and "
            f"{tuple(scores.shape)}"
        )
    start, stop = config.prefix_specials, ids.shape[0] - config.suffix_specials
    if stop <= start:
        raise ArgumentError(f"a sequence of {ids.shape[0]} tokens has no content tokens")
    content = ids[start:stop]
    order = torch.argsort(upcast(scores[start:stop]), descending=True, stable=True)
    curve: list[float] = []
    for k in deletion_counts(content.shape[0], schedule, config):
        keep = order[k:] if kind == "comprehensiveness" else order[:k]
        positions = torch.sort(keep).values
        key = tuple(positions.tolist())
        if cache is not None and key in cache:
            p = cache[key]
        else:
            kept = content[positions]
            p = _probability(forward, torch.cat([ids[:start], kept, ids[stop:]]), label)
            if cache is not None:
                cache[key] = p
        if curve:
            p = min(p, curve[-1]) if kind == "comprehensiveness" else max(p, curve[-1])
        curve.append(p)
    return curve


def aupc_table(
    forward: Callable[[Tensor], Any],
    dataset: Sequence[Tensor],
    methods: Mapping[str, TokenScorer],
    *,
    config: AUPCConfig | None = None,
) -> AUPCTable:
    """Score attribution methods by AUPC comprehensiveness and sufficiency.

    Args:
        forward: ``ids [1, seq] -> logits [1, classes]`` (or an output holding them).
        dataset: sequences of token ids ``[seq]`` (each with its special tokens).
        methods: name -> ``(ids [1, seq], target class) -> scores [1, seq]`` (e.g. a
            `TokenAttribution`).
        config: see `AUPCConfig`.

    Returns:
        An `AUPCTable` with one row per method and schedule.

    Raises:
        ArgumentError: no methods, or a method returns scores of the wrong shape.
    """
    config = config if config is not None else AUPCConfig()
    if not methods:
        raise ArgumentError("methods is empty; pass e.g. {'ig': TokenAttribution(ig, 'sum')}")
    sums = {(m, s): [0.0, 0.0] for m in methods for s in config.schedules}
    used = 0
    for ids in dataset:
        if ids.shape[0] > config.max_len:
            continue
        used += 1
        with torch.no_grad():
            logits = output_tensor(forward(ids.unsqueeze(0)))
        label = int(logits.argmax(-1)[0])
        full = torch.softmax(upcast(logits), -1)[0, label].item()
        cache: dict[tuple[int, ...], float] = {}
        for name, method in methods.items():
            scores = method(ids.unsqueeze(0), label).detach()
            if scores.shape != (1, ids.shape[0]):
                raise ArgumentError(
                    f"method {name!r} returned scores of shape {tuple(scores.shape)}, expected "
                    f"(1, {ids.shape[0]})"
                )
            for schedule in config.schedules:
                for slot, kind in enumerate(("comprehensiveness", "sufficiency")):
                    curve = perturbation_curve(
                        forward,
                        ids,
                        scores[0],
                        label,
                        kind,
                        schedule,
                        config,
                        cache,  # type: ignore[arg-type]
                    )
                    sums[(name, schedule)][slot] += sum(full - p for p in curve) / len(curve)
    rows = [
        AUPCRow(name, schedule, c / max(used, 1), s / max(used, 1), used)
        for (name, schedule), (c, s) in sums.items()
    ]
    return AUPCTable(rows)
