"""Input samplers and counterfactual data for interchange intervention training.

A *sampler* draws a batch of inputs: any callable ``sampler(n, generator) -> {input: [n, *shape]}``
(`InputSampler`). `IndependentSampler` draws each input from its domain (uniform) or from a function
you give. The `CounterfactualGenerator` draws bases, sources and intervened variables per example
and labels them with the causal model, all vectorised; the map-style `CounterfactualDataset`
precomputes a seeded set of examples. `CounterfactualBatch` describes the fields of a batch.

Examples:
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
    """Draws ``n`` inputs: ``sampler(n, generator) -> {input: [n, *shape]}``.

    Any function or object with this call signature is a sampler (e.g. `IndependentSampler`,
    `causal_models.standard.PriceSampler`); it must draw its randomness from ``generator`` so that
    seeded generators reproduce their data.

    Raises:
        TypeError: instantiating the protocol itself (write a function or a class with
            ``__call__``).

    Examples:
        >>> import torch
        >>> def digits(n, generator):
        ...     draw = lambda: torch.randint(0, 10, (n,), generator=generator)
        ...     return {"x": draw(), "y": draw(), "z": draw()}
        >>> sorted(digits(3, torch.Generator().manual_seed(0)))
        ['x', 'y', 'z']
    """

    def __call__(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Draw ``n`` inputs.

        Args:
            n: Number of examples.
            generator: The random generator to draw from.

        Returns:
            ``{input: [n, *shape]}`` for every input variable.
        """
        ...


class IndependentSampler:
    """Draw every input independently: uniformly from its domain, or from a function you give.

    Args:
        model: The causal model whose inputs are drawn.
        samplers: Optional ``{input: f(n, generator) -> [n, *shape]}`` replacing the uniform draw.

    Raises:
        UnknownVariableError: a key of ``samplers`` is not an input variable.

    Examples:
        >>> import torch
        >>> from causal_models import standard
        >>> zeros = lambda n, generator: torch.zeros(n, dtype=torch.int64)
        >>> sampler = IndependentSampler(standard.digit_sum(), {"x": zeros})
        >>> sampler(3, torch.Generator().manual_seed(0))
        {'x': tensor([0, 0, 0]), 'y': tensor([4, 9, 3]), 'z': tensor([0, 3, 9])}
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
        """Draw ``n`` inputs.

        Args:
            n: Number of examples.
            generator: The random generator to draw from.

        Returns:
            ``{input: [n, *shape]}`` for every input variable, in the model's input order.

        Raises:
            SamplingError: an input without a sampler has an unbounded `RealDomain`.
        """
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

    Args:
        variables: Candidate variables to intervene on, in the order of the ``intervened`` columns.
        output: Output variable used as label; ``None`` means the model's only output.
        n_sources: Number of source slots per example.
        selection: ``"one"``: each example intervenes on one candidate drawn uniformly;
            ``"subset"``: each candidate independently with probability 1/2, conditioned on at least
            one; ``"all"``: every candidate.
        source_assignment: ``"uniform"``: each intervened variable takes a source slot drawn
            uniformly; ``"by_position"``: candidate ``j`` always takes slot ``j % n_sources``.
        balance: ``"none"``, or ``"labels"``: equal counts of each counterfactual label (rejection
            sampling; the output domain must be finite).
        balance_classes: Labels to balance over (default: every value of the output domain).
        max_oversample: With ``balance="labels"``, generation gives up (`SamplingError`) after
            drawing this many times the requested size.
        validate: Check sampled inputs and mechanism outputs against their domains.

    Raises:
        CausalModelError: ``variables`` empty, a plain string or repeating a name; ``selection``,
            ``source_assignment`` or ``balance`` not one of the listed values; ``n_sources`` not an
            int >= 1; or ``max_oversample < 1``.
        TypeError: an unknown field.

    Examples:
        >>> CounterfactualConfig(variables=("S",), n_sources=2, selection="all").source_assignment
        'uniform'
        >>> CounterfactualConfig(variables=("S",), selection="some")
        Traceback (most recent call last):
        ...
        causal_models.errors.CausalModelError: selection='some' is not one of ('one', 'subset', ...)
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
    """Rows ``idx`` of every tensor of ``d`` (``{name: [batch, ...]}``)."""
    return {k: v[idx] for k, v in d.items()}


@dataclass(frozen=True)
class CounterfactualBatch:
    """A batch of ``B`` counterfactual examples over ``V`` candidate variables.

    `CounterfactualGenerator.generate` and `CounterfactualDataset.collate` build batches; the
    constructor does not check its arguments.

    Args:
        base: ``{input: [B, *shape]}``: the base inputs.
        sources: One ``{input: [B, *shape]}`` per source slot.
        variables: The ordered candidate variables (the columns of ``intervened`` and
            ``source_index``).
        intervened: bool ``[B, V]``: row ``i`` intervenes on ``variables[j]``.
        source_index: int64 ``[B, V]``: the source slot giving ``variables[j]``, ``-1`` where not
            intervened.
        base_output: The output variable's value on the base ``[B, *shape]``.
        counterfactual_output: Its value under the interchange ``[B, *shape]`` (the IIT label).
        output: Name of the output variable.

    Raises:
        TypeError: a missing or unknown field.

    Examples:
        >>> from causal_models import standard
        >>> gen = CounterfactualGenerator(standard.digit_sum(), CounterfactualConfig(("S", "z")))
        >>> batch = gen.generate(4)
        >>> batch.intervened.tolist()
        [[True, False], [False, True], [False, True], [False, True]]
        >>> batch.base_output.tolist(), batch.counterfactual_output.tolist()
        ([14, 21, 11, 9], [19, 27, 11, 7])
        >>> batch.intervened_variables(0), batch.impactful.tolist()
        ({'S': 0}, [True, True, False, True])
    """

    base: dict[str, Tensor]
    sources: list[dict[str, Tensor]]
    variables: tuple[str, ...]
    intervened: Tensor
    source_index: Tensor
    base_output: Tensor
    counterfactual_output: Tensor
    output: str = field(default="")

    def __len__(self) -> int:
        """Number of examples ``B``."""
        return int(self.intervened.shape[0])

    @property
    def impactful(self) -> Tensor:
        """bool ``[B]``: whether the counterfactual output differs from the base output."""
        diff = self.counterfactual_output != self.base_output
        return diff.reshape(len(self), -1).any(dim=1)

    def intervened_variables(self, row: int) -> dict[str, int]:
        """The intervened variables of one example and their source slots.

        Args:
            row: The example's index.

        Returns:
            ``{variable: source slot}``: the ``variables`` argument of `CausalModel.interchange` for
            that example.

        Raises:
            IndexError: ``row`` is outside the batch.
        """
        return {
            v: int(self.source_index[row, j])
            for j, v in enumerate(self.variables)
            if bool(self.intervened[row, j])
        }

    def select(self, index: Tensor) -> CounterfactualBatch:
        """Some rows as a new batch.

        Args:
            index: int64 ``[k]`` row indices, or a bool mask ``[B]``.

        Returns:
            The selected rows, in the order of ``index``.

        Raises:
            IndexError: an index outside the batch, or a mask of another length.
        """
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
        """Concatenate batches that share ``variables``, ``output`` and number of sources.

        Args:
            batches: The batches, each ``[B_i, ...]``.

        Returns:
            One batch of ``sum(B_i)`` rows, in order.

        Raises:
            CausalModelError: ``batches`` is empty, or the batches differ in ``variables``,
                ``output`` or number of sources.
        """
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
        """A copy with every tensor on ``device``.

        Args:
            device: The target device (``"cpu"``, ``"cuda:0"``, a ``torch.device``).

        Returns:
            The moved batch (the same batch's tensors where they already are on ``device``).
        """
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
    """One example of a `CounterfactualDataset`.

    The fields of `CounterfactualBatch` without the batch dimension.

    Args:
        base: ``{input: [*shape]}``.
        sources: One ``{input: [*shape]}`` per source slot.
        variables: The ordered candidate variables ``V``.
        intervened: bool ``[V]``.
        source_index: int64 ``[V]`` (``-1`` where not intervened).
        base_output: The output on the base ``[*shape]``.
        counterfactual_output: The output under the interchange ``[*shape]``.
        output: Name of the output variable.

    Raises:
        TypeError: a missing or unknown field.
    """

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

    Args:
        model: The causal model labelling the examples.
        config: What to draw (`CounterfactualConfig`).
        sampler: Input sampler for bases and sources (default: `IndependentSampler`).
        seed: Seed of the generator's own ``torch.Generator``: the same seed gives the same sequence
            of batches.

    Raises:
        UnknownVariableError: a candidate variable that is not a variable of the model, or
            ``config.output`` that is not one of its outputs.
        CausalModelError: ``config.output`` is ``None`` but the model has several outputs.
        SamplingError: ``balance="labels"`` on an output whose domain is not finite, or a balance
            class outside the output's domain.

    Examples:
        Balanced labels of a boolean circuit (``O = x0 & ~x1``), intervening on ``A = x0``:

        >>> from causal_models import standard
        >>> config = CounterfactualConfig(variables=("A",), balance="labels")
        >>> gen = CounterfactualGenerator(standard.and_or_not(2), config, seed=0)
        >>> batch = gen.generate(10)
        >>> int(batch.counterfactual_output.sum()), len(batch)
        (5, 10)
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
        """Draw ``n`` examples without balancing: bases, sources, intervened variables and source
        slots, then label them (base run, source runs, per-row interchange).

        Raises:
            CausalModelError: the sampler returned something other than a mapping.
            UnknownVariableError: the sampler returned a name that is not an input variable.
            MissingInputError: the sampler returned no value for an input variable.
            BatchShapeError: the sampled inputs differ in batch size.
            DomainError: a sampled value that is not a tensor ``[batch, *shape]``, or (with
                ``config.validate``) one of another dtype kind or outside its domain.
            MechanismError: a mechanism raised or returned a wrong value.
            SamplingError: the sampler returned another batch size than ``n``.
        """
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

        Args:
            n: Number of examples.

        Returns:
            A `CounterfactualBatch` of ``n`` rows (with ``balance="labels"``, in random order and
            with the class counts differing by at most one).

        Raises:
            CausalModelError: ``n`` is not a positive int.
            SamplingError: with ``balance="labels"``, some class stays short after drawing
                ``max_oversample * n`` examples (the message names the classes and their counts); or
                the sampler returned another batch size than asked for, or sampled an unbounded
                `RealDomain`.
            UnknownVariableError: the sampler returned a name that is not an input variable.
            MissingInputError: the sampler returned no value for an input variable.
            BatchShapeError: the sampled inputs differ in batch size.
            DomainError: a sampled value that is not a tensor ``[batch, *shape]``, or (with
                ``config.validate``) one of another dtype kind or outside its domain.
            MechanismError: a mechanism raised or returned a wrong value.

        Examples:
            >>> import torch
            >>> from causal_models import standard
            >>> model, config = standard.digit_sum(), CounterfactualConfig(("S",))
            >>> a = CounterfactualGenerator(model, config, seed=0).generate(4)
            >>> b = CounterfactualGenerator(model, config, seed=0).generate(4)
            >>> torch.equal(a.counterfactual_output, b.counterfactual_output)  # same seed
            True
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
        """Yield ``n_batches`` fresh batches of ``batch_size`` examples.

        Args:
            batch_size: Examples per batch.
            n_batches: Number of batches.

        Yields:
            `CounterfactualBatch` objects of ``batch_size`` rows.

        Raises:
            CausalModelError: ``batch_size`` is not a positive int (when the first batch is drawn).
            SamplingError: as in `CounterfactualGenerator.generate`.
        """
        for _ in range(n_batches):
            yield self.generate(batch_size)


class CounterfactualDataset(Dataset[CounterfactualExample]):
    """Map-style dataset of ``size`` precomputed counterfactual examples (seeded).

    Indexing gives `CounterfactualExample` objects; `CounterfactualDataset.collate` stacks them for
    a ``DataLoader``, and `CounterfactualDataset.batches` slices the precomputed tensors directly.

    Args:
        model: The causal model labelling the examples.
        size: Number of examples.
        config: What to draw (`CounterfactualConfig`).
        sampler: Input sampler for bases and sources (default: `IndependentSampler`).
        seed: Seed of the generator: the same seed gives the same dataset.

    Raises:
        UnknownVariableError: a candidate variable that is not a variable of the model, or
            ``config.output`` that is not one of its outputs.
        CausalModelError: ``size`` is not a positive int, or ``config.output`` is ``None`` but the
            model has several outputs.
        SamplingError: ``balance="labels"`` on an output whose domain is not finite, a balance class
            outside the output's domain, or labels that cannot be balanced; or a sampler that
            returns another batch size or draws from an unbounded `RealDomain`.
        DomainError: a sampled value that does not fit its domain.
        MechanismError: a mechanism raised or returned a wrong value while labelling.

    Examples:
        >>> from torch.utils.data import DataLoader
        >>> from causal_models import standard
        >>> config = CounterfactualConfig(("S",))
        >>> ds = CounterfactualDataset(standard.digit_sum(), 100, config, seed=1)
        >>> loader = DataLoader(ds, batch_size=8, collate_fn=CounterfactualDataset.collate)
        >>> batch = next(iter(loader))
        >>> len(batch)
        8
        >>> [len(b) for b in ds.batches(40)]
        [40, 40, 20]
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
        """Example ``i`` (negative indices count from the end).

        Raises:
            DatasetIndexError: ``i`` is outside ``-len(self) <= i < len(self)``.
        """
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
        """``collate_fn`` for ``DataLoader``: stack examples into a `CounterfactualBatch`.

        Args:
            examples: Examples of one dataset (same variables, output and number of sources).

        Returns:
            A batch of ``len(examples)`` rows (``intervened`` ``[B, V]``, outputs ``[B, *shape]``).

        Raises:
            CausalModelError: ``examples`` is empty.
        """
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
        """Iterate over the dataset in batches by slicing (much faster than a ``DataLoader``).

        Args:
            batch_size: Examples per batch (the last batch may be smaller).
            shuffle: Visit the examples in a random order.
            seed: Seed of that order.

        Yields:
            `CounterfactualBatch` objects of at most ``batch_size`` rows.

        Raises:
            ValueError: ``batch_size`` is not positive (from ``range``).
        """
        n = len(self.data)
        order = (
            torch.randperm(n, generator=torch.Generator().manual_seed(seed))
            if shuffle
            else torch.arange(n)
        )
        for start in range(0, n, batch_size):
            yield self.data.select(order[start : start + batch_size])
