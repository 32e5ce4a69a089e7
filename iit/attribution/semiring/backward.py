"""Semiring backpropagation on ordinary PyTorch models (Du et al., ACL 2023), one reverse walk.

The model and target are traced to an ATen graph (:mod:`.trace`), every node's value is stored,
and the nodes are visited in reverse topological order; each op passes its output's semiring
state to its arguments through the rules of :mod:`.ops`, and fan-in is combined with ⊕.

Granularity (``SemiringConfig.granularity``) only changes ``max_product``:

* ``"scalar"``: the true semiring over the scalar computation graph (nodes = tensor elements,
  one edge per (input element, output element, argument slot), weight = partial derivative).
  The largest and the smallest signed path product are tracked side by side.
* ``"op"``: the released brunoflow code's convention: inside an op, contributions are summed
  (a matmul's inner index, broadcasting) with absolute local derivatives, and ``max`` is taken
  only between op branches (e.g. query / key / value / residual uses of one tensor).

``real`` and ``entropy`` always use the scalar graph (``+`` is granularity-free).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import get_args

import torch
from torch import Tensor, nn
from torch.fx import Node

from iit.attribution.semiring.ops import slot_vjp
from iit.attribution.semiring.semirings import (
    Granularity,
    SemiringName,
    State,
    make_semiring,
)
from iit.attribution.semiring.trace import TracedComputation, trace_computation
from iit.attribution.targets import Target

__all__ = [
    "SemiringConfig",
    "SemiringResult",
    "SemiringBackprop",
    "semiring_backward",
    "gradient_graph_entropy",
]


@dataclass(frozen=True)
class SemiringConfig:
    """What to compute.

    Attributes:
        semiring: ``"real"`` (the gradient), ``"max_product"`` (top gradient path) or
            ``"entropy"`` (gradient-graph entropy).
        granularity: ``"scalar"`` or ``"op"`` (only for ``max_product``; see module docs).
        sources: input keys or module names where paths start; empty = all float inputs.
        num_heads: attention heads, used only to map path nodes to heads.
    """

    semiring: SemiringName = "max_product"
    granularity: Granularity = "scalar"
    sources: tuple[str, ...] = ()
    num_heads: int | None = None

    def __post_init__(self) -> None:
        for field_name, value, valid in (
            ("semiring", self.semiring, get_args(SemiringName)),
            ("granularity", self.granularity, get_args(Granularity)),
        ):
            if value not in valid:
                close = difflib.get_close_matches(str(value), valid)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"{field_name} must be one of {list(valid)}, got {value!r}{hint}")
        if not isinstance(self.sources, tuple):
            raise TypeError(f"sources must be a tuple of names, got {type(self.sources).__name__}")
        if self.num_heads is not None and self.num_heads < 1:
            raise ValueError(f"num_heads must be a positive int or None, got {self.num_heads}")
        make_semiring(self.semiring, self.granularity)  # validates the combination


@dataclass
class SemiringResult:
    """Per-source results of one semiring backward pass.

    Attributes:
        config: the configuration used (``config.granularity`` says which graph).
        values: source name -> tensor shaped like the source:
            ``real``: ``∂y/∂x``; ``max_product`` scalar: the signed product of the path with the
            largest absolute product (0 where no path); ``max_product`` op: the op-level best
            branch-selection value (``>= 0``); ``entropy``: ``H`` in nats (0 where ``Z = 0``).
        aux: extra per-source tensors: ``max``/``min`` (signed max-product), ``Z``/``E``
            (entropy: ``Z`` = abs-linearised gradient, ``E = -Σ p log p``).
        computation: the traced computation (node values, modules) used for path recovery.
        node_states: every node's state (kept only for ``max_product``).
    """

    config: SemiringConfig
    values: dict[str, Tensor]
    aux: dict[str, dict[str, Tensor]]
    computation: TracedComputation
    node_states: dict[Node, State] = field(default_factory=dict)


def _walk(
    comp: TracedComputation, config: SemiringConfig, live_bytes: list[int] | None = None
) -> dict[Node, State]:
    """Reverse walk; if ``live_bytes`` is given, appends the bytes of live states per node."""
    semiring = make_semiring(config.semiring, config.granularity)
    keep_all = config.semiring == "max_product"
    root_value = comp.env[comp.root]
    states: dict[Node, State] = {comp.root: semiring.one(root_value.shape, root_value)}
    keep = set(comp.sources.values())
    for node in reversed(list(comp.graph_module.graph.nodes)):
        if node not in states or node.op != "call_function":
            continue
        out_state = states[node]
        call = comp.call(node)
        for slot, arg in comp.slots[node]:
            if arg not in comp.live:
                continue
            contribution = slot_vjp(call, slot, out_state, semiring)
            prev = states.get(arg)
            states[arg] = contribution if prev is None else semiring.combine(prev, contribution)
        if not keep_all and node not in keep:
            del states[node]
        if live_bytes is not None:
            live_bytes.append(sum(t.nbytes for st in states.values() for t in st))
    return states


def _finish(
    comp: TracedComputation, config: SemiringConfig, states: dict[Node, State]
) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    semiring = make_semiring(config.semiring, config.granularity)
    values: dict[str, Tensor] = {}
    aux: dict[str, dict[str, Tensor]] = {}
    for name, node in comp.sources.items():
        x = comp.env[node]
        state = states.get(node, semiring.zero(x.shape, x))
        if config.semiring == "real" or (
            config.semiring == "max_product" and config.granularity == "op"
        ):
            values[name] = state[0]
            aux[name] = {}
        elif config.semiring == "max_product":
            mx, mn = state
            best = torch.where(mx >= -mn, mx, mn)
            values[name] = torch.where(torch.isinf(best), torch.zeros_like(best), best)
            aux[name] = {"max": mx, "min": mn}
        else:
            z, e = state
            safe = torch.where(z > 0, z, torch.ones_like(z))
            h = torch.where(z > 0, e / safe + torch.log(safe), torch.zeros_like(z))
            values[name] = h
            aux[name] = {"Z": z, "E": e}
    return values, aux


def semiring_backward(
    model: nn.Module,
    inputs: Tensor | Mapping[str, Tensor],
    target: Target,
    config: SemiringConfig,
) -> SemiringResult:
    """Run one semiring backward pass of ``y = Σ_rows target(model(inputs))``.

    Args:
        model: an ``nn.Module`` in eval mode (rows must not interact); any device, the pass
            runs where the inputs are. Hugging Face models need ``attn_implementation="eager"``.
        inputs: one tensor (``model(x)``) or keyword inputs (``model(**inputs)``).
        target: int class, ``Tensor[batch]`` of classes, or callable ``output -> [batch]``.
        config: semiring, granularity, sources.

    Returns:
        :class:`SemiringResult` with one tensor per source, shaped like the source
        (e.g. ``[batch, seq, d_model]`` for ``sources=("embeddings.word_embeddings",)``).

    Raises:
        UnsupportedOpError: an op on the gradient graph has no rule (the message names it).
        CoordinateError: a source name is neither an input key nor a module.
        TargetError: the target does not fit the output or does not depend on the sources.

    Examples:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(5, 3)
        >>> res = semiring_backward(net, x, 1, SemiringConfig(semiring="real"))
        >>> grad, = torch.autograd.grad(net(x.requires_grad_())[:, 1].sum(), x)
        >>> torch.allclose(res.values["input"], grad, atol=1e-6)
        True
    """
    comp = trace_computation(model, inputs, target, config.sources)
    with torch.no_grad():
        states = _walk(comp, config)
        values, aux = _finish(comp, config, states)
    kept = states if config.semiring == "max_product" else {}
    return SemiringResult(config, values, aux, comp, kept)


class SemiringBackprop:
    """Attribution-style wrapper: ``SemiringBackprop(model, config).attribute(inputs, target)``.

    ``attribute`` returns the value tensor of the first source (see :class:`SemiringResult`);
    ``last_result`` keeps the full result (all sources, aux tensors, path recovery).
    """

    def __init__(self, model: nn.Module, config: SemiringConfig) -> None:
        self.model = model
        self.config = config
        self.last_result: SemiringResult | None = None

    def attribute(self, inputs: Tensor | Mapping[str, Tensor], target: Target) -> Tensor:
        """Values for the first source, shaped like it. Raises as :func:`semiring_backward`."""
        self.last_result = semiring_backward(self.model, inputs, target, self.config)
        return next(iter(self.last_result.values.values()))


def gradient_graph_entropy(
    model: nn.Module,
    inputs: Tensor | Mapping[str, Tensor],
    target: Target,
    sources: tuple[str, ...] = (),
) -> dict[str, Tensor]:
    """Gradient-graph entropy ``H`` (nats) per source element, via the expectation semiring.

    Returns:
        source name -> tensor shaped like the source. Raises as :func:`semiring_backward`.
    """
    config = SemiringConfig(semiring="entropy", sources=sources)
    return semiring_backward(model, inputs, target, config).values
