"""Digit sum on a Hugging Face causal LM (Llama or GPT-2 architecture, trained from scratch),
with the causal variables at token positions of left-padded, mixed-length batches.

``x, y, z -> S = x + y -> O = S + z``; row ``i`` is ``[pad * (max_pad - f), x, y, filler * f, z]``
with ``f = (x + 2 y) mod (max_pad + 1)`` filler tokens, left-padded: a batch mixes lengths and the
``y`` token sits at a different absolute position in different rows. The sum is read from the LM
head at the last token (its first ``3 * max_digit + 1`` vocabulary entries are the classes).
Positions are `iit.transformers.Tokens` (counted over real tokens), resolved per row
from each batch's attention mask; ``position_ids`` count real tokens only.

Alignments (``S`` where ``y`` is read, ``z`` where it is read):

* ``default``: ``S`` -> block 0 output at the ``y`` token (``Tokens.at(1)``), dims ``[0, d/2)``;
  ``z`` -> block 0 output at the ``z`` token (``Tokens.last()``), dims ``[0, d/2)``;
* ``heads``: ``S`` -> attention heads ``(0, 1)`` of block 0 at the ``y`` token;
* ``S_at_x``: ``S`` at the ``x`` token instead (a wrong hypothesis: ``x`` cannot see ``y``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from causal_models import CausalModel, standard
from iit.errors import ArgumentError
from iit.interventionable import Interventionable
from iit.training import IITTask
from iit.transformers import Tokens, TransformerCoordinate, TransformerInterventionable
from iit.transformers.positions import position_ids_from_mask

__all__ = ["TokenDigitSumLM"]


class TokenDigitSumLM(IITTask):
    """Digit sum on a small causal LM built from a config (no download).

    Args:
        family: ``"llama"`` or ``"gpt2"``.
        max_digit: digits are ``0..max_digit``.
        d_model, n_layers, n_heads: the model's size (Llama uses ``n_heads // 2`` key-value heads).
        max_pad: rows get 0..max_pad filler tokens (and ``max_pad - f`` left-padding tokens).
        gradient_checkpointing: build the model with Hugging Face gradient checkpointing on.

    Raises:
        ArgumentError: an unknown family or ``d_model`` not divisible by ``n_heads``.
    """

    name = "token_digit_sum_lm"

    def __init__(
        self,
        family: Literal["llama", "gpt2"] = "llama",
        max_digit: int = 9,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        max_pad: int = 2,
        gradient_checkpointing: bool = False,
    ) -> None:
        if family not in ("llama", "gpt2"):
            raise ArgumentError(f"family must be 'llama' or 'gpt2', got {family!r}")
        if d_model % n_heads:
            raise ArgumentError(f"d_model {d_model} must be divisible by n_heads {n_heads}")
        self.family, self.max_digit, self.d_model = family, max_digit, d_model
        self.n_layers, self.n_heads, self.max_pad = n_layers, n_heads, max_pad
        self.gradient_checkpointing = gradient_checkpointing
        self.n_classes = 3 * max_digit + 1
        self.filler_id, self.pad_id = max_digit + 1, max_digit + 2
        self.vocab = max(self.n_classes, self.pad_id + 1)

    def causal_model(self) -> CausalModel:
        return standard.digit_sum(self.max_digit)

    def build_network(self) -> nn.Module:
        import transformers

        if self.family == "llama":
            config = transformers.LlamaConfig(
                vocab_size=self.vocab, hidden_size=self.d_model, intermediate_size=2 * self.d_model,
                num_hidden_layers=self.n_layers, num_attention_heads=self.n_heads,
                num_key_value_heads=max(1, self.n_heads // 2), max_position_embeddings=16,
                pad_token_id=self.pad_id, bos_token_id=None, eos_token_id=None, tie_word_embeddings=False,
            )
            return self._checkpointed(transformers.LlamaForCausalLM(config))
        config = transformers.GPT2Config(
            vocab_size=self.vocab, n_embd=self.d_model, n_layer=self.n_layers, n_head=self.n_heads,
            n_positions=16, pad_token_id=self.pad_id, bos_token_id=None, eos_token_id=None,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )
        return self._checkpointed(transformers.GPT2LMHeadModel(config))

    def _checkpointed(self, model: nn.Module) -> nn.Module:
        if self.gradient_checkpointing:
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model

    def wrap_network(self, network: nn.Module) -> Interventionable:
        return TransformerInterventionable(network)

    def alignments(self) -> Mapping[str, Mapping[str, Any]]:
        half = (0, self.d_model // 2)
        at = lambda i, **kw: TransformerCoordinate(0, "block_output", position=Tokens.at(i), **kw)  # noqa: E731
        return {
            "default": {"S": at(1, dims=half), "z": at(-1, dims=half)},
            "heads": {"S": TransformerCoordinate(0, "head_attention_output", position=Tokens.at(1), head=(0, 1)),
                      "z": at(-1, dims=half)},
            "S_at_x": {"S": at(0, dims=half), "z": at(-1, dims=half)},
        }

    def unaligned_coordinates(self) -> list[TransformerCoordinate]:
        """The other half of block 0's output at the ``y`` token."""
        return [TransformerCoordinate(0, "block_output", position=Tokens.at(1), dims=(self.d_model // 2, self.d_model))]

    def fillers(self, values: Mapping[str, Tensor]) -> Tensor:
        """Filler tokens between ``y`` and ``z`` per row, ``[batch]`` in ``0..max_pad``."""
        return (values["x"] + 2 * values["y"]) % (self.max_pad + 1)

    def encode_inputs(self, values: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{"input_ids", "attention_mask", "position_ids"}``, each ``[batch, 3 + max_pad]``:
        row ``i`` is ``[pad * (max_pad - f_i), x, y, filler * f_i, z]``."""
        x, y, z = (values[k].long() for k in ("x", "y", "z"))
        length = 3 + self.max_pad
        cols = torch.arange(length, device=x.device)[None, :]  # [1, L]
        rel = cols - (self.max_pad - self.fillers(values).long())[:, None]  # index among real tokens
        ids = torch.where(rel >= 2, self.filler_id, self.pad_id)
        ids = torch.where(cols == length - 1, z[:, None], ids)
        ids = torch.where(rel == 1, y[:, None], ids)
        ids = torch.where(rel == 0, x[:, None], ids)
        mask = (rel >= 0).long()
        return {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids_from_mask(mask)}

    def decode_output(self, output: Any) -> Tensor:
        """Class logits ``[batch, 3 * max_digit + 1]`` at the last token."""
        return output.logits[:, -1, : self.n_classes]
