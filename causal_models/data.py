"""Input samplers and counterfactual data for interchange intervention training.

A *sampler* draws a batch of inputs: any callable ``sampler(n, generator) -> {input: [n, *shape]}``
(:class:`InputSampler`). :class:`IndependentSampler` draws each input from its domain (uniform) or
from a function you give. The :class:`CounterfactualGenerator` draws bases, sources and intervened
variables per example and labels them with the causal model, all vectorised; the map-style
:class:`CounterfactualDataset` precomputes a seeded set of examples.

Batch fields (:class:`CounterfactualBatch`)
-------------------------------------------
``base``                  ``{input: [B, *shape]}``
``sources``               list (one per source slot) of ``{input: [B, *shape]}``
``variables``             the ordered candidate variables (the columns below)
``intervened``            bool ``[B, V]``: row ``i`` intervenes on ``variables[j]``
``source_index``          int64 ``[B, V]``: source slot giving ``variables[j]``, ``-1`` if not intervened
``base_output``           the output variable's value on the base ``[B, *shape]``
``counterfactual_output`` its value under the interchange ``[B, *shape]``
``impactful`` (property)  bool ``[B]``: counterfactual output differs from the base output

Examples
--------
>>> from causal_models import standard
>>> model = standard.digit_sum(max_digit=9)
>>> gen = CounterfactualGenerator(model, CounterfactualConfig(variables=("S", "z")), seed=0)
>>> batch = gen.generate(4)
>>> batch.intervened.shape, batch.counterfactual_output.shape
(torch.Size([4, 2]), torch.Size([4]))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Literal, Protocol

import torch
from torch import Tensor
from torch.utils.data import Dataset

from causal_models import engine
from causal_models.errors import (
    CausalModelError,
    DatasetIndexError,
    SamplingError,
    UnknownVariableError,
    unknown_name_message,
)
from causal_models.model import CausalModel

__all__ = [
    "InputSampler",
    "IndependentSampler",
    "CounterfactualConfig",
    "CounterfactualBatch",
    "CounterfactualExample",
    "CounterfactualGenerator",
    "CounterfactualDataset",
]


class InputSampler(Protocol):
    """Draws ``n`` inputs: ``sampler(n, generator) -> {input: [n, *shape]}``."""

    def __call__(self, n: int, generator: torch.Generator) -> dict[str, Tensor]: ...


class IndependentSampler:
    """Draw every input independently: uniformly from its domain, or from a function you give.

    Parameters
    ----------
    model
        The causal model whose inputs are drawn.
    samplers
        Optional ``{input: f(n, generator) -> [n, *shape]}`` replacing the uniform draw.

    Raises
    ------
    UnknownVariableError
        If a key of ``samplers`` is not an input.
    """

    def __init__(
        self,
        model: CausalModel,
        samplers: Mapping[str, Callable[[int, torch.Generator], Tensor]] | None = None,
    ) -> None:
        self.model = model
        self.samplers = dict(samplers or {})
        for k in self.samplers:
            if k not in model.inputs:
                raise UnknownVariableError(unknown_name_message(k, model.inputs, "input variable"))

    def __call__(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Draw ``n`` inputs -> ``{input: [n, *shape]}``."""
        out = {}
        for name in self.model.inputs:
            f = self.samplers.get(name)
            out[name] = (
                f(n, generator) if f is not None else self.model.domain(name).sample(n, generator)
            )
        return out


@dataclass(frozen=True)
class CounterfactualConfig:
    """How counterfactual examples are drawn.

    Parameters
    ----------
    variables
        Candidate variables to intervene on, in the order of the ``intervened`` columns.
    output
        Output variable used as label; ``None`` means the model's only output.
    n_sources
        Number of source slots per example.
    selection
        ``"one"``: each example intervenes on one candidate drawn uniformly; ``"subset"``: each
        candidate independently with probability 1/2, conditioned on at least one; ``"all"``: every
        candidate.
    source_assignment
        ``"uniform"``: each intervened variable takes a source slot drawn uniformly;
        ``"by_position"``: candidate ``j`` always takes slot ``j % n_sources``.
    balance
        ``"none"``, or ``"labels"``: equal counts of each counterfactual label (rejection sampling;
        the output domain must be finite).
    balance_classes
        Labels to balance over (default: every value of the output domain).
    max_oversample
        ``"labels"`` gives up (``SamplingError``) after drawing this many times the requested size.
    validate
        Check sampled inputs and mechanism outputs against their domains.
    """

    variables: tuple[str, ...]
    output: str | None = None
    n_sources: int = 1
    selection: Literal["one", "subset", "all"] = "one"
    source_assignment: Literal["uniform", "by_position"] = "uniform"
    balance: Literal["none", "labels"] = "none"
    balance_classes: tuple[bool | int | float, ...] | None = None
    max_oversample: int = 64
    validate: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.variables, str) or len(self.variables) == 0:
            raise CausalModelError(
                f"variables must be a non-empty tuple of names, got {self.variables!r}"
            )
        object.__setattr__(self, "variables", tuple(self.variables))
        if len(set(self.variables)) != len(self.variables):
            raise CausalModelError(f"variables repeat a name: {self.variables!r}")
        for name, value, valid in (
            ("selection", self.selection, ("one", "subset", "all")),
            ("source_assignment", self.source_assignment, ("uniform", "by_position")),
            ("balance", self.balance, ("none", "labels")),
        ):
            if value not in valid:
                raise CausalModelError(f"{name}={value!r} is not one of {valid}")
        if (
            isinstance(self.n_sources, bool)
            or not isinstance(self.n_sources, int)
            or self.n_sources < 1
        ):
            raise CausalModelError(f"n_sources must be an int >= 1, got {self.n_sources!r}")
        if self.max_oversample < 1:
            raise CausalModelError(f"max_oversample must be >= 1, got {self.max_oversample!r}")


def _index(d: Mapping[str, Tensor], idx: Tensor) -> dict[str, Tensor]:
    return {k: v[idx] for k, v in d.items()}


@dataclass(frozen=True)
class CounterfactualBatch:
    """A batch of counterfactual examples; fields are described in the module docstring."""

    base: dict[str, Tensor]
    sources: list[dict[str, Tensor]]
    variables: tuple[str, ...]
    intervened: Tensor
    source_index: Tensor
    base_output: Tensor
    counterfactual_output: Tensor
    output: str = field(default="")

    def __len__(self) -> int:
        return int(self.intervened.shape[0])

    @property
    def impactful(self) -> Tensor:
        """bool ``[B]``: whether the counterfactual output differs from the base output."""
        diff = self.counterfactual_output != self.base_output
        return diff.reshape(len(self), -1).any(dim=1)

    def intervened_variables(self, row: int) -> dict[str, int]:
        """``{variable: source slot}`` intervened in ``row`` (the ``variables`` argument of
        :meth:`CausalModel.interchange` for that example)."""
        return {
            v: int(self.source_index[row, j])
            for j, v in enumerate(self.variables)
            if bool(self.intervened[row, j])
        }

    def select(self, index: Tensor) -> CounterfactualBatch:
        """Rows ``index`` (int64 ``[k]`` or bool ``[B]``) as a new batch."""
        return CounterfactualBatch(
            _index(self.base, index),
            [_index(s, index) for s in self.sources],
            self.variables,
            self.intervened[index],
            self.source_index[index],
            self.base_output[index],
            self.counterfactual_output[index],
            self.output,
        )

    @staticmethod
    def cat(batches: Sequence[CounterfactualBatch]) -> CounterfactualBatch:
        """Concatenate batches that share ``variables``, ``output`` and number of sources."""
        if not batches:
            raise CausalModelError("cannot concatenate an empty list of batches")
        first = batches[0]
        for b in batches[1:]:
            if (b.variables, b.output, len(b.sources)) != (
                first.variables,
                first.output,
                len(first.sources),
            ):
                raise CausalModelError("batches differ in variables, output or number of sources")
        return CounterfactualBatch(
            {k: torch.cat([b.base[k] for b in batches]) for k in first.base},
            [
                {k: torch.cat([b.sources[i][k] for b in batches]) for k in first.sources[i]}
                for i in range(len(first.sources))
            ],
            first.variables,
            torch.cat([b.intervened for b in batches]),
            torch.cat([b.source_index for b in batches]),
            torch.cat([b.base_output for b in batches]),
            torch.cat([b.counterfactual_output for b in batches]),
            first.output,
        )

    def to(self, device: torch.device | str) -> CounterfactualBatch:
        """A copy with every tensor on ``device``."""
        return CounterfactualBatch(
            {k: v.to(device) for k, v in self.base.items()},
            [{k: v.to(device) for k, v in s.items()} for s in self.sources],
            self.variables,
            self.intervened.to(device),
            self.source_index.to(device),
            self.base_output.to(device),
            self.counterfactual_output.to(device),
            self.output,
        )


@dataclass(frozen=True)
class CounterfactualExample:
    """One example of a :class:`CounterfactualDataset`: the batch fields without the batch
    dimension (``intervened`` ``[V]``, ``base_output`` ``[*shape]``, ...)."""

    base: dict[str, Tensor]
    sources: list[dict[str, Tensor]]
    variables: tuple[str, ...]
    intervened: Tensor
    source_index: Tensor
    base_output: Tensor
    counterfactual_output: Tensor
    output: str


class CounterfactualGenerator:
    """Vectorised, seeded generator of counterfactual batches.

    Parameters
    ----------
    model
        The causal model labelling the examples.
    config
        What to draw (:class:`CounterfactualConfig`).
    sampler
        Input sampler for bases and sources (default: :class:`IndependentSampler`).
    seed
        Seed of the generator's own ``torch.Generator``: the same seed gives the same sequence of
        batches.

    Raises
    ------
    UnknownVariableError
        A candidate or output name that is not a variable / output of the model.
    SamplingError
        ``balance="labels"`` on an output whose domain is not finite, or an unknown balance class.
    """

    def __init__(
        self,
        model: CausalModel,
        config: CounterfactualConfig,
        sampler: InputSampler | None = None,
        seed: int = 0,
    ) -> None:
        for v in config.variables:
            model.domain(v)
        if config.output is None:
            if len(model.outputs) != 1:
                raise CausalModelError(
                    f"the model has outputs {model.outputs}; choose one with config.output"
                )
            output = model.outputs[0]
        elif config.output not in model.outputs:
            raise UnknownVariableError(unknown_name_message(config.output, model.outputs, "output"))
        else:
            output = config.output
        self.model, self.config, self.output = model, config, output
        self.sampler: InputSampler = sampler if sampler is not None else IndependentSampler(model)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self._classes: Tensor | None = None
        if config.balance == "labels":
            dom = model.domain(output)
            if not dom.is_finite:
                raise SamplingError(
                    f"balance='labels' needs a finite output domain; {output!r} has {dom!r}"
                )
            values = dom.values  # type: ignore[attr-defined]
            classes = values if config.balance_classes is None else config.balance_classes
            for c in classes:
                if c not in values:
                    raise SamplingError(
                        f"balance class {c!r} is not in the domain {dom!r} of {output!r}"
                    )
            self._classes = torch.tensor(classes, dtype=dom.dtype)

    def _draw(self, n: int) -> CounterfactualBatch:
        cfg, g = self.config, self.generator
        n_var = len(cfg.variables)
        base = self.sampler(n, g)
        sources = [self.sampler(n, g) for _ in range(cfg.n_sources)]
        if cfg.selection == "one":
            pick = torch.randint(0, n_var, (n,), generator=g)
            intervened = torch.nn.functional.one_hot(pick, n_var).bool()
        elif cfg.selection == "all":
            intervened = torch.ones(n, n_var, dtype=torch.bool)
        else:
            intervened = torch.rand(n, n_var, generator=g) < 0.5
            empty = ~intervened.any(dim=1)
            while bool(empty.any()):
                k = int(empty.sum())
                intervened[empty] = torch.rand(k, n_var, generator=g) < 0.5
                empty = ~intervened.any(dim=1)
        if cfg.source_assignment == "uniform":
            slot = torch.randint(0, cfg.n_sources, (n, n_var), generator=g)
        else:
            slot = (torch.arange(n_var) % cfg.n_sources).expand(n, n_var).clone()
        slot[~intervened] = -1
        # check the sampled inputs once, then evaluate without re-checking them
        model, val = self.model, cfg.validate
        for what, inputs in [("sampled base", base)] + [
            (f"sampled source {k}", src) for k, src in enumerate(sources)
        ]:
            got = engine.check_inputs(model, inputs, what, val)
            if got != n:
                raise SamplingError(f"{what}: the sampler returned batch size {got}, asked for {n}")
        base_run = engine.evaluate_checked(model, base, {}, {}, n, val)
        runs = {
            k: engine.evaluate_checked(model, src, {}, {}, n, val) for k, src in enumerate(sources)
        }
        overrides, rows = engine.per_row_overrides(runs, cfg.variables, intervened, slot)
        cf = engine.evaluate_checked(model, base, overrides, rows, n, val)
        return CounterfactualBatch(
            base,
            sources,
            cfg.variables,
            intervened,
            slot,
            base_run[self.output],
            cf[self.output],
            self.output,
        )

    def generate(self, n: int) -> CounterfactualBatch:
        """Draw ``n`` counterfactual examples (advances the generator's random state).

        Raises
        ------
        SamplingError
            With ``balance="labels"``, if some class stays short after drawing
            ``max_oversample * n`` examples (the message names the classes and their counts).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise CausalModelError(f"n must be a positive int, got {n!r}")
        if self._classes is None:
            return self._draw(n)
        classes = self._classes
        k = len(classes)
        quota = torch.full((k,), n // k, dtype=torch.int64)
        quota[torch.randperm(k, generator=self.generator)[: n % k]] += 1
        have = torch.zeros(k, dtype=torch.int64)
        seen = torch.zeros(k, dtype=torch.int64)
        kept: list[CounterfactualBatch] = []
        drawn = 0
        while bool((have < quota).any()):
            if drawn >= self.config.max_oversample * n:
                short = {classes[i].item(): int(have[i]) for i in range(k) if have[i] < quota[i]}
                raise SamplingError(
                    f"could not balance labels of {self.output!r}: after {drawn} draws these "
                    f"classes are short (class: count, quota {int(quota.max())}): {short}; use "
                    "balance_classes to balance fewer labels, a better sampler, or balance='none'"
                )
            if drawn == 0:
                size = max(n, 256)
            else:  # enough for the shortest class at its observed rate, with 20% margin
                rate = seen.clamp(min=1).double() / drawn
                need = ((quota - have).clamp(min=0).double() / rate).max().item()
                size = int(min(max(1.2 * need, 256), self.config.max_oversample * n))
            chunk = self._draw(size)
            drawn += len(chunk)
            label = chunk.counterfactual_output
            member = label.unsqueeze(-1) == classes  # [m, k]
            seen += member.sum(dim=0)
            # rank of each row within its class in this chunk (chunk order is random)
            rank = member.to(torch.int64).cumsum(dim=0) - 1
            take = member & (rank < (quota - have)) & (rank >= 0)
            rows = take.any(dim=1)
            have += take.sum(dim=0)
            if bool(rows.any()):
                kept.append(chunk.select(rows))
        out = CounterfactualBatch.cat(kept)
        return out.select(torch.randperm(len(out), generator=self.generator))

    def batches(self, batch_size: int, n_batches: int) -> Iterator[CounterfactualBatch]:
        """Yield ``n_batches`` fresh batches of ``batch_size`` examples."""
        for _ in range(n_batches):
            yield self.generate(batch_size)


class CounterfactualDataset(Dataset[CounterfactualExample]):
    """Map-style dataset of ``size`` precomputed counterfactual examples (seeded).

    Parameters
    ----------
    model, config, sampler, seed
        As in :class:`CounterfactualGenerator`.
    size
        Number of examples.

    Examples
    --------
    >>> from torch.utils.data import DataLoader
    >>> from causal_models import standard
    >>> ds = CounterfactualDataset(standard.digit_sum(), 100, CounterfactualConfig(("S",)), seed=1)
    >>> batch = next(iter(DataLoader(ds, batch_size=8, collate_fn=CounterfactualDataset.collate)))
    >>> len(batch)
    8
    """

    def __init__(
        self,
        model: CausalModel,
        size: int,
        config: CounterfactualConfig,
        sampler: InputSampler | None = None,
        seed: int = 0,
    ) -> None:
        self.data = CounterfactualGenerator(model, config, sampler, seed).generate(size)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> CounterfactualExample:
        d = self.data
        if not -len(d) <= i < len(d):
            raise DatasetIndexError(
                f"index {i} out of range for a dataset of {len(d)} examples; valid: -{len(d)} <= index < {len(d)}"
            )
        return CounterfactualExample(
            {k: v[i] for k, v in d.base.items()},
            [{k: v[i] for k, v in s.items()} for s in d.sources],
            d.variables,
            d.intervened[i],
            d.source_index[i],
            d.base_output[i],
            d.counterfactual_output[i],
            d.output,
        )

    @staticmethod
    def collate(examples: Sequence[CounterfactualExample]) -> CounterfactualBatch:
        """``collate_fn`` for ``DataLoader``: stack examples into a :class:`CounterfactualBatch`."""
        if not examples:
            raise CausalModelError("cannot collate an empty list of examples")
        e0 = examples[0]
        stacked = {
            f.name: torch.stack([getattr(e, f.name) for e in examples])
            for f in fields(CounterfactualExample)
            if f.name in ("intervened", "source_index", "base_output", "counterfactual_output")
        }
        return CounterfactualBatch(
            {k: torch.stack([e.base[k] for e in examples]) for k in e0.base},
            [
                {k: torch.stack([e.sources[i][k] for e in examples]) for k in e0.sources[i]}
                for i in range(len(e0.sources))
            ],
            e0.variables,
            output=e0.output,
            **stacked,
        )

    def batches(
        self, batch_size: int, shuffle: bool = False, seed: int = 0
    ) -> Iterator[CounterfactualBatch]:
        """Iterate over the dataset in batches by slicing (much faster than a ``DataLoader``)."""
        n = len(self.data)
        order = (
            torch.randperm(n, generator=torch.Generator().manual_seed(seed))
            if shuffle
            else torch.arange(n)
        )
        for start in range(0, n, batch_size):
            yield self.data.select(order[start : start + batch_size])
