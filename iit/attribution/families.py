"""Per-family module names of transformer blocks, for ALTI and attention methods.

One declarative row per architecture (``config.model_type``); paths are relative to a block of
the layer list. Add a family by adding a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from iit.attribution._layers import find_module
from iit.errors import CoordinateError, did_you_mean

__all__ = ["FAMILIES", "Family", "TransformerLayout", "transformer_layout"]


@dataclass(frozen=True)
class Family:
    """Module names of one transformer family.

    Attributes:
        layers: suffix of the ``ModuleList`` of blocks (matched against ``named_modules()``).
        attention: the module that calls the attention function (relative to a block).
        out_proj: the attention output projection (``nn.Linear`` or HF ``Conv1D``).
        norm: post-LN: the LayerNorm after the attention residual (its input is ``u``, its
            output the resultant); pre-LN: the LayerNorm whose *input* is the residual stream
            after attention (the resultant).
        pre_ln: whether the block is pre-LN (GPT-2) or post-LN (BERT).
        position: default output position to explain (0 = [CLS], -1 = last token).
    """

    layers: str
    attention: str
    out_proj: str
    norm: str
    pre_ln: bool
    position: int


_BERT = Family(
    layers="encoder.layer",
    attention="attention.self",
    out_proj="attention.output.dense",
    norm="attention.output.LayerNorm",
    pre_ln=False,
    position=0,
)

FAMILIES: dict[str, Family] = {
    "bert": _BERT,
    "roberta": _BERT,
    "distilbert": Family(
        layers="transformer.layer",
        attention="attention",
        out_proj="attention.out_lin",
        norm="sa_layer_norm",
        pre_ln=False,
        position=0,
    ),
    "gpt2": Family(
        layers="h", attention="attn", out_proj="attn.c_proj", norm="ln_2", pre_ln=True, position=-1
    ),
}


@dataclass(frozen=True)
class BlockModules:
    """The resolved modules of one block."""

    block: nn.Module
    attention: nn.Module
    out_proj: nn.Module
    norm: nn.LayerNorm


@dataclass(frozen=True)
class TransformerLayout:
    """A model's blocks resolved through its :class:`Family`."""

    family: Family
    layers_path: str
    blocks: tuple[BlockModules, ...]
    norm_kind: Literal["post", "pre"]


def transformer_layout(model: nn.Module) -> TransformerLayout:
    """Resolve ``model``'s transformer blocks from its ``config.model_type``.

    Raises:
        CoordinateError: no config / unknown family (lists the supported families and the
            closest match), or the family's module names are missing from the model.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in FAMILIES:
        raise CoordinateError(
            f"no module-name table for model_type {model_type!r}{did_you_mean(model_type, FAMILIES)} supported: "
            f"{sorted(FAMILIES)}; add a Family row to iit.attribution.families.FAMILIES"
        )
    family = FAMILIES[model_type]
    names = [
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.ModuleList) and (n == family.layers or n.endswith("." + family.layers))
    ]
    if len(names) != 1:
        raise CoordinateError(
            f"expected exactly one layer list named *{family.layers!r} in "
            f"{type(model).__name__}, found {names}"
        )
    layers = find_module(model, names[0])
    blocks = []
    for i, block in enumerate(layers):
        norm = find_module(block, family.norm)
        if not isinstance(norm, nn.LayerNorm):
            raise CoordinateError(
                f"{names[0]}.{i}.{family.norm} is a {type(norm).__name__}, expected nn.LayerNorm"
            )
        blocks.append(
            BlockModules(
                block=block,
                attention=find_module(block, family.attention),
                out_proj=find_module(block, family.out_proj),
                norm=norm,
            )
        )
    return TransformerLayout(family, names[0], tuple(blocks), "pre" if family.pre_ln else "post")
