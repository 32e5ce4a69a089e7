"""`TransformerInterventionable`: `iit.Interventionable` with the transformer coordinate
system (layer, component, position, head, dims) for the families of
`iit.transformers.families`."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from iit.activations import Activations
from iit.coordinates import Coordinate
from iit.errors import CoordinateError, InterventionShapeError
from iit.hooks import Inputs
from iit.interventionable import Interventionable
from iit.interventions import BoundIntervention, Intervention
from iit.transformers.attention import attention_probs_hook_points
from iit.transformers.coordinates import TransformerCoordinate, module_path, resolve, validate
from iit.transformers.families import Family, ModelShape, family_of, model_shape
from iit.transformers.positions import sequence_length
from iit.validation import check_sources, require_list

__all__ = ["TransformerInterventionable"]


class TransformerInterventionable(Interventionable):
    """Wrap a Hugging Face transformer (GPT-2, BERT, DistilBERT, RoBERTa, Llama, Qwen2, Mistral,
    GPT-NeoX; base model or one with a task head) and address its hidden states with
    `TransformerCoordinate` as well as generic `iit.Coordinate`.

    ``attention_probs`` coordinates switch the model to an eager attention function with a hook
    point for the duration of one call (see `iit.transformers.attention`); every other
    component is a plain module hook and leaves the attention implementation alone.

    Args:
        model: the Hugging Face model.
        stop_source_early: as for `iit.Interventionable`.

    Raises:
        ArgumentTypeError: ``model`` is not an ``nn.Module``.
        CoordinateError: a model whose ``config.model_type`` has no family entry, or whose
            query heads cannot be shared evenly by its key-value heads.

    Examples:
        On a tiny GPT-2 (2 layers, 2 heads of width 4), interchanging the whole output of the
        last block makes the base run's final hidden state the source run's:

        >>> import torch
        >>> from transformers import GPT2Config, GPT2Model
        >>> from iit import Interchange
        >>> from iit.transformers import TransformerCoordinate
        >>> _ = torch.manual_seed(0)
        >>> config = GPT2Config(n_layer=2, n_head=2, n_embd=8, vocab_size=20, n_positions=16,
        ...                     bos_token_id=0, eos_token_id=0)
        >>> net = TransformerInterventionable(GPT2Model(config).eval())
        >>> net.shape
        ModelShape(n_layers=2, n_heads=2, n_kv_heads=2, d_head=4, d_model=8, prefix='')
        >>> base = {"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
        >>> source = {"input_ids": torch.tensor([[4, 5, 6]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
        >>> out = net.intervene(base, [Interchange(TransformerCoordinate(1, "block_output"))], [source])
        >>> torch.allclose(out.last_hidden_state, net(**source).last_hidden_state)
        True

        Head 1 of layer 0 is units ``[4, 8)`` of the input of the attention's output projection:

        >>> net.resolve(TransformerCoordinate(0, "head_attention_output", head=1), base)
        Coordinate(module='h.0.attn.c_proj', index=[:, 4:8], output=None, io='input')
    """

    def __init__(self, model: nn.Module, *, stop_source_early: bool = True) -> None:
        super().__init__(model, stop_source_early=stop_source_early)
        self.family: Family = family_of(model)
        self.shape: ModelShape = model_shape(model, self.family)

    # ------------------------------------------------------------------ coordinates
    def resolve(self, coordinate: Any, inputs: Inputs) -> Coordinate:
        """Resolve a `TransformerCoordinate` (or pass a generic `Coordinate`
        through) for a run on ``inputs``; ``Tokens`` positions use its attention mask.

        Raises:
            CoordinateError: layer / head / dims out of range, unknown coordinate type, rows with
                too few real tokens.
        """
        if isinstance(coordinate, TransformerCoordinate):
            return resolve(coordinate, inputs, self.family, self.shape)
        return super().resolve(coordinate, inputs)

    def validate(self, coordinate: Any) -> None:
        """Check a coordinate against the model without inputs or a forward (layer, head and
        dims ranges; module paths for generic coordinates).

        Raises:
            CoordinateError: naming what is out of range and the valid range.
        """
        if isinstance(coordinate, TransformerCoordinate):
            validate(coordinate, self.family, self.shape)
            with self._hook_points([coordinate]):
                path = module_path(coordinate, self.family, self.shape)
                if path not in self._module_table():
                    raise CoordinateError(
                        f"{coordinate.describe()}: module {path!r} does not exist in this "
                        f"{type(self.model).__name__}; the family table does not fit the model"
                    )
            return
        if isinstance(coordinate, Coordinate):
            self.check_coordinate(coordinate, None)  # type: ignore[arg-type]
            return
        super().resolve(coordinate, None)  # type: ignore[arg-type]  # raises for unknown types

    def check_coordinate(self, coordinate: Any, inputs: Inputs) -> Coordinate:
        """As `iit.Interventionable.check_coordinate`, with attention hook points present."""
        with self._hook_points([coordinate]):
            return super().check_coordinate(coordinate, inputs)

    def attention_modules(self) -> list[nn.Module]:
        """The module of each layer that calls the attention function."""
        table = self._module_table()
        return [
            table[f"{self.shape.prefix}{self.family.layers}.{i}.{self.family.attention_module}"]
            for i in range(self.shape.n_layers)
        ]

    @contextlib.contextmanager
    def _hook_points(self, coordinates: Sequence[Any]) -> Iterator[None]:
        needs = any(
            isinstance(c, TransformerCoordinate) and c.component == "attention_probs" for c in coordinates
        )
        if not needs:
            yield
            return
        with attention_probs_hook_points(self.model, self.attention_modules()):
            yield

    # ------------------------------------------------------------------ runs
    def collect(
        self,
        inputs: Inputs,
        coordinates: Sequence[Any],
        *,
        return_output: bool = False,
        detach: bool = False,
    ) -> Activations | tuple[Any, Activations]:
        """As `iit.Interventionable.collect`; also takes `TransformerCoordinate`."""
        coordinates = require_list(coordinates, "collect: coordinates", "coordinates", "coordinate")
        with self._hook_points(coordinates):
            return super().collect(inputs, coordinates, return_output=return_output, detach=detach)

    def intervene(
        self,
        base: Inputs,
        interventions: Sequence[Intervention | BoundIntervention],
        sources: Sequence[Inputs | Activations] = (),
        *,
        detach_sources: bool = False,
    ) -> Any:
        """As `iit.Interventionable.intervene`; also takes `TransformerCoordinate`.

        Base and sources of different sequence lengths are aligned by the coordinates: a
        `Tokens` position counts real tokens (from the start for indices >= 0, from the
        end for negative ones) in each run.

        Raises:
            InterventionShapeError: an interchange at *all* positions between a base and a
                source of different sequence lengths (use ``Tokens`` or explicit positions);
                and, as for `iit.Interventionable.intervene`, batch sizes that differ or
                values that do not fit their slot.
            ArgumentTypeError: ``sources`` is a single input instead of a list.
            InterventionError: as for `iit.Interventionable.intervene` (empty list, a missing
                source, bad row masks).
            CoordinateError: layer / head / dims out of range, unknown module paths, rows with
                too few real tokens.
            HookFiringError: a hooked module ran twice or never.
        """
        check_sources(sources)
        entries = [interventions] if isinstance(interventions, (Intervention, BoundIntervention)) else interventions
        ivs = [e.intervention if isinstance(e, BoundIntervention) else e for e in entries]
        slots = [e.source_slot if isinstance(e, BoundIntervention) else e.source for e in entries]
        self._check_lengths(base, list(zip(ivs, slots)), sources)
        coords = [c for iv in ivs for c in (iv.coordinate, iv.source_coordinate) if c is not None]
        with self._hook_points(coords):
            return super().intervene(base, interventions, sources, detach_sources=detach_sources)

    def intervene_in_batch(
        self,
        base: Inputs,
        groups: Sequence[Sequence[Intervention | BoundIntervention]],
        source_rows: Tensor,
        *,
        detach_sources: bool = False,
        return_base_output: bool = True,
        one_pass: bool = True,
    ) -> tuple[Any, list[Any]]:
        """As `iit.Interventionable.intervene_in_batch`; also takes `TransformerCoordinate`.
        Keyword inputs without ``use_cache`` run with ``use_cache=False`` when the model takes it
        (no key / value cache is built, so the one-pass output can be cut into its blocks; both
        ways of running give the same outputs).

        Args:
            base: inputs of the base run (e.g. ``input_ids`` / ``attention_mask`` ``[batch, seq]``).
            groups: one list of interventions per intervened run.
            source_rows: LongTensor ``[batch]``: row ``i`` reads row ``source_rows[i]``.
            detach_sources: cut gradients through the source values.
            return_base_output: also return the base output.
            one_pass: allow the one-pass run.

        Returns:
            ``(base output or None, [intervened output per group])``.

        Raises:
            ArgumentTypeError: ``source_rows`` is not a 1-D integer tensor.
            OutOfRangeError: ``source_rows`` has another length than the batch or a row outside it.
            InterventionError: no groups, an empty group, a source slot other than 0.
            InterventionShapeError: values that do not fit their slot.
            CoordinateError: layer / head / dims out of range, unknown module paths, rows with
                too few real tokens.
            HookFiringError: a hooked module ran twice or never.
        """
        if isinstance(base, Mapping) and "use_cache" not in base and self._takes_use_cache():
            base = {**base, "use_cache": False}
        entries = [getattr(e, "intervention", e) for g in (groups if isinstance(groups, (list, tuple)) else [])
                   for e in (g if isinstance(g, (list, tuple)) else [])]
        coords = [c for iv in entries for c in (getattr(iv, "coordinate", None), getattr(iv, "source_coordinate", None))
                  if c is not None]
        with self._hook_points(coords):
            return super().intervene_in_batch(
                base, groups, source_rows, detach_sources=detach_sources, return_base_output=return_base_output,
                one_pass=one_pass,
            )

    def _takes_use_cache(self) -> bool:
        takes = self.__dict__.get("_use_cache_parameter")
        if takes is None:
            try:
                takes = "use_cache" in inspect.signature(self.model.forward).parameters
            except (TypeError, ValueError):
                takes = False
            self.__dict__["_use_cache_parameter"] = takes
        return takes

    def _check_lengths(
        self, base: Inputs, ivs: Sequence[tuple[Any, int | None]], sources: Sequence[Any]
    ) -> None:
        base_len = sequence_length(base)
        for iv, slot in ivs:
            coord = getattr(iv, "source_coordinate", None)
            if not getattr(iv, "needs_source", False) or not isinstance(coord, TransformerCoordinate):
                continue
            if slot is None or slot >= len(sources) or isinstance(sources[slot], Activations):
                continue
            base_coord = iv.coordinate
            if coord.position is not None or getattr(base_coord, "position", None) is not None:
                continue  # explicit positions on either side say which token feeds which
            src_len = sequence_length(sources[slot])
            if base_len is not None and src_len is not None and src_len != base_len:
                raise InterventionShapeError(
                    f"{type(iv).__name__} at {coord.describe()}: the base has {base_len} tokens and "
                    f"source {slot} has {src_len}, and 'all positions' does not say which token "
                    "feeds which; use Tokens positions (Tokens.at(0, 1) aligns from the first "
                    "real token, Tokens.at(-1) from the last) or pad both to one length"
                )
