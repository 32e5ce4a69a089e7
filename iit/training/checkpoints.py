"""Reading checkpoints written by a fit: untrusted files, loaded without running any code
stored in them (``torch.load(weights_only=True)``); a damaged, truncated or malicious file gives
one `iit.errors.DamagedFileError` that says it was not loaded."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from iit.errors import DamagedFileError, MissingFileError

__all__ = ["read_checkpoint", "LIGHTNING_CKPT_NAMES"]

# ckpt_path values that name a checkpoint Lightning finds itself (not a file path).
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by ``iit fit`` without running any code stored in it.

    Args:
        path: the ``.ckpt`` file.

    Returns:
        The checkpoint dictionary (with a ``"state_dict"`` entry).

    Raises:
        MissingFileError: ``path`` does not exist.
        DamagedFileError: the file is truncated, not a torch checkpoint, holds objects other
            than tensors and plain containers (a pickle with code: refused, not run), or has no
            ``state_dict``; the original error is chained.
    """
    if not Path(path).is_file():
        raise MissingFileError(f"no checkpoint file {str(path)!r}")
    try:
        # torch's unpickler warns about a refused file before raising: the one-line error below
        # says it all, so its warnings are kept only when the file loads
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        for warning in caught:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    except Exception as err:  # UnpicklingError, RuntimeError (bad zip), EOFError, ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DamagedFileError(
            f"checkpoint {str(path)!r} is damaged or unsafe and was not loaded "
            f"({type(err).__name__}: {first}); use a checkpoint written by `iit fit`"
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise DamagedFileError(
            f"checkpoint {str(path)!r} was not loaded: it holds no 'state_dict' (not a checkpoint "
            "written by `iit fit`)"
        )
    return checkpoint
