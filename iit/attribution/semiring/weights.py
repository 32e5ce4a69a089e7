"""Elementwise transforms of parameters (``|W|``, ``-|W| log |W|``), cached across calls.

The op-level max-product and the entropy semiring multiply states by ``|W|`` (and the entropy
semiring also by ``-|W| log |W|``) for every weight matrix a matmul meets. With few tokens a
weight matrix is larger than the activations it meets, so recomputing these transforms on every
call would cost more than the matrix products themselves. They depend on the parameter only, so
they are cached: per parameter (weakly referenced: an entry goes when its parameter does), per
view of it, and per version (an in-place update such as an optimizer step, or ``copy_`` under
``no_grad``, invalidates the entry). PyTorch does not version writes through ``param.data``:
after such a write, call :func:`clear_weight_cache`. At most :data:`CACHE_LIMIT_BYTES` are held;
past that, transforms are computed per call.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

__all__ = [
    "CACHE_LIMIT_BYTES", "cached_transform", "clear_weight_cache", "cached_bytes",
    "intercept_transforms",
]  # fmt: skip

#: upper bound of the bytes the cache holds (a BERT-base's weight matrices are about 340 MiB)
CACHE_LIMIT_BYTES = 1 << 30

_Key = tuple[object, ...]
_entries: dict[_Key, tuple[weakref.ref, int, Tensor]] = {}
_keys_of: dict[int, set[_Key]] = {}
#: per thread, while set (:func:`intercept_transforms`): answers every request
_local = threading.local()


def _forget(owner_id: int) -> None:
    for key in _keys_of.pop(owner_id, set()):
        _entries.pop(key, None)


def cached_bytes() -> int:
    """Bytes the cache holds now."""
    return sum(t.nbytes for _, _, t in _entries.values())


def clear_weight_cache() -> None:
    """Drop every cached transform (needed only after writing a parameter through ``.data``)."""
    _entries.clear()
    _keys_of.clear()


def cached_transform(name: str, w: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """``fn(w)``, cached when ``w`` is an ``nn.Parameter`` or a view of one (``W.t()``).

    Args:
        name: what ``fn`` computes (part of the key, e.g. ``"abs"``).
        w: the weight tensor, any shape.
        fn: an elementwise transform, ``[shape] -> [shape]``.

    Returns:
        ``fn(w)``, shaped like ``w``.
    """
    handlers = getattr(_local, "handlers", None)
    if handlers:
        return handlers[-1](name, w, fn)
    owner = w._base if w._base is not None else w
    if not isinstance(owner, nn.Parameter):
        return fn(w)
    key = (name, id(owner), w.storage_offset(), tuple(w.shape), w.stride(), w.dtype, w.device)
    hit = _entries.get(key)
    if hit is not None and hit[0]() is owner and hit[1] == owner._version:
        return hit[2]
    with torch.no_grad():  # a graph would keep the parameter alive (and is never needed)
        out = fn(w)
    if hit is not None or cached_bytes() + out.nbytes <= CACHE_LIMIT_BYTES:
        owner_id = id(owner)
        ref = weakref.ref(owner, lambda _r, i=owner_id: _forget(i))
        _entries[key] = (ref, owner._version, out)
        _keys_of.setdefault(owner_id, set()).add(key)
    return out


@contextlib.contextmanager
def intercept_transforms(
    handler: Callable[[str, Tensor, Callable[[Tensor], Tensor]], Tensor],
) -> Iterator[None]:
    """While active, every :func:`cached_transform` call in this thread returns
    ``handler(name, w, fn)`` instead. The compiled walk (:mod:`.compiled_walk`) uses it to make the transforms of
    parameters inputs of the program it records."""
    if not hasattr(_local, "handlers"):
        _local.handlers = []
    _local.handlers.append(handler)
    try:
        yield
    finally:
        _local.handlers.pop()
