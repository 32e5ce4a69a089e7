"""Attention probabilities as an addressable hidden state.

With SDPA / flash attention the probabilities never exist as a tensor, so no hook can see them.
`attention_probs_hook_points` is a context manager that makes them exist for the calls made
inside it, and only for those (call-scoped, like the hooks of `iit._dispatch`):

* While a model is used by at least one such block (reference-counted per model, under a lock;
  the first user switches, the last one restores), its ``config._attn_implementation`` names a
  *dispatching* attention function (``"iit_eager_<n>"``, one per original implementation,
  registered with ``transformers.AttentionInterface``, and a dispatching mask builder with
  ``AttentionMaskInterface``), and every attention module has an `AttentionProbs`
  (``nn.Identity``) child named ``iit_attention_probs``.
* The dispatcher runs eager attention that passes the probabilities ``[batch, heads, seq_q,
  seq_k]`` through that hook point only when the current context (a ``ContextVar`` set by the
  block) asks for them, or when backward recomputes a checkpointed region whose first pass did.
  Every other call (other threads, asyncio tasks, plain calls) gets the model's original
  attention function and mask builder, unchanged: bit-identical to the unwrapped model.

Results of the probability path equal the model's own SDPA / eager attention up to float
rounding (tested). Grouped-query attention is handled by repeating key-value heads.
The softmax runs in float32 for float16 / bfloat16 models (as Hugging Face eager attention does)
and in the model's own dtype otherwise, so a float64 model gets float64-accurate probabilities.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.masking_utils import (
    ALL_MASK_ATTENTION_FUNCTIONS,
    AttentionMaskInterface,
    eager_mask,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from iit._dispatch import forward_region, recompute_region
from iit.errors import ArgumentError
from iit.precision import compute_dtype

__all__ = ["AttentionProbs", "ATTENTION_NAME", "HOOK_POINT", "attention_probs_hook_points"]

ATTENTION_NAME = "iit_eager"
HOOK_POINT = "iit_attention_probs"


class AttentionProbs(nn.Identity):
    """Hook point: its output is the attention probabilities ``[batch, heads, seq_q, seq_k]``.

    Added to each attention module for one call by `attention_probs_hook_points`; like
    ``nn.Identity`` it takes (and ignores) any constructor arguments, so constructing one raises
    nothing.
    """


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



# --------------------------------------------------------------------------- dispatching functions
# Whether the current call wants the probability path (set by attention_probs_hook_points).
_WANTS_PROBS: ContextVar[bool] = ContextVar("iit_wants_attention_probs", default=False)
_lock = threading.Lock()
# checkpointed regions whose first pass took the probability path (their recomputation must too)
_probs_regions: weakref.WeakSet = weakref.WeakSet()
_dispatch_names: dict[str, str] = {}  # original implementation -> dispatching name
_module_model: dict[int, int] = {}  # id(attention module) -> id(model), while switched
_region_holds: set[tuple[int, int]] = set()  # (id(region), id(model)) holding a switch
_dead: list[tuple[int, int]] = []  # region holds whose release is pending


def _probability_path(module: nn.Module) -> bool:
    """Whether this attention call of ``module`` takes the probability path. A first pass inside
    a checkpointed region records the region and keeps the model's switch (hook points included)
    until the region is freed, so that its recomputation in backward takes the same path."""
    if torch._C._current_graph_task_id() != -1:  # inside backward: a checkpoint recomputation?
        region = recompute_region()
        if region is not None:
            with _lock:
                return region in _probs_regions
    if not _WANTS_PROBS.get():
        return False
    region = forward_region(grad_at_start=True)
    if region is not None:
        with _lock:
            model_id = _module_model.get(id(module))
            key = (id(region), model_id)
            if model_id is None or key in _region_holds:
                return True
            _probs_regions.add(region)
            _region_holds.add(key)
            _switches[model_id].users += 1
        weakref.finalize(region, _region_died, key)
    _drain()
    return True


def _region_died(key: tuple[int, int]) -> None:
    # finalizers run at arbitrary times (maybe while this thread holds the lock): defer then
    _dead.append(key)
    _drain()


def _drain() -> None:
    while _dead and _lock.acquire(blocking=False):
        try:
            while _dead:
                key = _dead.pop()
                _region_holds.discard(key)
                _release_locked(key[1])
        finally:
            _lock.release()


def _original_attention(original: str, module: nn.Module) -> Callable[..., Any]:
    if original == "eager":  # Hugging Face models use their modeling file's eager function
        fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
        if fn is None:
            raise ArgumentError(
                f"{type(module).__name__}: its modeling module has no eager_attention_forward; "
                "attention_probs coordinates need a Hugging Face attention module"
            )
        return fn
    return ALL_ATTENTION_FUNCTIONS.get_interface(original, _iit_eager_attention)


def _make_dispatchers(original: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    def attention(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if _probability_path(module):
            return _iit_eager_attention(module, *args, **kwargs)
        return _original_attention(original, module)(module, *args, **kwargs)

    original_mask = ALL_MASK_ATTENTION_FUNCTIONS[original]

    def mask(*args: Any, **kwargs: Any) -> Any:
        # built once per call, before the layers (never inside a checkpointed region)
        if _WANTS_PROBS.get():
            return eager_mask(*args, **kwargs)
        return original_mask(*args, **kwargs)

    return attention, mask


def _dispatch_name(original: str) -> str:
    """The registered dispatching implementation for ``original`` (called under ``_lock``)."""
    name = _dispatch_names.get(original)
    if name is None:
        if original not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
            raise ArgumentError(
                f"attention_probs coordinates: unsupported attention implementation {original!r}; "
                f"valid: {sorted(ALL_MASK_ATTENTION_FUNCTIONS._global_mapping)}"
            )
        name = f"{ATTENTION_NAME}_{len(_dispatch_names)}"
        attention, mask = _make_dispatchers(original)
        AttentionInterface.register(name, attention)
        AttentionMaskInterface.register(name, mask)
        _dispatch_names[original] = name
    return name


@dataclass
class _Switch:
    users: int
    configs: list[Any]
    previous: list[str]
    modules: list[nn.Module]
    added: list[nn.Module] = field(default_factory=list)


_switches: dict[int, _Switch] = {}  # id(model) -> its switch while referenced


def _acquire(model: nn.Module, attention_modules: Sequence[nn.Module]) -> None:
    with _lock:
        switch = _switches.get(id(model))
        if switch is not None:
            switch.users += 1
            return
        configs = list({id(m.config): m.config for m in model.modules() if hasattr(m, "config")}.values())
        previous = [c._attn_implementation for c in configs]
        names = [_dispatch_name(p) for p in previous]  # may raise: nothing changed yet
        switch = _Switch(1, configs, previous, list(attention_modules))
        for config, name in zip(configs, names):
            config._attn_implementation = name
        for module in attention_modules:
            _module_model[id(module)] = id(model)
            if not hasattr(module, HOOK_POINT):
                module.add_module(HOOK_POINT, AttentionProbs())
                switch.added.append(module)
        _switches[id(model)] = switch


def _release_locked(model_id: int) -> None:
    switch = _switches[model_id]
    switch.users -= 1
    if switch.users:
        return
    del _switches[model_id]
    for module in switch.modules:
        _module_model.pop(id(module), None)
    for module in switch.added:
        delattr(module, HOOK_POINT)
    for config, impl in zip(switch.configs, switch.previous):
        config._attn_implementation = impl


def _release(model: nn.Module) -> None:
    with _lock:
        _release_locked(id(model))
    _drain()


@contextlib.contextmanager
def attention_probs_hook_points(
    model: nn.Module, attention_modules: Sequence[nn.Module]
) -> Iterator[None]:
    """Make ``<attention module>.iit_attention_probs`` exist and carry the probabilities
    ``[batch, heads, seq_q, seq_k]`` for the calls made inside the ``with`` block (this thread /
    asyncio task only); restore the model when its last user leaves (also after an exception).
    Calls on the same model from other threads meanwhile run its own attention, unchanged.

    Args:
        model: the Hugging Face model (its ``config`` is switched while referenced).
        attention_modules: the modules that call the attention function, one per layer.

    Raises:
        ArgumentError: when the model's attention implementation has no mask builder in
            ``transformers.AttentionMaskInterface``.
    """
    _drain()
    _acquire(model, attention_modules)
    token = _WANTS_PROBS.set(True)
    try:
        yield
    finally:
        _WANTS_PROBS.reset(token)
        _release(model)
