"""Greedy generation with interventions on a `iit.transformers.TransformerInterventionable`
causal language model.

``apply_to`` says which tokens are intervened on:

* ``"prompt"``: base coordinates are resolved once against the prompt (``Tokens.last()`` = the
  prompt's last real token, ``position=None`` = every prompt position) and stay there while
  tokens are generated (each step re-runs the whole sequence without a KV cache, so the prompt
  positions are intervened at every step, exactly as with a cache filled once).
* ``"every_step"``: base coordinates are resolved against the sequence of each step
  (``Tokens.last()`` follows the newest token).

Source values are collected once from each source (source coordinates resolve against the
source inputs) and reused at every step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

from iit.activations import Activations
from iit.errors import ArgumentTypeError, InterventionError
from iit.interventions import BoundIntervention, Intervention
from iit.transformers.coordinates import TransformerCoordinate
from iit.transformers.interventionable import TransformerInterventionable
from iit.transformers.positions import Tokens, position_ids_from_mask, real_token_positions
from iit.validation import check_sources

__all__ = ["generate", "ApplyTo"]

ApplyTo = Literal["prompt", "every_step"]


def generate(
    model: TransformerInterventionable,
    prompt: Mapping[str, Tensor],
    interventions: Sequence[Intervention | BoundIntervention],
    sources: Sequence[Mapping[str, Tensor] | Activations] = (),
    *,
    max_new_tokens: int,
    apply_to: ApplyTo = "prompt",
) -> Tensor:
    """Greedy decoding of ``max_new_tokens`` tokens with ``interventions`` applied.

    Args:
        model: a wrapped causal LM whose output has ``logits`` ``[batch, seq, vocab]``.
        prompt: ``{"input_ids": [batch, seq], "attention_mask": [batch, seq]}``, left- or
            right-padded (position ids are computed from the mask).
        interventions: as for `iit.Interventionable.intervene`.
        sources: source inputs (dicts) or collected `iit.Activations`.
        max_new_tokens: number of tokens to generate (>= 1).
        apply_to: ``"prompt"`` or ``"every_step"`` (see the module docstring).

    Returns:
        The generated token ids ``[batch, max_new_tokens]``.

    Raises:
        ArgumentTypeError: ``max_new_tokens`` is not an int, the prompt is not a dict, or
            ``sources`` is a single input instead of a list.
        InterventionError: bad ``apply_to`` / ``max_new_tokens``, a prompt without
            ``input_ids`` and ``attention_mask``, or a model output without ``logits``.
    """
    if apply_to not in ("prompt", "every_step"):
        raise InterventionError(f"apply_to must be 'prompt' or 'every_step', got {apply_to!r}")
    if isinstance(max_new_tokens, int) and not isinstance(max_new_tokens, bool) and max_new_tokens < 1:
        raise InterventionError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise ArgumentTypeError(f"max_new_tokens must be an int, got {type(max_new_tokens).__name__}")
    if not isinstance(prompt, Mapping):
        raise ArgumentTypeError(
            f"the prompt must be a dict {{'input_ids': ..., 'attention_mask': ...}} (a tokenizer's output), "
            f"got {type(prompt).__name__}"
        )
    check_sources(sources)
    if isinstance(interventions, (Intervention, BoundIntervention)):
        interventions = [interventions]
    if not {"input_ids", "attention_mask"} <= set(prompt):
        raise InterventionError(
            f"the prompt needs 'input_ids' and 'attention_mask', got keys {sorted(prompt)}"
        )
    entries = list(interventions)
    ivs = [e.intervention if isinstance(e, BoundIntervention) else e for e in entries]
    cached = _cache_sources(model, entries, sources)
    ids, mask = prompt["input_ids"], prompt["attention_mask"]
    saved = [iv.coordinate for iv in ivs]
    new_tokens: list[Tensor] = []
    try:
        if apply_to == "prompt":
            for iv in ivs:
                iv.coordinate = _pin(iv.coordinate, mask)
        with torch.no_grad():
            for _ in range(max_new_tokens):
                inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids_from_mask(mask)}
                out = model.intervene(inputs, entries, cached, detach_sources=True)
                logits = getattr(out, "logits", None)
                if logits is None:
                    raise InterventionError(
                        f"{type(model.model).__name__} returns no logits; generate needs a causal LM "
                        "(e.g. AutoModelForCausalLM)"
                    )
                last = real_token_positions(Tokens.last(), mask).to(logits.device)  # [batch, 1]
                next_logits = logits.gather(1, last[:, :, None].expand(-1, -1, logits.shape[-1]))[:, 0]
                token = next_logits.argmax(-1).to(ids.device)  # [batch], on the prompt's device
                new_tokens.append(token)
                ids = torch.cat([ids, token[:, None]], dim=1)
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    finally:
        for iv, coord in zip(ivs, saved):
            iv.coordinate = coord
    return torch.stack(new_tokens, dim=1)


def _pin(coord: object, mask: Tensor) -> object:
    """The coordinate with its positions fixed to the prompt's absolute positions."""
    if not isinstance(coord, TransformerCoordinate):
        return coord
    pos = coord.position
    if pos is None:
        fixed: object = tuple(range(mask.shape[1]))
    elif isinstance(pos, Tokens):
        fixed = real_token_positions(pos, mask)
    else:
        fixed = pos
    return dataclasses.replace(coord, position=fixed)


def _cache_sources(
    model: TransformerInterventionable,
    entries: Sequence[Intervention | BoundIntervention],
    sources: Sequence[Mapping[str, Tensor] | Activations],
) -> list[Activations]:
    """Collect every source coordinate once per source slot."""
    wanted: dict[int, list[object]] = {}
    for e in entries:
        iv = e.intervention if isinstance(e, BoundIntervention) else e
        slot = e.source_slot if isinstance(e, BoundIntervention) else iv.source
        if iv.needs_source and slot is not None:
            coords = wanted.setdefault(slot, [])
            if not any(c is iv.source_coordinate for c in coords):
                coords.append(iv.source_coordinate)
    cached: list[Activations] = []
    for slot, source in enumerate(sources):
        if isinstance(source, Activations) or slot not in wanted:
            cached.append(source if isinstance(source, Activations) else Activations({}))
            continue
        cached.append(model.collect(source, wanted[slot], detach=True))  # type: ignore[arg-type]
    return cached
