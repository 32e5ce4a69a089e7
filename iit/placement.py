"""Models placed by accelerate (``dispatch_model``, ``device_map=...``, cpu / disk offload).

accelerate keeps offloaded weights on the ``meta`` device between calls and loads them on the
module's execution device only while the module's own ``forward`` runs. Code that reads a
module's weights outside that window (an LRP rule in a forward hook, ALTI's decomposition after
the forward) wraps the read in `materialized`. Values written into a hidden state are moved
to the device of that hidden state by the interventions themselves (see
`iit.interventions`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import Tensor, nn

__all__ = ["is_offloaded", "materialized", "dequantized_weight", "dequantized_twin"]


def is_offloaded(module: nn.Module) -> bool:
    """Whether ``module`` has weights offloaded by an accelerate hook (cpu or disk offload)."""
    if not hasattr(module, "_hf_hook"):
        return False
    from accelerate.utils import has_offloaded_params

    return bool(has_offloaded_params(module))


@contextlib.contextmanager
def materialized(module: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, ``module``'s own (non-recursive) offloaded weights are real tensors on
    its execution device; they return to the offload store (``meta``) on exit, also after an
    exception. A no-op for modules that are not offloaded.

    Args:
        module: a module, possibly offloaded by accelerate (its weights on ``meta``).

    Yields:
        ``module``, its own weights real (``[out, in]`` for a linear layer) inside the block.

    Examples:
        On a module that is not offloaded the block changes nothing:

        >>> import torch
        >>> layer = torch.nn.Linear(3, 2)
        >>> with materialized(layer) as dense:
        ...     print(dense is layer, dense.weight.device.type)
        True cpu
    """
    if not is_offloaded(module):
        yield module
        return
    from accelerate.utils import align_module_device

    with align_module_device(module):
        yield module


def dequantized_weight(weight: Tensor) -> Tensor | None:
    """The float weight behind a quantized one (bitsandbytes int8 / 4-bit, quanto and torchao
    tensor subclasses), ``[out, in]`` or the packed shape; ``None`` for a plain float weight."""
    kind = type(weight).__name__
    if kind in ("Int8Params", "Params4bit"):
        import bitsandbytes as bnb

        if kind == "Int8Params":  # LLM.int8: row-wise absmax scales
            return bnb.functional.int8_vectorwise_dequant(weight.data, weight.SCB)
        return bnb.functional.dequantize_4bit(weight.data, weight.quant_state)
    if type(weight.data) not in (Tensor, nn.Parameter):  # quanto / torchao tensor subclasses
        return weight.dequantize()
    return None


def dequantized_twin(model: nn.Module, quantized: nn.Module) -> tuple[nn.Module, int]:
    """A float copy of ``model`` carrying ``quantized``'s dequantized weights (the reference a
    quantized model's interventions are compared with), and how many weights were replaced.

    Args:
        model: the float model ``quantized`` was made from (same module names).
        quantized: its quantized copy.
    """
    import copy

    twin = copy.deepcopy(model)
    table = dict(twin.named_modules())
    replaced = 0
    for name, module in quantized.named_modules():
        weight = getattr(module, "weight", None)
        value = dequantized_weight(weight) if isinstance(weight, Tensor) else None
        if value is not None:
            target = table[name].weight
            target.data = value.to(target.device, target.dtype).reshape(target.shape)
            replaced += 1
    return twin, replaced
