"""Models placed by accelerate (``dispatch_model``, ``device_map=...``, cpu / disk offload).

accelerate keeps offloaded weights on the ``meta`` device between calls and loads them on the
module's execution device only while the module's own ``forward`` runs. Code that reads a
module's weights outside that window (an LRP rule in a forward hook, ALTI's decomposition after
the forward) wraps the read in :func:`materialized`. Values written into a hidden state are moved
to the device of that hidden state by the interventions themselves (see
:mod:`iit.interventions`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["is_offloaded", "materialized"]


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

    Example:
        >>> with materialized(layer.dense) as dense:
        ...     w = dense.weight  # [out, in], never meta here
    """
    if not is_offloaded(module):
        yield module
        return
    from accelerate.utils import align_module_device

    with align_module_device(module):
        yield module
