"""ALTI: Aggregation of Layer-wise Token-to-token Interactions (Ferrando et al., EMNLP 2022).

Per layer, the attention block's output at position ``i`` is decomposed into transformed
vectors of every input token ``j`` (``[batch, seq, seq, d]``):

* post-LN (BERT, RoBERTa, DistilBERT): ``T_i(x_j) = L(Σ_h α^h_ij v^h_j W^h_O + δ_ij x_j) / σ_i``
  with ``L(v) = (v - mean(v)) ⊙ γ`` and ``σ_i`` the LayerNorm's actual normaliser
  ``sqrt(var(u_i) + eps)`` of its input ``u_i``; the resultant ``y_i`` is the LayerNorm output.
* pre-LN decoders (GPT-2, GPT-NeoX, Llama, Qwen2, Mistral; LayerNorm or RMSNorm):
  ``T_i(x_j) = Σ_h α^h_ij v^h_j W^h_O + δ_ij x_j`` with ``v^h_j`` computed from ``norm(x_j)``
  (a function of token ``j`` alone); the resultant ``y_i`` is the residual stream after
  attention, ``x_i + attn_i``.

``v^h_j`` includes the value bias; the output bias (and LN β) belong to no token. Contributions
``c_ij = max(0, ‖y_i‖₁ - ‖y_i - T_i(x_j)‖₁)`` are row-normalised to ``C`` (rows sum to 1) and
aggregated through layers as ``R = C^L ⋯ C^1``. The FFN is not part of ALTI.

Deviation from the reference code: ``σ_i`` includes the LayerNorm's ``eps`` inside the square
root (as LayerNorm does), so the decomposition reconstructs the LayerNorm output exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from iit.attribution.attention import TokenMethod
from iit.attribution.layout import collect_places
from iit.attribution.places import ForwardFn
from iit.attribution.targets import Target
from iit.coordinates import Coordinate
from iit.errors import ArgumentError
from iit.hooks import Inputs
from iit.placement import materialized

__all__ = ["ALTI", "ALTILayer", "alti_rollout", "layer_contributions", "transformed_vectors"]


@dataclass(frozen=True)
class ALTILayer:
    """What one layer's decomposition needs (all detached).

    Attributes:
        x: block input ``[batch, seq, d]``.
        probs: attention probabilities ``[batch, heads, seq, seq]``.
        head_out: per-head value vectors through ``W_O``, already passed through ``L`` for
            post-LN, ``[batch, seq, heads, d]`` (source token first: the layout the chunked
            contraction in `layer_contributions` reads without a copy).
        x_out: ``x`` as it enters the residual term (``L(x)`` post-LN, ``x`` pre-LN), ``[batch,
            seq, d]``.
        scale: ``1/σ_i`` post-LN, ones pre-LN, ``[batch, seq]``.
        bias: the part of ``y_i`` no token owns (``L(b_O)/σ_i + β`` or ``b_O``), ``[batch, seq, d]``.
        resultant: ``y`` ``[batch, seq, d]``.

    Raises:
        TypeError: a missing or unknown field (dataclass construction); `ALTI.layers` builds
            the layers of a model.
    """

    x: Tensor
    probs: Tensor
    head_out: Tensor
    x_out: Tensor
    scale: Tensor
    bias: Tensor
    resultant: Tensor


def transformed_vectors(layer: ALTILayer, rows: slice | None = None) -> Tensor:
    """``T_i(x_j)`` for output rows ``i`` in ``rows`` (default all): ``[batch, rows, seq, d]``."""
    rows = rows if rows is not None else slice(0, layer.x.shape[1])
    start = rows.start
    probs = layer.probs[:, :, rows, :]  # [B, H, r, T]
    mixed = torch.einsum("bhij,bjhd->bijd", probs, layer.head_out)  # [B, r, T, D]
    idx = torch.arange(mixed.shape[1], device=mixed.device)
    mixed[:, idx, idx + start, :] += layer.x_out[:, rows, :]
    return mixed * layer.scale[:, rows, None, None]


def layer_contributions(layer: ALTILayer, *, chunk_rows: int = 16) -> Tensor:
    """Row-normalised contributions ``C [batch, seq, seq]`` of one layer (rows sum to 1).

    ``c_ij = max(0, ‖y_i‖₁ - ‖y_i - T_i(x_j)‖₁)``. Works one sequence and ``chunk_rows`` output
    rows at a time (memory ``seq x chunk_rows x d``). Per chunk one batched matmul over source
    tokens ``j`` writes ``y_i / s_i - Σ_h α^h_ij v'^h_j`` straight into its ``[j, i, d]``
    buffer (``baddbmm``), the residual term is subtracted on the diagonal, and the L1 norm is
    taken in place; ``‖y_i - s_i T'_ij‖₁ = s_i ‖y_i / s_i - T'_ij‖₁`` keeps the scale off the
    large tensor. Rows with all ``c_ij = 0`` stay zero.

    Args:
        layer: one layer's decomposition inputs (shapes in `ALTILayer`).
        chunk_rows: output rows per chunk (memory against speed; the result does not depend on it).

    Returns:
        ``C`` ``[batch, seq, seq]``: row ``i`` holds the shares of the input tokens ``j`` in
        output ``i``.

    Raises:
        ArgumentError: ``chunk_rows < 1``.
    """
    if chunk_rows < 1:
        raise ArgumentError(f"chunk_rows must be >= 1, got {chunk_rows}")
    batch, seq, d = layer.x.shape
    norms = layer.resultant.abs().sum(-1)  # [B, T]
    targets = layer.resultant / layer.scale[..., None]  # y_i / s_i, [B, T, D]
    raw = layer.x.new_empty(batch, seq, seq)
    for b in range(batch):
        for start in range(0, seq, chunk_rows):
            stop = min(seq, start + chunk_rows)
            weights = layer.probs[b, :, start:stop, :].permute(2, 1, 0).contiguous()  # [T, r, H]
            rows = targets[b, start:stop].expand(seq, -1, -1)  # [T(j), r, D]
            diff = torch.baddbmm(rows, weights, layer.head_out[b], alpha=-1)  # [T(j), r, D]
            idx = torch.arange(stop - start, device=diff.device)
            diff[idx + start, idx] -= layer.x_out[b, start:stop]
            distance = diff.abs_().sum(-1).t() * layer.scale[b, start:stop, None]  # [r, T]
            raw[b, start:stop] = (norms[b, start:stop, None] - distance).clamp(min=0)
    total = raw.sum(-1, keepdim=True)
    return raw / torch.where(total == 0, torch.ones_like(total), total)


def alti_rollout(contributions: Tensor) -> Tensor:
    """Aggregate per-layer contributions ``[layers, batch, seq, seq]`` to ``R = C^L ⋯ C^1``.

    Args:
        contributions: row-normalised contributions ``[layers, batch, seq, seq]`` (first
            layer first), e.g. from `ALTI.contributions`.

    Returns:
        ``R`` ``[batch, seq, seq]`` (later layers multiply from the left).

    Raises:
        ArgumentError: not ``[layers, batch, seq, seq]`` with square matrices.

    Examples:
        >>> import torch
        >>> from iit.attribution.alti import alti_rollout
        >>> first = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
        >>> second = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
        >>> alti_rollout(torch.stack([first, second])[:, None])
        tensor([[[0.7500, 0.2500],
                 [0.5000, 0.5000]]])
    """
    if contributions.dim() != 4 or contributions.shape[-1] != contributions.shape[-2]:
        raise ArgumentError(
            f"contributions must be [layers, batch, seq, seq], got {tuple(contributions.shape)}"
        )
    result = contributions[0]
    for layer in contributions[1:]:
        result = layer @ result
    return result


def _head_weights(out_proj: nn.Module, heads: int) -> tuple[Tensor, Tensor]:
    """``W_O`` split per head ``[heads, d_head, d]`` and ``b_O [d]``."""
    with materialized(out_proj):  # accelerate-offloaded weights are meta outside forward
        weight = out_proj.weight.detach()
        bias = out_proj.bias.detach() if out_proj.bias is not None else None
    if isinstance(out_proj, nn.Linear):
        weight = weight.t()  # [d_in, d]
    d_in, d = weight.shape
    bias = bias if bias is not None else weight.new_zeros(d)
    return weight.reshape(heads, d_in // heads, d), bias


class ALTI(TokenMethod):
    """ALTI token attributions (``[batch, seq]``) for every family of the table.

    Post-LN encoders (BERT, RoBERTa, DistilBERT) as in the paper; pre-LN decoders (GPT-2,
    GPT-NeoX, Llama, Qwen2, Mistral; LayerNorm or RMSNorm) in the decoder formulation: the
    norm before attention acts on each token alone, so it belongs to that token's value vector
    ``v_j = W_V norm(x_j) + b_V``, and the resultant is the residual stream after attention,
    ``y_i = x_i + attn_i`` (with GPT-NeoX's parallel residual: the block input plus the
    attention output, the MLP being outside ALTI as in the paper). Grouped key-value heads are
    shared by the query heads that read them.

    Args:
        model: a Hugging Face model of a family in `iit.transformers.families.FAMILIES`.
        forward: see `Attribution`.
        position: explained output position (default ``[CLS]``=0 for encoders, the last token
            for decoders).
        chunk_rows: output rows per chunk in `layer_contributions`.

    Raises:
        CoordinateError: unsupported family or missing modules.
    """

    def __init__(
        self,
        model: nn.Module | Callable[..., Any],
        *,
        forward: ForwardFn | None = None,
        position: int | None = None,
        chunk_rows: int = 16,
    ):
        super().__init__(model, forward=forward, position=position)
        self.chunk_rows = chunk_rows

    def layers(self, inputs: Inputs) -> list[ALTILayer]:
        """Run the forward once and return every layer's decomposition inputs.

        Raises:
            HookFiringError: a block or its attention did not run exactly once.
        """
        return [self._layer(i, *capture) for i, capture in enumerate(self._capture(inputs))]

    def _capture(self, inputs: Inputs) -> list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]]:
        """Per block ``(x, probs [B, H, T, T], value [B, H, T, d], u, y)`` from one forward:
        ``u`` the residual sum after attention, ``y`` the resultant (post-LN: the norm's output;
        pre-LN: ``u`` itself)."""
        from iit.transformers import TransformerCoordinate

        layout, family = self.layout, self.layout.family
        places: dict[Any, Any] = {}
        for i in range(layout.n_layers):
            places[i, "x"] = TransformerCoordinate(i, "block_input")
            places[i, "probs"] = TransformerCoordinate(i, "attention_probs")
            places[i, "value"] = TransformerCoordinate(i, "value")
            if family.pre_ln:
                places[i, "attn"] = TransformerCoordinate(i, "attention_output")
            else:
                norm = layout.path(i, family.attention_norm)
                places[i, "u"] = Coordinate(norm, io="input")
                places[i, "y"] = Coordinate(norm)
        values, _ = collect_places(layout, self.forward, inputs, places)
        out = []
        for i in range(layout.n_layers):
            x, probs = values[i, "x"], values[i, "probs"]
            batch, seq, _ = x.shape
            heads, kv_heads = probs.shape[1], layout.shape.n_kv_heads
            value = values[i, "value"].reshape(batch, seq, kv_heads, -1).transpose(1, 2)
            value = value.repeat_interleave(heads // kv_heads, dim=1)  # [B, H, T, d]
            if family.pre_ln:
                u = x + values[i, "attn"].to(x.device)
                out.append((x, probs, value, u, u))
            else:
                out.append((x, probs, value, values[i, "u"], values[i, "y"]))
        return out

    def _layer(
        self, i: int, x: Tensor, probs: Tensor, value: Tensor, u: Tensor, y: Tensor
    ) -> ALTILayer:
        x = x.to(value.device)  # read before accelerate moved it into the block
        w_heads, b_o = _head_weights(self.layout.out_proj(i), probs.shape[1])  # [H, k, D], [D]
        w_heads, b_o = w_heads.to(x.device), b_o.to(x.device)
        if self.layout.family.pre_ln:
            head_out = torch.einsum("bhjk,hkd->bjhd", value, w_heads)  # [B, T, H, D]
            ones = x.new_ones(x.shape[:2])
            return ALTILayer(x, probs, head_out, x, ones, b_o.expand_as(x), u.to(x.device))
        norm = self.layout.module(i, self.layout.family.attention_norm)
        u, y = u.to(x.device), y.to(x.device)
        with materialized(norm):  # accelerate-offloaded weights are meta outside forward
            gamma = norm.weight.detach().to(x.device) if norm.weight is not None else x.new_ones(x.shape[-1])
            beta = norm.bias.detach().to(x.device) if norm.bias is not None else x.new_zeros(x.shape[-1])

        def center(v: Tensor) -> Tensor:
            return (v - v.mean(-1, keepdim=True)) * gamma

        # L is linear, so L(v W_O^h) = v L(W_O^h): centre the small weight, not [B, T, H, D].
        head_out = torch.einsum("bhjk,hkd->bjhd", value, center(w_heads))  # [B, T, H, D]
        sigma = torch.sqrt(u.var(-1, unbiased=False) + norm.eps)  # [B, T]
        bias = center(b_o).expand_as(x) / sigma[..., None] + beta
        return ALTILayer(x, probs, head_out, center(x), 1.0 / sigma, bias, y)

    def contributions(self, inputs: Inputs) -> Tensor:
        """Per-layer contribution matrices ``[layers, batch, seq, seq]`` (rows sum to 1).

        Layers are decomposed one at a time, so only one layer's vectors are held in memory.
        """
        captures = self._capture(inputs)
        device = captures[0][0].device  # layers split across devices (accelerate): gather there
        return torch.stack(
            [
                layer_contributions(self._layer(i, *capture), chunk_rows=self.chunk_rows).to(device)
                for i, capture in enumerate(captures)
            ]
        )

    def matrices(self, inputs: Inputs) -> Tensor:
        """Aggregated ALTI ``[batch, seq, seq]`` (row ``i``: input-token shares of output ``i``)."""
        return alti_rollout(self.contributions(inputs))

    def attribute(self, inputs: Inputs, target: Target) -> Tensor:
        """ALTI scores of each input token for the output at ``position``, ``[batch, seq]``.

        Args:
            inputs: the batch (e.g. ``input_ids [batch, seq]`` with an attention mask).
            target: not used (ALTI explains a position, not a class).

        Raises:
            CoordinateError: the model is outside the family table or lacks a module.
            HookFiringError: a block or its attention did not run exactly once.
            OutOfRangeError: ``position`` outside ``[-seq, seq)``.
        """
        return self._row(self.matrices(inputs))
