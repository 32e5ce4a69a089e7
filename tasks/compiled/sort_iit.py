"""Strict IIT of a small non-compiled transformer on tracr's ``sort`` program (as the InterpBench
models were made): the network is trained so that the program's intermediate variable sits where
the compiled model keeps it.

tracr's ``make_sort_unique(tokens, tokens)`` on distinct tokens ``t_0 .. t_{n-1}``:

* ``target_pos[i] = #{j : t_j < t_i}`` (a selector width: layer 0 of the compiled model, every
  token position, `tasks.compiled.alignment.true_alignment` gives ``blocks.0.resid_post``);
* ``sort[k] = t_i`` for the ``i`` with ``target_pos[i] == k`` (an aggregate: layer 1).

The causal model here is that program in vectorised torch: inputs ``t0 .. t{n-1}``, ``P`` (the
whole ``target_pos`` sequence, coded ``sum_i target_pos[i] * n**i``) and the output
``O = sort[read_rank]``. Interchanging ``P`` always gives a permutation, so every counterfactual
is defined (a single position's ``target_pos`` would not be).

The network (`tasks.networks.TinyTransformer`, 2 blocks) reads tokens
``[t_0, .., t_{n-1}, READ]`` and predicts ``O`` at ``READ``. ``P`` is aligned to dims
``[0, p_width)`` of block 0's output at the token positions ``0 .. n-1`` (the compiled model's
place); strict IIT resample-ablates what is outside the circuit: block 0's output at the ``READ``
position (all dims) and the dims ``[p_width + token_width, d_model)`` at the token positions. Dims
``[p_width, p_width + token_width)`` are left for the tokens themselves, which the compiled model
also keeps in the residual stream for layer 1 to move.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from causal_models import CausalModel
from causal_models.data import InputSampler
from causal_models.domains import IntegerRange
from iit import Coordinate, Index
from iit.alignment import AlignedTo
from iit.errors import ArgumentError
from iit.training import IITTask
from tasks.networks import TinyTransformer

__all__ = ["SortStrictTransformer", "sort_causal_model", "DistinctTokens"]


def _target_pos(tokens: Tensor) -> Tensor:
    """``[batch, n]`` tokens -> ``[batch, n]`` ranks ``#{j : t_j < t_i}``."""
    return (tokens[:, None, :] < tokens[:, :, None]).sum(-1)


def sort_causal_model(vocab: int, length: int = 4, read_rank: int = 1) -> CausalModel:
    """``t0 .. t{length-1} -> P -> O = sort[read_rank]`` over tokens ``0 .. vocab-1`` (see the
    module docstring); ``O`` reads the base tokens, ``P`` says which of them is ``read_rank``-th.

    Raises:
        ArgumentError: ``length > vocab`` (distinct tokens impossible) or ``read_rank`` outside
            ``[0, length)``.
    """
    if not 1 <= length <= vocab:
        raise ArgumentError(f"length must be in [1, vocab={vocab}] for distinct tokens, got {length}")
    if not 0 <= read_rank < length:
        raise ArgumentError(f"read_rank must be in [0, {length}), got {read_rank}")
    names = [f"t{i}" for i in range(length)]
    weights = length ** torch.arange(length)

    def p_of(*tokens: Tensor) -> Tensor:
        return (_target_pos(torch.stack(tokens, 1)) * weights).sum(1)

    def o_of(p: Tensor, *tokens: Tensor) -> Tensor:
        ranks = (p[:, None] // weights) % length  # [batch, length]
        slot = (ranks == read_rank).long().argmax(1)  # the position whose rank is read_rank
        return torch.stack(tokens, 1).gather(1, slot[:, None])[:, 0]

    spec: dict[str, tuple] = {name: ((), None, IntegerRange(0, vocab)) for name in names}
    spec["P"] = (tuple(names), p_of, IntegerRange(0, length**length))
    spec["O"] = (("P", *names), o_of, IntegerRange(0, vocab))
    return CausalModel.from_mapping(spec, outputs=["O"], name=f"sort (tracr make_sort_unique), output[{read_rank}]")


class DistinctTokens:
    """Sampler of ``length`` distinct tokens ``0 .. vocab-1`` (the program's precondition),
    uniformly over such sequences: ``sampler(n, generator) -> {"t0": [n], ...}``."""

    def __init__(self, vocab: int, length: int) -> None:
        self.vocab, self.length = vocab, length

    def __call__(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        keys = torch.rand(n, self.vocab, generator=generator)
        tokens = keys.argsort(1)[:, : self.length]  # [n, length]: a uniform random arrangement
        return {f"t{i}": tokens[:, i] for i in range(self.length)}


class SortStrictTransformer(IITTask):
    """tracr's sort with a 2-block `tasks.networks.TinyTransformer` trained by (strict)
    IIT; ``P`` (``target_pos``) aligned at block 0's output over the token positions.

    Args:
        vocab: tokens ``0 .. vocab-1`` (the read-out token is ``vocab``).
        length: sequence length (distinct tokens).
        read_rank: which element of the sorted sequence the network predicts.
        d_model, n_heads, d_mlp: the transformer's sizes.
        p_width: dims of ``P`` at each token position.
        token_width: dims after ``P`` left unablated for the tokens (0: none).

    Raises:
        ArgumentError: inconsistent sizes (see `sort_causal_model`) or
            ``p_width + token_width > d_model``.
    """

    name = "compiled_sort"

    def __init__(
        self,
        vocab: int = 6,
        length: int = 4,
        read_rank: int = 1,
        d_model: int = 32,
        n_heads: int = 4,
        d_mlp: int = 64,
        p_width: int = 8,
        token_width: int = 8,
    ) -> None:
        sort_causal_model(vocab, length, read_rank)  # validates vocab / length / read_rank
        if p_width < 1 or token_width < 0 or p_width + token_width > d_model:
            raise ArgumentError(
                f"need p_width >= 1, token_width >= 0 and p_width + token_width <= d_model={d_model}, "
                f"got p_width={p_width}, token_width={token_width}"
            )
        self.vocab, self.length, self.read_rank = vocab, length, read_rank
        self.d_model, self.n_heads, self.d_mlp = d_model, n_heads, d_mlp
        self.p_width, self.token_width = p_width, token_width

    def causal_model(self) -> CausalModel:
        return sort_causal_model(self.vocab, self.length, self.read_rank)

    def build_network(self) -> nn.Module:
        return TinyTransformer(
            vocab=self.vocab + 1, seq_len=self.length + 1, d_model=self.d_model, n_heads=self.n_heads,
            d_mlp=self.d_mlp, n_layers=2, n_out=self.vocab,
        )

    def train_sampler(self, model: CausalModel) -> InputSampler:
        return DistinctTokens(self.vocab, self.length)

    def _at(self, positions: Sequence[int], dims: tuple[int, int]) -> Coordinate:
        return Coordinate("blocks.0", Index.positions(list(positions), dims=dims))

    def alignments(self) -> Mapping[str, Mapping[str, AlignedTo]]:
        """``default``: ``P`` -> ``blocks.0``, token positions, dims ``[0, p_width)`` (tracr's
        place); ``P_at_read``: the same dims at the read-out position, a wrong hypothesis."""
        tokens = range(self.length)
        return {
            "default": {"P": self._at(tokens, (0, self.p_width))},
            "P_at_read": {"P": self._at([self.length], (0, self.p_width))},
        }

    def unaligned_coordinates(self) -> Sequence[Coordinate]:
        """Block 0's output at the read-out position (all dims) and, when ``p_width +
        token_width < d_model``, the remaining dims at the token positions."""
        out = [self._at([self.length], (0, self.d_model))]
        start = self.p_width + self.token_width
        if start < self.d_model:
            out.append(self._at(range(self.length), (start, self.d_model)))
        return out

    def encode_inputs(self, values: Mapping[str, Tensor]) -> Tensor:
        """Tokens ``[batch, length + 1]``: ``t0 .. t{length-1}`` and the read-out token."""
        tokens = torch.stack([values[f"t{i}"] for i in range(self.length)], dim=1)
        read = torch.full_like(tokens[:, :1], self.vocab)
        return torch.cat([tokens, read], dim=1)

    def all_sequences(self) -> list[tuple[int, ...]]:
        """Every valid input (distinct tokens), for exhaustive checks."""
        return list(itertools.permutations(range(self.vocab), self.length))
