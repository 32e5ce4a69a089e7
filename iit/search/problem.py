"""What a search is about: the wrapped model, the causal model, one variable, how causal inputs
become network inputs, the counterfactual splits, and the places to try."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from causal_models import CausalModel, CounterfactualConfig, CounterfactualGenerator
from causal_models.data import CounterfactualBatch, InputSampler
from iit.coordinates import Coordinate, Index
from iit.errors import AlignmentError, ArgumentTypeError, unknown_name
from iit.hooks import Inputs
from iit.interventionable import Interventionable
from iit.outputs import output_tensor

__all__ = ["SearchProblem", "CounterfactualSplits", "Place", "module_places", "transformer_places"]


@dataclass
class SearchProblem:
    """A model, a causal model and the variable whose neural place is searched.

    Attributes:
        model: the wrapped network (frozen during the search; its flags are restored after).
        causal_model: the high-level model.
        variable: the causal variable to place.
        encode_inputs: causal input values ``{input: [batch, ...]}`` -> network inputs.
        decode_output: network output -> logits ``[batch, classes]`` (default: the output
            tensor or ``.logits``; for a sequence model pick the predicting position here).
        output: the causal output the network predicts (default: the only output); its domain
            must be finite (the classes).

    Raises:
        ArgumentTypeError: a model that is not an `iit.Interventionable`.
        AlignmentError: an unknown variable or output (nearest names listed), or an output whose
            domain is not finite.
    """

    model: Interventionable
    causal_model: CausalModel
    variable: str
    encode_inputs: Callable[[Mapping[str, Tensor]], Inputs]
    decode_output: Callable[[Any], Tensor] = output_tensor
    """Network output -> logits ``[batch, classes]`` (default: `iit.outputs.output_tensor`).

    Raises:
        TargetError: (the default) the output holds no tensor.
    """
    output: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, Interventionable):
            raise ArgumentTypeError(
                f"model must be an iit.Interventionable (wrap the network: Interventionable(net)), got "
                f"{type(self.model).__name__}"
            )
        known = list(self.causal_model.variables)
        if self.variable not in known:
            raise AlignmentError(unknown_name(self.variable, known, "causal variable"))
        if self.output is None:
            if len(self.causal_model.outputs) != 1:
                raise AlignmentError(f"the causal model has outputs {self.causal_model.outputs}; choose one with output=")
            self.output = self.causal_model.outputs[0]
        elif self.output not in self.causal_model.outputs:
            raise AlignmentError(unknown_name(self.output, self.causal_model.outputs, "output"))
        if not getattr(self.causal_model.domain(self.output), "is_finite", False):
            raise AlignmentError(f"the search scores classification: output {self.output!r} needs a finite domain")

    def labels(self, values: Tensor) -> Tensor:
        """Class indices ``[batch]`` of output values ``[batch]``."""
        assert self.output is not None
        return self.causal_model.domain(self.output).index_of(values).long()  # type: ignore[attr-defined]


@dataclass(frozen=True)
class CounterfactualSplits:
    """Train / validation / test pairs, each intervening on the searched variable alone (from
    source slot 0): cells are fitted on ``train``, selected on ``validation`` and reported on
    ``test``.

    Raises:
        AlignmentError: a split that intervenes on anything but one variable in every row.
    """

    train: CounterfactualBatch
    validation: CounterfactualBatch
    test: CounterfactualBatch

    def __post_init__(self) -> None:
        for name in ("train", "validation", "test"):
            batch = getattr(self, name)
            if len(batch.variables) != 1 or not bool(batch.intervened.all()) or bool((batch.source_index != 0).any()):
                raise AlignmentError(
                    f"the {name} split must intervene on one variable in every row from source 0; it has "
                    f"variables {batch.variables} (make splits with CounterfactualSplits.generate)"
                )
        names = {self.train.variables, self.validation.variables, self.test.variables}
        if len(names) != 1:
            raise AlignmentError(f"the splits intervene on different variables: {sorted(names)}")

    @property
    def variable(self) -> str:
        """The intervened variable."""
        return self.train.variables[0]

    @staticmethod
    def generate(
        causal_model: CausalModel,
        variable: str,
        sizes: tuple[int, int, int] = (2048, 512, 1024),
        *,
        sampler: InputSampler | None = None,
        test_sampler: InputSampler | None = None,
        balance: bool = False,
        seed: int = 0,
    ) -> CounterfactualSplits:
        """Draw the three splits with seeds ``seed``, ``seed + 1``, ``seed + 2``.

        Args:
            causal_model: the high-level model.
            variable: the variable every pair intervenes on.
            sizes: ``(train, validation, test)`` pairs.
            sampler: inputs of train and validation (default: uniform over the domains).
            test_sampler: inputs of the test split (default: ``sampler``; e.g. unseen entities).
            balance: draw equally many pairs of each counterfactual label.
            seed: base seed.
        """
        config = CounterfactualConfig(variables=(variable,), selection="all", balance="labels" if balance else "none")
        samplers = (sampler, sampler, test_sampler or sampler)
        batches = [
            CounterfactualGenerator(causal_model, config, s, seed=seed + i).generate(n)
            for i, (n, s) in enumerate(zip(sizes, samplers))
        ]
        return CounterfactualSplits(*batches)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")


@dataclass(frozen=True)
class Place:
    """One coordinate set to try, with the labels the result table is indexed by.

    Attributes:
        coordinate: where (a `iit.Coordinate` or a
            `iit.transformers.TransformerCoordinate`); the slot's last axis is featurized.
        layer: the ``layer`` label of the result table (``None`` where it does not apply).
        component: the ``component`` label.
        position: the ``position`` label.
        head: the ``head`` label.
        name: a short unique name (default: derived from the labels or the coordinate).

    Raises:
        TypeError: a missing or unknown field (the coordinate is checked when the search
            collects the place's data).

    Examples:
        >>> from iit import Coordinate
        >>> Place(Coordinate("layers.0"), layer=0, component="mlp").name
        'L=0_c=mlp'
    """

    coordinate: Any
    layer: int | None = None
    component: str | None = None
    position: int | str | None = None
    head: int | None = None
    name: str = field(default="")

    def __post_init__(self) -> None:
        if not self.name:
            parts = [f"{k}={v}" for k, v in (("L", self.layer), ("c", self.component), ("p", self.position), ("h", self.head)) if v is not None]
            text = "_".join(parts) if parts else getattr(self.coordinate, "describe", lambda: repr(self.coordinate))()
            object.__setattr__(self, "name", _slug(text))


def module_places(modules: Sequence[str], index: Index | None = None) -> list[Place]:
    """One place per module path (``layer`` = its position in ``modules``), whole output by
    default.

    Args:
        modules: module paths, as in ``model.named_modules()``.
        index: which entries of each output (default: all).

    Returns:
        One `Place` per module.

    Raises:
        CoordinateError: a module path that is not a string (paths are checked against the
            model when the search collects data).

    Examples:
        >>> from iit import Index
        >>> [p.name for p in module_places(["layers.0", "layers.1"], Index.dims(0, 4))]
        ['layers.0', 'layers.1']
    """
    return [
        Place(Coordinate(m, index or Index.all()), layer=i, component=m, name=_slug(m)) for i, m in enumerate(modules)
    ]


def transformer_places(
    layers: Sequence[int],
    components: Sequence[str] = ("block_output",),
    positions: Sequence[int | None] = (None,),
    heads: Sequence[int | None] = (None,),
) -> list[Place]:
    """The grid ``layers x components x positions x heads`` of transformer coordinates
    (`iit.transformers.TransformerCoordinate`; a head only on head components).

    Raises:
        CoordinateError: an unknown component, or a head on a component without heads.
    """
    from iit.transformers import TransformerCoordinate

    out = []
    for layer in layers:
        for component in components:
            for position in positions:
                for head in heads:
                    coordinate = TransformerCoordinate(layer, component, position=position, head=head)  # type: ignore[arg-type]
                    out.append(Place(coordinate, layer, component, position, head))
    return out


def select_rows(batch: CounterfactualBatch, index: Tensor) -> CounterfactualBatch:
    """Rows ``index`` (LongTensor ``[n]``) of a batch."""
    return batch.select(index.to(torch.long))
