"""Attention probabilities as an addressable hidden state.

With SDPA / flash attention the probabilities never exist as a tensor, so no hook can see them.
:func:`attention_probs_hook_points` is a reversible context manager that, for one call,

1. registers (once, process-wide) an attention function named ``"iit_eager"`` with
   ``transformers.AttentionInterface`` (and the eager mask builder with
   ``AttentionMaskInterface``): eager attention that passes the probabilities
   ``[batch, heads, seq_q, seq_k]`` through a hook-point module before multiplying the values,
2. adds an :class:`AttentionProbs` (``nn.Identity``) child named ``iit_attention_probs`` to
   every attention module, and switches ``config._attn_implementation`` to ``"iit_eager"``,

and undoes both in ``finally``. Results equal the model's own SDPA / eager attention up to
float rounding (tested). Grouped-query attention is handled by repeating key-value heads.
The softmax runs in float32 for float16 / bfloat16 models (as Hugging Face eager attention does)
and in the model's own dtype otherwise, so a float64 model gets float64-accurate probabilities.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.masking_utils import (
    ALL_MASK_ATTENTION_FUNCTIONS,
    AttentionMaskInterface,
    eager_mask,
)

from iit.precision import compute_dtype

__all__ = ["AttentionProbs", "ATTENTION_NAME", "HOOK_POINT", "attention_probs_hook_points"]

ATTENTION_NAME = "iit_eager"
HOOK_POINT = "iit_attention_probs"


class AttentionProbs(nn.Identity):
    """Hook point: its output is the attention probabilities ``[batch, heads, seq_q, seq_k]``."""


def _iit_eager_attention(
    module: nn.Module,
    query: Tensor,  # [batch, heads, seq_q, d_head]
    key: Tensor,  # [batch, kv_heads, seq_k, d_head]
    value: Tensor,  # [batch, kv_heads, seq_k, d_head]
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **_: object,
) -> tuple[Tensor, Tensor]:
    """Eager attention with the probabilities routed through ``module.iit_attention_probs``.
    Returns ``([batch, seq_q, heads, d_head], [batch, heads, seq_q, seq_k])``."""
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:
        key = key.repeat_interleave(n_rep, dim=1)
        value = value.repeat_interleave(n_rep, dim=1)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask[..., : key.shape[-2]]
    # Half types: softmax in float32 (as HF eager attention does); float64 stays float64.
    probs = torch.softmax(scores, dim=-1, dtype=compute_dtype(scores.dtype)).to(query.dtype)
    hook = getattr(module, HOOK_POINT, None)
    if hook is not None:
        probs = hook(probs)
    dropped = nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(dropped, value).transpose(1, 2).contiguous()
    return out, probs


_registered = False


def _register() -> None:
    global _registered
    if not _registered:
        AttentionInterface.register(ATTENTION_NAME, _iit_eager_attention)
        AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)
        _registered = True
        assert ATTENTION_NAME in ALL_MASK_ATTENTION_FUNCTIONS


@contextlib.contextmanager
def attention_probs_hook_points(
    model: nn.Module, attention_modules: Sequence[nn.Module]
) -> Iterator[None]:
    """Make ``<attention module>.iit_attention_probs`` exist and carry the probabilities for the
    duration of the ``with`` block; restore the model afterwards (also after an exception).

    Args:
        model: the Hugging Face model (its ``config`` is switched).
        attention_modules: the modules that call the attention function, one per layer.
    """
    _register()
    configs = [c for c in {id(m.config): m.config for m in model.modules() if hasattr(m, "config")}.values()]
    previous = [c._attn_implementation for c in configs]
    added: list[nn.Module] = []
    try:
        for config in configs:
            config._attn_implementation = ATTENTION_NAME
        for module in attention_modules:
            if not hasattr(module, HOOK_POINT):
                module.add_module(HOOK_POINT, AttentionProbs())
                added.append(module)
        yield
    finally:
        for module in added:
            delattr(module, HOOK_POINT)
        for config, impl in zip(configs, previous):
            config._attn_implementation = impl
