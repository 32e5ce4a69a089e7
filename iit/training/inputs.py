"""Setup-time check of a task's encoded inputs against what the network's first layer takes.

A wrong dtype (``int64`` tokens into ``nn.Linear``, floats into ``nn.Embedding``) or width would
otherwise fail deep inside the first training step with a raw PyTorch message;
`check_encoded_inputs` raises an error that names the task method and the expected
dtype / shape before any step runs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from iit.errors import IITError
from iit.hooks import Inputs, call_model, describe_structure
from iit.interventionable import Interventionable

__all__ = ["check_encoded_inputs", "describe_inputs"]


class _FirstLayer(Exception):
    """Raised from the first leaf module's pre-hook to stop the probe forward."""

    def __init__(self, name: str, module: nn.Module, args: tuple) -> None:
        super().__init__(name)
        self.name, self.module, self.args = name, module, args


def describe_inputs(inputs: Inputs) -> str:
    """``int64 [4, 3]`` for a tensor; one entry per element / key for tuples and mappings
    (`iit.hooks.describe_structure` with dtypes).

    Args:
        inputs: model inputs (a tensor, a tuple / list, or a dict of keyword arguments).

    Raises:
        RecursionError: a self-containing structure.

    Examples:
        >>> import torch
        >>> describe_inputs({"input_ids": torch.zeros(4, 3, dtype=torch.long), "mask": torch.ones(4, 3)})
        "{'input_ids': int64 [4, 3], 'mask': float32 [4, 3]}"
    """
    return describe_structure(inputs, lambda t: f"{str(t.dtype).removeprefix('torch.')} {list(t.shape)}")


def _expectation(module: nn.Module, x: Tensor) -> str | None:
    """What ``module`` expects of its first argument, or ``None`` when ``x`` fits it."""
    if isinstance(module, nn.Embedding):
        if x.dtype not in (torch.int64, torch.int32):
            return f"integer token ids (int64 [..., n]) below {module.num_embeddings}"
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= module.num_embeddings):
            return f"token ids in [0, {module.num_embeddings}), got values in [{int(x.min())}, {int(x.max())}]"
        return None
    weight = getattr(module, "weight", None)
    if isinstance(module, nn.Linear):
        wanted, width = weight.dtype, module.in_features
        if x.dtype != wanted or x.shape[-1:] != (width,):
            return f"{str(wanted).removeprefix('torch.')} [..., {width}]"
        return None
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        wanted, channels = weight.dtype, module.in_channels
        dims = 1 + {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(module)]
        if x.dtype != wanted or x.dim() not in (dims, dims + 1) or x.shape[-dims] != channels:
            return f"{str(wanted).removeprefix('torch.')} [batch, {channels}, ...] ({dims + 1}-d)"
        return None
    if isinstance(weight, Tensor) and weight.is_floating_point() and not x.is_floating_point():
        return f"floating-point input ({str(weight.dtype).removeprefix('torch.')})"
    return None


def check_encoded_inputs(network: nn.Module, inputs: Inputs, source: str) -> None:
    """Run ``network`` on ``inputs`` (no gradients) and raise a clear error when they do not fit.

    The first leaf module the forward reaches is checked against its kind (``nn.Embedding``:
    integer ids in range; ``nn.Linear``: its weight dtype and ``in_features``; convolutions:
    dtype and channels; other weighted modules: floating point). If the first layer accepts the
    inputs but the forward still fails, that error is re-raised with ``source`` and the inputs'
    dtypes and shapes.

    Args:
        network: the (wrapped or plain) network.
        inputs: what ``source`` produced, e.g. ``task.encode_inputs(example)``.
        source: the producing method, named in errors (``"DigitSumMLP.encode_inputs"``).

    Raises:
        IITError: naming ``source``, what it returned and what the network expects.
    """
    inner = network.model if isinstance(network, Interventionable) else network
    names = {id(m): n for n, m in inner.named_modules()}
    handles = []

    def pre_hook(module: nn.Module, args: tuple) -> None:
        raise _FirstLayer(names.get(id(module), type(module).__name__), module, args)

    for module in network.modules():
        if not any(True for _ in module.children()) and any(True for _ in module.parameters(recurse=False)):
            handles.append(module.register_forward_pre_hook(pre_hook))
    try:
        with torch.no_grad():
            call_model(network, inputs)
    except _FirstLayer as first:
        arg: Any = first.args[0] if first.args else None
        if isinstance(arg, Tensor):
            expected = _expectation(first.module, arg)
            if expected is not None:
                raise IITError(
                    f"{source} returned {describe_inputs(inputs)}, but the network's first layer "
                    f"{first.name!r} ({first.module}) received {describe_inputs(arg)} and expects {expected}; "
                    f"change {source} to return that"
                ) from None
    except (RuntimeError, TypeError, ValueError, IndexError) as error:
        raise IITError(
            f"the network fails on what {source} returned ({describe_inputs(inputs)}): {error}"
        ) from error
    finally:
        for handle in handles:
            handle.remove()
    # the first layer fits: the whole forward must run too
    try:
        with torch.no_grad():
            call_model(network, inputs)
    except (RuntimeError, TypeError, ValueError, IndexError) as error:
        raise IITError(
            f"the network fails on what {source} returned ({describe_inputs(inputs)}): {error}"
        ) from error
