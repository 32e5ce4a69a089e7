"""A reversible probe on Hugging Face attention: read (and optionally detach) attention probs.

:func:`attention_probe` registers an eager attention function ``"iit_probe"`` through
``transformers.AttentionInterface`` (and the eager mask through ``AttentionMaskInterface``) and,
for the duration of the block only, points every config of the model at it. Inside, each
attention call passes its probabilities ``[batch, heads, q, k]`` and values
``[batch, heads, k, d_head]`` to the active callbacks, which may record them and return
replacement probabilities (e.g. detached ones for conservative LRP). The configs are restored
in ``finally``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from iit.errors import CoordinateError
from iit.precision import upcast

PROBE_NAME = "iit_probe"
ProbsCallback = Callable[[nn.Module, Tensor, Tensor], Tensor]

_ACTIVE: list[ProbsCallback] = []
_REGISTERED = [False]

__all__ = ["PROBE_NAME", "ProbsCallback", "attention_probe", "model_configs"]


def _probe_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """Eager attention (query/key/value ``[batch, heads, seq, d_head]``) with callbacks."""
    if key.shape[1] != query.shape[1]:  # grouped-query attention: share kv heads
        groups = query.shape[1] // key.shape[1]
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling  # [B, H, Q, K]
    if attention_mask is not None:
        mask = attention_mask[..., : key.shape[-2]]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask
    probs = torch.softmax(upcast(scores), dim=-1).to(value.dtype)  # float64 stays float64
    for callback in list(_ACTIVE):
        probs = callback(module, probs, value)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()  # [B, Q, H, D]
    return output, probs


def _register() -> None:
    if _REGISTERED[0]:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(PROBE_NAME, _probe_attention)
    AttentionMaskInterface.register(PROBE_NAME, eager_mask)
    _REGISTERED[0] = True


def model_configs(model: nn.Module) -> list[Any]:
    """Every distinct Hugging Face config object held by ``model`` or its submodules."""
    try:
        from transformers import PretrainedConfig
    except ImportError:  # pragma: no cover - transformers is a dependency
        return []
    configs: list[Any] = []
    for module in model.modules():
        config = getattr(module, "config", None)
        if isinstance(config, PretrainedConfig) and all(config is not c for c in configs):
            configs.append(config)
    return configs


@contextmanager
def attention_probe(model: nn.Module, callback: ProbsCallback) -> Iterator[None]:
    """Route ``model``'s attention through the probe and call ``callback`` on each layer.

    ``callback(module, probs [B, H, Q, K], value [B, H, K, D]) -> probs`` runs inside every
    attention call in the block; return ``probs`` unchanged to only observe.

    Raises:
        CoordinateError: ``model`` holds no Hugging Face config (its attention cannot be routed;
            use the functional forms with attention tensors you computed yourself).
    """
    configs = model_configs(model)
    if not configs:
        raise CoordinateError(
            f"{type(model).__name__} has no Hugging Face config, so its attention cannot be "
            "probed; supported: models using transformers.AttentionInterface (BERT, RoBERTa, "
            "DistilBERT, GPT-2, ...), or call the functional forms with attention tensors"
        )
    _register()
    saved = [(c, c._attn_implementation_internal) for c in configs]
    _ACTIVE.append(callback)
    try:
        for config, _ in saved:
            config._attn_implementation_internal = PROBE_NAME
        yield
    finally:
        _ACTIVE.remove(callback)
        for config, previous in saved:
            config._attn_implementation_internal = previous
