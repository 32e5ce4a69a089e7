"""Token positions that mean what the user means, whatever the padding.

`Tokens` counts positions over each row's *real* tokens (where ``attention_mask`` is 1):
``Tokens.at(0)`` is the first real token, ``Tokens.last()`` the last one, ``Tokens.at(-2)`` the one
before it. `real_token_positions` resolves them per row to absolute positions
(``[batch, k]``), so left-padded, right-padded and unpadded batches address the same tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from iit.errors import CoordinateError

__all__ = ["Tokens", "real_token_positions", "position_ids_from_mask", "attention_mask_of", "sequence_length"]


@dataclass(frozen=True)
class Tokens:
    """Positions counted over the real (non-padding) tokens of each row.

    Attributes:
        indices: indices into the row's real tokens; ``0`` is the first, ``-1`` the last.
            Non-negative indices align rows of different lengths from the start, negative
            ones from the end.

    Raises:
        CoordinateError: no indices, a non-int index, or a repeated one.

    Examples:
        >>> import torch
        >>> Tokens.last()
        Tokens(indices=(-1,))
        >>> mask = torch.tensor([[0, 0, 1, 1, 1],     # left-padded
        ...                      [1, 1, 1, 1, 0]])    # right-padded
        >>> real_token_positions(Tokens.at(0, -1), mask)
        tensor([[2, 4],
                [0, 3]])
    """

    indices: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.indices or not all(isinstance(i, int) and not isinstance(i, bool) for i in self.indices):
            raise CoordinateError(f"Tokens needs one or more int indices, got {self.indices!r}")
        if len(set(self.indices)) != len(self.indices):
            raise CoordinateError(f"Tokens indices must not repeat, got {list(self.indices)}")

    @staticmethod
    def at(*indices: int) -> Tokens:
        """The real tokens at ``indices`` (0-based from the first real token, negative from the
        last).

        Args:
            *indices: one or more distinct ints.

        Raises:
            CoordinateError: no indices, a non-int index, or a repeated one.
        """
        return Tokens(tuple(indices))

    @staticmethod
    def last() -> Tokens:
        """The last real token of each row."""
        return Tokens((-1,))

    @staticmethod
    def first() -> Tokens:
        """The first real token of each row."""
        return Tokens((0,))


def real_token_positions(tokens: Tokens, attention_mask: Tensor) -> Tensor:
    """Absolute positions ``[batch, k]`` of ``tokens`` in each row of ``attention_mask``
    (``[batch, seq]``, 1 = real token).

    Args:
        tokens: the positions, counted over real tokens.
        attention_mask: ``[batch, seq]``, 1 = real token.

    Raises:
        CoordinateError: the mask is not 2-d or is a meta tensor (no values to count), or a row
            has too few real tokens for an index (names the row and its real-token count).
    """
    if attention_mask.device.type == "meta":
        raise CoordinateError(
            f"Tokens positions {list(tokens.indices)} are counted on the attention mask, but it is a meta "
            "tensor without values; pass a real attention_mask (e.g. on the CPU) or use absolute "
            "positions (an int or a tuple of ints) on a meta-device model"
        )
    if attention_mask.dim() != 2:
        raise CoordinateError(
            f"attention_mask must be [batch, seq] to resolve Tokens positions, got shape "
            f"{tuple(attention_mask.shape)}"
        )
    real = attention_mask.bool()
    counts = real.sum(1)  # [batch]
    idx = torch.tensor(tokens.indices, device=attention_mask.device)  # [k]
    wanted = torch.where(idx < 0, counts[:, None] + idx[None, :], idx[None, :].expand(len(counts), -1))
    bad = (wanted < 0) | (wanted >= counts[:, None])
    if bad.any():
        row = int(bad.any(1).nonzero()[0])
        raise CoordinateError(
            f"row {row} has {int(counts[row])} real tokens, so Tokens indices {list(tokens.indices)} "
            f"do not all exist; valid indices are -{int(counts[row])}..{int(counts[row]) - 1}"
        )
    # rank of each real token within its row: the j-th real token is where the running count is j + 1
    rank = real.long().cumsum(1) - 1  # [batch, seq]
    rank = rank.masked_fill(~real, -1)
    match = rank[:, None, :] == wanted[:, :, None]  # [batch, k, seq]
    return match.long().argmax(-1)


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Position ids ``[batch, seq]`` that count real tokens only (0 at each row's first real
    token; padding gets 0). Pass them as ``position_ids`` so left-padded rows see the same
    positional embeddings as unpadded ones.

    Args:
        attention_mask: ``[batch, seq]``, 1 = real token.

    Returns:
        Position ids ``[batch, seq]`` (int64).

    Raises:
        AttributeError: ``attention_mask`` is not a tensor.

    Examples:
        >>> import torch
        >>> position_ids_from_mask(torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]))
        tensor([[0, 0, 0, 1],
                [0, 1, 2, 3]])
    """
    return (attention_mask.long().cumsum(1) - 1).clamp(min=0)


def attention_mask_of(inputs: object) -> Tensor | None:
    """The ``attention_mask`` entry of dict inputs (``None`` otherwise).

    Args:
        inputs: model inputs.

    Returns:
        The mask ``[batch, seq]``, or ``None``.
    """
    if isinstance(inputs, Mapping):
        mask = inputs.get("attention_mask")
        return mask if isinstance(mask, Tensor) else None
    return None


def sequence_length(inputs: object) -> int | None:
    """Sequence length of ``input_ids`` / ``inputs_embeds`` (dict) or of a token tensor.

    Args:
        inputs: model inputs: a dict, a tensor ``[batch, seq, ...]`` or a tuple whose first
            element is one.

    Returns:
        ``seq``, or ``None`` when the inputs hold no such tensor.
    """
    if isinstance(inputs, Mapping):
        for name in ("input_ids", "inputs_embeds"):
            value = inputs.get(name)
            if isinstance(value, Tensor) and value.dim() >= 2:
                return value.shape[1]
        return None
    if isinstance(inputs, Tensor) and inputs.dim() >= 2:
        return inputs.shape[1]
    if isinstance(inputs, (tuple, list)) and inputs and isinstance(inputs[0], Tensor):
        return sequence_length(inputs[0])
    return None
