"""Edge attribution patching between components: EAP (Syed et al. 2023) and EAP-IG (Hanna et al.
2024) on pre-LN decoders (GPT-2, GPT-NeoX, Llama, Qwen2, Mistral).

In a pre-LN transformer every component reads the residual stream, which is the sum of the
outputs of the components before it. Nodes: ``embed`` (the block-0 input), ``attn{l}`` and
``mlp{l}`` (their outputs ``TransformerCoordinate(l, "attention_output" / "mlp_output")``), and
the readers ``attn{l}``, ``mlp{l}`` (through the norm before them) and ``logits`` (the final
norm). The edge ``u -> d`` carries ``u``'s output into ``d``'s input only; patching it from the
source run changes ``d``'s input by ``Δ_u = out_u(source) - out_u(base)``, so

* EAP: ``score(u -> d) = Σ Δ_u · ∂m/∂in_d`` at the base run, where the gradient is taken at the
  input of ``d``'s norm (it reaches the residual stream through ``d`` only);
* EAP-IG: the gradient averaged over ``steps`` points on the straight line from the base to the
  source input embeddings (quadrature of `iit.attribution.quadrature`).

One source collect, one base collect, and one forward + backward (EAP) or ``steps`` of them in
stacked batches (EAP-IG).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from iit.attribution.layout import TransformerLayout, transformer_layout
from iit.attribution.places import repeat_inputs
from iit.attribution.quadrature import QuadratureMethod, quadrature
from iit.attribution.targets import Target, target_scores
from iit.coordinates import Coordinate
from iit.errors import ArgumentError, CoordinateError, TargetError
from iit.hooks import HookRun, Inputs, WriteOp, batch_size, call_model

__all__ = ["EdgeScores", "edge_attribution_patching"]


@dataclass(frozen=True)
class EdgeScores:
    """Scores of every edge between components.

    Attributes:
        upstream: names of the writing nodes (``embed``, ``attn0``, ``mlp0``, ...).
        downstream: names of the reading nodes (``attn0``, ``mlp0``, ..., ``logits``).
        scores: ``[len(upstream), len(downstream), batch]``; 0 where no edge exists.
        edges: bool ``[len(upstream), len(downstream)]``: which edges exist.

    Raises:
        TypeError: a missing or unknown field (dataclass construction);
            `edge_attribution_patching` builds the scores.
    """

    upstream: list[str]
    downstream: list[str]
    scores: Tensor
    edges: Tensor

    def top(self, k: int) -> list[tuple[str, str, float]]:
        """The ``k`` edges with the largest batch-mean |score|, as ``(u, d, mean score)``.

        Args:
            k: how many edges (fewer when fewer edges exist).
        """
        mean = self.scores.mean(-1)
        flat = mean.abs().masked_fill(~self.edges, -1.0).flatten()
        order = flat.argsort(descending=True)[: min(k, int(self.edges.sum()))]
        n_down = len(self.downstream)
        return [
            (self.upstream[i // n_down], self.downstream[i % n_down], float(mean.flatten()[i]))
            for i in order.tolist()
        ]


def _nodes(layout: TransformerLayout) -> tuple[list[tuple[str, Any]], list[tuple[str, str]]]:
    """(upstream name, output coordinate), (downstream name, norm module path)."""
    from iit.transformers import TransformerCoordinate

    family = layout.family
    up: list[tuple[str, Any]] = [("embed", TransformerCoordinate(0, "block_input"))]
    down: list[tuple[str, str]] = []
    for layer in range(layout.n_layers):
        up.append((f"attn{layer}", TransformerCoordinate(layer, "attention_output")))
        up.append((f"mlp{layer}", TransformerCoordinate(layer, "mlp_output")))
        down.append((f"attn{layer}", layout.path(layer, family.attention_norm)))
        down.append((f"mlp{layer}", layout.path(layer, family.mlp_norm)))
    down.append(("logits", f"{layout.shape.prefix}{family.final_norm}"))
    return up, down


def _edge_mask(layout: TransformerLayout, up: list[str], down: list[str]) -> Tensor:
    """``u -> d`` exists when ``u`` writes the residual stream before ``d`` reads it."""

    def order(name: str, reading: bool) -> float:
        if name == "embed":
            return -1.0
        if name == "logits":
            return float(layout.n_layers)
        layer = int(name.removeprefix("attn").removeprefix("mlp"))
        mlp_late = 0.5 if not layout.parallel else 0.0  # parallel: the MLP reads the block input
        return layer + (mlp_late if name.startswith("mlp") else 0.0) + (0.0 if reading else 0.25)

    return torch.tensor([[order(u, False) < order(d, True) for d in down] for u in up])


def edge_attribution_patching(
    model: Any,
    base: Inputs,
    source: Inputs,
    metric: Target,
    *,
    integrated_steps: int | None = None,
    method: QuadratureMethod = "gausslegendre",
) -> EdgeScores:
    """EAP (``integrated_steps=None``) or EAP-IG scores of every component edge.

    Args:
        model: a Hugging Face pre-LN decoder of a family in the table (or its
            `iit.TransformerInterventionable`).
        base: the base inputs (e.g. ``input_ids [batch, seq]``).
        source: the source inputs, of the same shape as ``base``.
        metric: one score per row (see `iit.attribution.targets`).
        integrated_steps: EAP-IG quadrature nodes (``None``: plain EAP).
        method: EAP-IG quadrature rule.

    Returns:
        `EdgeScores`, with scores ``[len(upstream), len(downstream), batch]``.

    Raises:
        CoordinateError: a post-LN model (its components do not read a plain residual sum) or
            a model outside the family table.
        TargetError: the metric does not give one score per row.
        ArgumentError: ``integrated_steps < 1``.
    """
    layout = transformer_layout(getattr(model, "model", model))
    if not layout.family.pre_ln or not layout.family.final_norm:
        raise CoordinateError(
            f"edge attribution patching needs a pre-LN decoder (components reading the residual "
            f"sum through a norm); {layout.family.name} is post-LN"
        )
    if integrated_steps is not None and integrated_steps < 1:
        raise ArgumentError(f"integrated_steps must be >= 1 or None, got {integrated_steps}")
    wrapped = layout.wrapped
    up, down = _nodes(layout)
    n = batch_size(base)
    if n is None:
        raise TargetError("the inputs have no batch dimension")
    with torch.no_grad():
        up_coords = [c for _, c in up]
        src = wrapped.collect(source, up_coords, detach=True)
        bas = wrapped.collect(base, up_coords, detach=True)
    deltas = torch.stack([(src[c] - bas[c]) for c in up_coords])  # [U, B, T, D]

    grads = _reader_gradients(layout, base, source, metric, [p for _, p in down], integrated_steps, method)
    scores = torch.einsum("ubtd,rbtd->urb", deltas, grads.to(deltas.dtype))
    edges = _edge_mask(layout, [u for u, _ in up], [d for d, _ in down])
    scores = scores * edges[..., None].to(scores.dtype)
    return EdgeScores([u for u, _ in up], [d for d, _ in down], scores, edges)


def _reader_gradients(
    layout: TransformerLayout,
    base: Inputs,
    source: Inputs,
    metric: Target,
    readers: list[str],
    steps: int | None,
    method: QuadratureMethod,
) -> Tensor:
    """``∂m/∂in_d`` at every reader's norm input, ``[readers, batch, seq, d_model]`` (EAP-IG:
    averaged over the interpolated embeddings)."""
    model = layout.model
    n = batch_size(base)
    assert n is not None
    embed = next(name for name, m in model.named_modules() if m is model.get_input_embeddings())
    embed_coord = Coordinate(embed)
    if steps is None:
        alphas, weights, rows_in = torch.zeros(1), torch.ones(1), base
    else:
        alphas, weights = quadrature(method, steps, dtype=torch.float64)
        rows_in = repeat_inputs(base, steps)
    k = alphas.shape[0]
    writes: list[WriteOp] = []
    if steps is not None:
        with torch.no_grad():
            e_src = _collect(layout, source, embed_coord)
            e_base = _collect(layout, base, embed_coord)
        a = alphas.to(e_base.dtype).view(-1, *[1] * e_base.dim())
        points = (e_base.unsqueeze(0) + a * (e_src - e_base).unsqueeze(0)).flatten(0, 1)
        writes.append(WriteOp(embed_coord, lambda v: points.to(v.dtype), name="EAP-IG embeddings"))
    leaves: dict[str, Tensor] = {}

    def make_leaf(path: str) -> Any:
        def apply(value: Tensor) -> Tensor:
            leaves[path] = torch.zeros_like(value, requires_grad=True)
            return value + leaves[path]

        return apply

    writes += [WriteOp(Coordinate(p, io="input"), make_leaf(p), name=f"EAP at {p}") for p in readers]
    with torch.enable_grad():
        run = HookRun(dict(model.named_modules()), [], writes, stop_early=False)
        out = run.run(lambda: call_model(model, rows_in))
        scores = target_scores(out, metric)
        if scores.shape != (k * n,):
            raise TargetError(f"the metric gives scores of shape {tuple(scores.shape)}, expected ({k * n},)")
        w = weights.to(scores.dtype).repeat_interleave(n)
        grads = torch.autograd.grad((scores * w).sum(), [leaves[p] for p in readers])
    return torch.stack([g.view(k, n, *g.shape[1:]).sum(0) for g in grads])


def _collect(layout: TransformerLayout, inputs: Inputs, coord: Coordinate) -> Tensor:
    """The values at a generic coordinate for ``inputs`` (no gradients)."""
    return layout.wrapped.collect(inputs, [coord], detach=True)[coord]
