"""Elementwise transforms of parameters (``|W|``, ``-|W| log |W|``), cached by their owner.

The op-level max-product and the entropy semiring multiply states by ``|W|`` (and the entropy
semiring also by ``-|W| log |W|``) for every weight matrix a matmul meets. With few tokens a
weight matrix is larger than the activations it meets, so recomputing these transforms on every
call would cost more than the matrix products themselves. They depend on the parameter only, so
a `WeightCache` keeps them: per parameter (weakly referenced: an entry goes when its
parameter does), per view of it, and per version (an in-place update such as an optimizer step,
or ``copy_`` under ``no_grad``, invalidates the entry). PyTorch does not version writes through
``param.data``: after such a write, call `WeightCache.clear`.

There is no process-wide cache. A cache belongs to the object that uses it (a
`SemiringBackprop` holds one; `semiring_backward`
without one makes a cache for the call and drops it after) and is released with it. It holds at
most ``limit_bytes``; past that, transforms are computed per request. While a cache is active
(`use_weight_cache`, scoped to the current context) `cached_transform` reads it;
outside, it computes the transform.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import weakref
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from iit.errors import ArgumentError

__all__ = [
    "DEFAULT_LIMIT_BYTES", "WeightCache", "cached_transform", "intercept_transforms",
    "use_weight_cache",
]  # fmt: skip

#: default upper bound of a cache's bytes (a BERT-base's weight matrices are about 340 MiB)
DEFAULT_LIMIT_BYTES = 512 << 20

_Key = tuple[object, ...]
_active: contextvars.ContextVar[WeightCache | None] = contextvars.ContextVar(
    "iit_semiring_weight_cache", default=None
)
#: per thread, while set (`intercept_transforms`): answers every request
_local = threading.local()


class WeightCache:
    """Transforms of parameters, keyed by (transform, parameter, view, version).

    Args:
        limit_bytes: most bytes held; a transform that would pass it is computed, not kept.

    Raises:
        ArgumentError: a negative ``limit_bytes``.
    """

    def __init__(self, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> None:
        if limit_bytes < 0:
            raise ArgumentError(f"limit_bytes must be >= 0, got {limit_bytes}")
        self.limit_bytes = limit_bytes
        self._entries: dict[_Key, tuple[weakref.ref, int, Tensor]] = {}
        self._keys_of: dict[int, set[_Key]] = {}

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return sum(t.nbytes for _, _, t in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every entry (needed only after writing a parameter through ``.data``)."""
        self._entries.clear()
        self._keys_of.clear()

    def get(self, name: str, w: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        """``fn(w)``, kept when ``w`` is an ``nn.Parameter`` or a view of one (``W.t()``).

        Args:
            name: what ``fn`` computes (part of the key, e.g. ``"abs"``).
            w: the weight tensor, any shape.
            fn: an elementwise transform, ``[shape] -> [shape]``.
        """
        owner = w._base if w._base is not None else w
        if not isinstance(owner, nn.Parameter):
            return fn(w)
        key = (name, id(owner), w.storage_offset(), tuple(w.shape), w.stride(), w.dtype, w.device)
        hit = self._entries.get(key)
        if hit is not None and hit[0]() is owner and hit[1] == owner._version:
            return hit[2]
        with torch.no_grad():  # a graph would keep the parameter alive (and is never needed)
            out = fn(w)
        if hit is not None or self.nbytes + out.nbytes <= self.limit_bytes:
            owner_id = id(owner)
            entries, keys_of = self._entries, self._keys_of  # (the callback must not hold self)

            def forget(_ref: weakref.ref, i: int = owner_id) -> None:
                for k in keys_of.pop(i, set()):
                    entries.pop(k, None)

            self._entries[key] = (weakref.ref(owner, forget), owner._version, out)
            self._keys_of.setdefault(owner_id, set()).add(key)
        return out


@contextlib.contextmanager
def use_weight_cache(cache: WeightCache) -> Iterator[WeightCache]:
    """While active (in this context), `cached_transform` keeps transforms in ``cache``."""
    token = _active.set(cache)
    try:
        yield cache
    finally:
        _active.reset(token)


def cached_transform(name: str, w: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """``fn(w)`` through the active `WeightCache` (computed when none is active).

    Returns:
        ``fn(w)``, shaped like ``w``.
    """
    handlers = getattr(_local, "handlers", None)
    if handlers:
        return handlers[-1](name, w, fn)
    cache = _active.get()
    return fn(w) if cache is None else cache.get(name, w, fn)


@contextlib.contextmanager
def intercept_transforms(
    handler: Callable[[str, Tensor, Callable[[Tensor], Tensor]], Tensor],
) -> Iterator[None]:
    """While active, every `cached_transform` call in this thread returns
    ``handler(name, w, fn)`` instead. The compiled walk (`compiled_walk`) uses it to make
    the transforms of parameters inputs of the program it records."""
    if not hasattr(_local, "handlers"):
        _local.handlers = []
    _local.handlers.append(handler)
    try:
        yield
    finally:
        _local.handlers.pop()
