"""Attribution patching: gradient estimates of activation-patching effects, and the exact effects.

The effect of patching coordinate ``c`` from a source run into a base run is
``m(base with c := c_source) - m(base)`` for a metric ``m`` (a `Target`:
one score per row). `exact_patching_effects` computes it for many coordinates with
`iit.Interventionable.intervene`, stacking one copy of the base batch per coordinate so
that a few forwards serve them all. `attribution_patching` estimates every effect from one
source forward, one base forward and one backward:

* **AtP** (Nanda 2023; Kramár et al. 2024): ``ĉ = (a_source - a_base) · ∂m/∂a`` at the base run,
  summed over the coordinate's entries. Exact when ``m`` is linear in ``a``.
* **AtP*** (Kramár et al. 2024, arXiv 2403.00745) adds two fixes. *Softmax fix*: for a query or
  key coordinate the linearisation is moved past the attention softmax, which saturates: the
  layer's attention probabilities with the coordinate patched, ``A'``, are computed exactly
  (batched forwards, one base copy per query / key coordinate) and
  ``ĉ = (A' - A) · ∂m/∂A``. *GradDrop*: for every layer ``ℓ`` the estimate is recomputed with
  the gradient through layer ``ℓ``'s attention and MLP outputs dropped, and
  ``ĉ = Σ_ℓ |ĉ_ℓ| / (L - 1)`` (against gradients that cancel along the residual stream;
  a magnitude for ranking, not a signed effect).

Coordinates are `iit.Coordinate` or `iit.TransformerCoordinate` (e.g. every
``(layer, "head_attention_output", position, head)``); any number of them, overlapping or not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from iit.attribution.places import repeat_inputs
from iit.attribution.targets import Target, target_scores
from iit.coordinates import Coordinate
from iit.errors import ArgumentError, CoordinateError, TargetError
from iit.hooks import HookRun, Inputs, WriteOp, batch_size, call_model

__all__ = ["AtPConfig", "attribution_patching", "exact_patching_effects"]


@dataclass(frozen=True)
class AtPConfig:
    """Which estimator `attribution_patching` computes.

    Attributes:
        softmax_fix: AtP*'s exact attention probabilities for ``query`` / ``key`` coordinates
            (needs a `iit.TransformerInterventionable`).
        grad_drop: AtP*'s GradDrop (``L`` backward passes; the result is a magnitude).

    Raises:
        TypeError: an unknown field (dataclass construction).
    """

    softmax_fix: bool = False
    grad_drop: bool = False

    @classmethod
    def atp(cls) -> AtPConfig:
        """Plain AtP."""
        return cls()

    @classmethod
    def atp_star(cls) -> AtPConfig:
        """AtP*: the softmax fix and GradDrop."""
        return cls(softmax_fix=True, grad_drop=True)


def _wrap(model: Any) -> Any:
    """An `iit.Interventionable` for ``model`` (a transformer one when its family is known)."""
    from iit.interventionable import Interventionable

    if isinstance(model, Interventionable):
        return model
    if not isinstance(model, nn.Module):
        raise CoordinateError(f"attribution patching needs an nn.Module, got {type(model).__name__}")
    if getattr(getattr(model, "config", None), "model_type", None) is not None:
        from iit.transformers import TransformerInterventionable

        return TransformerInterventionable(model)
    return Interventionable(model)


def _is_transformer(wrapped: Any) -> bool:
    return hasattr(wrapped, "family") and hasattr(wrapped, "attention_modules")


@contextlib.contextmanager
def _hook_points(wrapped: Any, coordinates: Sequence[Any]) -> Iterator[None]:
    needs = any(getattr(c, "component", None) == "attention_probs" for c in coordinates)
    if not needs:
        yield
        return
    from iit.transformers.attention import attention_probs_hook_points

    with attention_probs_hook_points(wrapped.model, wrapped.attention_modules()):
        yield


def _scores(output: Any, metric: Target, rows: int) -> Tensor:
    scores = target_scores(output, metric)
    if scores.shape != (rows,):
        raise TargetError(
            f"the metric gives scores of shape {tuple(scores.shape)}, expected ({rows},) "
            "(one per input row)"
        )
    return scores


def _rows(inputs: Inputs) -> int:
    n = batch_size(inputs)
    if n is None:
        raise TargetError("the inputs have no batch dimension (no tensor with a dim 0)")
    return n


def _is_oom(err: RuntimeError) -> bool:
    return "out of memory" in str(err).lower()


def exact_patching_effects(
    model: Any,
    base: Inputs,
    source: Inputs,
    coordinates: Sequence[Any],
    metric: Target,
    *,
    max_rows: int | None = None,
) -> Tensor:
    """The exact effect of patching each coordinate alone from ``source`` into ``base``.

    ``effects[k, b] = m(base_b with coordinates[k] := source_b) - m(base_b)``. One source
    collect, one base forward, then the coordinates in chunks: a chunk of ``k`` coordinates is
    one forward on ``k`` stacked copies of the base (``k * batch`` rows), copy ``j`` patched at
    coordinate ``j`` only (row-restricted interchanges). Chunks hold at most ``max_rows`` rows
    (default: all coordinates in one forward); a chunk that runs out of memory is halved and
    retried.

    Args:
        model: an ``nn.Module`` (a Hugging Face model of a known family is wrapped in a
            `iit.TransformerInterventionable`) or an `iit.Interventionable`.
        base: the base inputs (e.g. ``input_ids [batch, seq]``).
        source: the source inputs, of the same batch size as ``base``.
        coordinates: where to patch (`iit.Coordinate` / `iit.TransformerCoordinate`).
        metric: one score per row of the model's output (see `iit.attribution.targets`).
        max_rows: most rows per forward.

    Returns:
        ``[len(coordinates), batch]``.

    Raises:
        CoordinateError: a coordinate that does not fit.
        TargetError: a bad metric, or inputs without a batch axis.
        ArgumentError: no coordinates or ``max_rows < batch``.
    """
    from iit.activations import Activations
    from iit.interventions import Interchange

    wrapped = _wrap(model)
    coordinates = list(coordinates)
    if not coordinates:
        raise ArgumentError("exact_patching_effects needs at least one coordinate")
    n = _rows(base)
    if max_rows is not None and max_rows < n:
        raise ArgumentError(f"max_rows={max_rows} is smaller than the batch ({n} rows)")
    per_chunk = len(coordinates) if max_rows is None else max(1, max_rows // n)
    with torch.no_grad():
        src = wrapped.collect(source, coordinates, detach=True)
        base_scores = _scores(call_model(wrapped.model, base), metric, n)
        effects: list[Tensor] = []
        start = 0
        while start < len(coordinates):
            chunk = coordinates[start : start + per_chunk]
            k = len(chunk)
            rows = torch.arange(k * n) // n
            interventions = [Interchange(c).where(rows == j) for j, c in enumerate(chunk)]
            sources = [Activations({c: torch.cat([src[c]] * k) for c in chunk})]
            try:
                out = wrapped.intervene(repeat_inputs(base, k), interventions, sources)
            except RuntimeError as err:
                if not _is_oom(err) or per_chunk == 1:
                    raise
                per_chunk = max(1, per_chunk // 2)
                continue
            effects.append(_scores(out, metric, k * n).view(k, n) - base_scores)
            start += k
    return torch.cat(effects)


def _site(coord: Coordinate) -> Coordinate:
    """The whole hidden state a coordinate indexes."""
    return Coordinate(coord.module, output=coord.output, io=coord.io)


def _gradient_pass(
    wrapped: Any,
    base: Inputs,
    metric: Target,
    sites: list[Coordinate],
    dropped: list[Coordinate],
    hook_points: Sequence[Any],
) -> tuple[dict[tuple, Tensor], dict[tuple, Tensor]]:
    """One base forward and backward: values and gradients of ``m`` at every site (whole
    tensors), with the gradient through ``dropped`` sites cut (GradDrop)."""
    n = _rows(base)
    leaves: dict[tuple, Tensor] = {}
    seen: dict[tuple, Tensor] = {}

    def make_leaf(key: tuple) -> Any:
        # ``value + 0`` with a zero leaf: the gradient reaches the leaf without cutting the
        # graph (a detached leaf would block the paths from earlier sites through this one)
        def apply(value: Tensor) -> Tensor:
            seen[key] = value.detach()
            leaves[key] = torch.zeros_like(value, requires_grad=True)
            return value + leaves[key]

        return apply

    writes = [WriteOp(s, make_leaf(_key(s)), name=f"AtP at {s.describe()}") for s in sites]
    writes += [WriteOp(s, lambda v: v.detach(), name=f"GradDrop at {s.describe()}") for s in dropped]
    with _hook_points(wrapped, hook_points), torch.enable_grad():
        run = HookRun(dict(wrapped.model.named_modules()), [], writes, stop_early=False)
        out = run.run(lambda: call_model(wrapped.model, base))
        scores = _scores(out, metric, n)
        keys = list(leaves)
        grads = torch.autograd.grad(scores.sum(), [leaves[k] for k in keys], allow_unused=True)
    values = {k: seen[k] for k in keys}
    gradients = {
        k: (g if g is not None else torch.zeros_like(values[k])) for k, g in zip(keys, grads)
    }
    return values, gradients


def _key(coord: Coordinate) -> tuple:
    return (coord.module, coord.io, coord.output)


def _row_sum(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).sum(1)


def _exact_probs(
    wrapped: Any, base: Inputs, src: Any, coordinates: list[Any], probs_of: dict[int, Any]
) -> dict[int, Tensor]:
    """Attention probabilities of each query / key coordinate's layer with that coordinate
    patched: ``{position in coordinates: [batch, heads, q, k]}``, all in one stacked forward."""
    n = _rows(base)
    k = len(coordinates)
    base_rep = repeat_inputs(base, k)
    rows = torch.arange(k * n) // n
    writes, reads = [], []
    for j, c in enumerate(coordinates):
        resolved = wrapped.resolve(c, base_rep)
        value = torch.cat([src[c]] * k)
        writes.append(WriteOp(resolved, lambda v, value=value: value.to(v.dtype), rows=rows == j))
        reads.append((j, wrapped.resolve(probs_of[j], base_rep)))
    with _hook_points(wrapped, list(probs_of.values())), torch.no_grad():
        run = HookRun(dict(wrapped.model.named_modules()), reads, writes, stop_early=False)
        run.run(lambda: call_model(wrapped.model, base_rep))
    return {j: run.values[j][j * n : (j + 1) * n] for j in range(k)}


def attribution_patching(
    model: Any,
    base: Inputs,
    source: Inputs,
    coordinates: Sequence[Any],
    metric: Target,
    config: AtPConfig | None = None,
) -> Tensor:
    """Estimated effects of patching each coordinate from ``source`` into ``base`` (AtP / AtP*).

    Args:
        model: as `exact_patching_effects`.
        base: the base inputs (e.g. ``input_ids [batch, seq]``).
        source: the source inputs, of the same batch size as ``base``.
        coordinates: where (any number; overlapping coordinates share one gradient).
        metric: one score per row (see `iit.attribution.targets`).
        config: `AtPConfig.atp` (default) or `AtPConfig.atp_star`.

    Returns:
        ``[len(coordinates), batch]`` estimates of ``exact_patching_effects`` (GradDrop:
        magnitudes).

    Raises:
        CoordinateError: a coordinate that does not fit, or the softmax fix without a transformer.
        TargetError: a bad metric.
        ArgumentError: no coordinates, or GradDrop on one layer.
    """
    config = config if config is not None else AtPConfig()
    wrapped = _wrap(model)
    coordinates = list(coordinates)
    if not coordinates:
        raise ArgumentError("attribution_patching needs at least one coordinate")
    resolved = [wrapped.resolve(c, base) for c in coordinates]
    with torch.no_grad():
        src = wrapped.collect(source, coordinates, detach=True)
    qk: list[int] = []
    probs_of: dict[int, Any] = {}
    if config.softmax_fix:
        if not _is_transformer(wrapped):
            raise CoordinateError("the AtP* softmax fix needs a Hugging Face transformer of a known family")
        from iit.transformers import TransformerCoordinate

        for i, c in enumerate(coordinates):
            if isinstance(c, TransformerCoordinate) and c.component in ("query", "key"):
                qk.append(i)
                probs_of[len(probs_of)] = TransformerCoordinate(c.layer, "attention_probs")
    probs_sites = {j: _site(wrapped.resolve(p, base)) for j, p in probs_of.items()}
    sites = list({_key(s): s for s in [*map(_site, resolved), *probs_sites.values()]}.values())
    exact_probs = (
        _exact_probs(wrapped, base, src, [coordinates[i] for i in qk], probs_of) if qk else {}
    )
    hook_points = [*coordinates, *probs_of.values()]

    def estimate(dropped: list[Coordinate]) -> Tensor:
        values, grads = _gradient_pass(wrapped, base, metric, sites, dropped, hook_points)
        out = []
        for i, (c, r) in enumerate(zip(coordinates, resolved)):
            key = _key(r)
            a_base, grad = r.index.read(values[key]), r.index.read(grads[key])
            if src[c].shape != a_base.shape:
                raise CoordinateError(
                    f"{r.describe()}: the source values have shape {tuple(src[c].shape)}, the base "
                    f"values {tuple(a_base.shape)}; patching needs the same shape (align positions "
                    "with Tokens or pad both runs to one length)"
                )
            if i in qk:
                j = qk.index(i)
                p_key = _key(probs_sites[j])
                out.append(_row_sum((exact_probs[j] - values[p_key]) * grads[p_key]))
            else:
                out.append(_row_sum((src[c].to(a_base.dtype) - a_base) * grad))
        return torch.stack(out)

    if not config.grad_drop:
        return estimate([])
    if not _is_transformer(wrapped):
        raise CoordinateError("GradDrop needs a Hugging Face transformer of a known family")
    from iit.transformers import TransformerCoordinate

    layers = wrapped.shape.n_layers
    if layers < 2:
        raise ArgumentError("GradDrop needs at least 2 layers (it averages over L - 1)")
    total: Tensor | None = None
    for layer in range(layers):
        dropped = [
            _site(wrapped.resolve(TransformerCoordinate(layer, comp), base))
            for comp in ("attention_output", "mlp_output")
        ]
        part = estimate(dropped).abs()
        total = part if total is None else total + part
    assert total is not None
    return total / (layers - 1)
