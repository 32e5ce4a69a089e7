"""Read the top gradient path out of a max-product result and map it to modules, tokens, heads.

Path recovery walks *forward* from a source element: at each node it asks every consuming op
for the exact out-edges of the current element (`edge_weights`, a one-hot ``jvp``)
and follows the edge whose weight ⊗ the child's stored state reproduces the current value
(signed scalar graph: a negative edge switches between the child's max and min). At the op
granularity it first picks the branch (consumer op and argument slot) with the largest summed
contribution, then, inside the branch, the dominant term of the sum.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch.fx import Node

from iit.errors import ArgumentError, CoordinateError
from iit.semiring.backward import SemiringResult
from iit.semiring.kernels import signed_products
from iit.semiring.ops import edge_weights, packet_name

__all__ = ["PathStep", "GradientPath", "top_path", "best_source_index", "locate"]


@dataclass(frozen=True)
class PathStep:
    """One element on a gradient path.

    Attributes:
        node: FX node name.
        op: the node's ATen op (``"input"`` for the source).
        module: qualified name of the innermost module that computed it ("" = top level).
        index: the element's multi-index in the node's tensor.
        token: position of the element where the tensor has a sequence axis (else ``None``).
        head: attention head of the element where the tensor has a head axis (else ``None``).
        weight: local derivative of the edge entering this element (1.0 for the source).
        branch: ``"<consumer op> arg <k>"`` of the edge entering this element.

    Raises:
        TypeError: a missing or unknown field (dataclass construction); `top_path` builds
            the steps.
    """

    node: str
    op: str
    module: str
    index: tuple[int, ...]
    token: int | None
    head: int | None
    weight: float
    branch: str


@dataclass(frozen=True)
class GradientPath:
    """A path from one source element to the output.

    Attributes:
        value: the signed product of the edge weights (scalar granularity), or the op-level
            max-product value at the source (op granularity, where ``steps`` follows dominant
            terms).
        granularity: ``"scalar"`` or ``"op"`` (the `SemiringConfig` granularity).
        steps: the elements visited, from the source element to the output.

    Raises:
        TypeError: a missing or unknown field (dataclass construction); `top_path` builds
            paths.
    """

    value: float
    granularity: str
    steps: tuple[PathStep, ...]

    def modules(self) -> list[str]:
        """Modules visited, in order, consecutive repeats removed."""
        out: list[str] = []
        for s in self.steps:
            if s.module and (not out or out[-1] != s.module):
                out.append(s.module)
        return out

    def product(self) -> float:
        """Product of the step weights (equals ``value`` at the scalar granularity)."""
        p = 1.0
        for s in self.steps:
            p *= s.weight
        return p


def locate(
    shape: tuple[int, ...], index: tuple[int, ...], batch: int, seq: int | None, heads: int | None
) -> tuple[int | None, int | None]:
    """Token and head of an element, from the layouts of BERT/GPT-2-style tensors.

    Recognised layouts: ``[B, T, ...]``, ``[B*T, ...]``, ``[B, H, T, ...]``, ``[B, T, H, d]``,
    ``[B*H, T, ...]`` (``H`` needs ``heads``). Returns ``(None, None)`` for other layouts.
    """
    if seq is None or not shape:
        return None, None
    nd = len(shape)
    if (
        heads is not None
        and nd == 4
        and shape[0] == batch
        and shape[1] == heads
        and shape[2] == seq
    ):
        return index[2], index[1]
    if heads is not None and nd == 4 and shape[:3] == (batch, seq, heads):
        return index[1], index[2]
    if heads is not None and nd == 3 and shape[0] == batch * heads and shape[1] == seq:
        return index[1], index[0] % heads
    if nd >= 2 and shape[0] == batch and shape[1] == seq:
        return index[1], None
    if shape[0] == batch * seq and batch * seq != batch:
        return index[0] % seq, None
    return None, None


def best_source_index(result: SemiringResult, source: str, row: int = 0) -> tuple[int, ...]:
    """Multi-index (including the row) of the source element with the largest ``|value|``.

    Args:
        result: a semiring result (any semiring).
        source: a source name of ``result`` (a key of ``result.values``).
        row: the batch row to search in.

    Returns:
        ``(row, i1, ...)``, an index into the source's values ``[batch, ...]``.

    Raises:
        CoordinateError: unknown source or row out of range.
    """
    if source not in result.values:
        raise CoordinateError(f"unknown source {source!r}; sources: {list(result.values)}")
    v = result.values[source]
    if not 0 <= row < v.shape[0]:
        raise CoordinateError(f"row {row} out of range for {v.shape[0]} rows")
    flat = int(v[row].abs().reshape(-1).argmax())
    return (row, *(int(i) for i in torch.unravel_index(torch.tensor(flat), v.shape[1:])))


def _consumers(result: SemiringResult) -> dict[Node, list[tuple[Node, tuple[int, int | None]]]]:
    comp = result.computation
    out: dict[Node, list] = {}
    for node in comp.graph_module.graph.nodes:
        if node in comp.live and node in result.node_states:
            for slot, arg in comp.slots.get(node, []):
                out.setdefault(arg, []).append((node, slot))
    return out


@torch.no_grad()
def top_path(result: SemiringResult, source: str, index: tuple[int, ...]) -> GradientPath:
    """The top gradient path from one source element (``index`` includes the batch row).

    Args:
        result: a ``max_product`` result computed with ``record_path=True``.
        source: a source name of ``result``.
        index: the source element's multi-index into the source ``[batch, ...]`` (e.g. from
            `best_source_index`).

    Returns:
        The path from the source element to the output, one `PathStep` per element.

    Raises:
        ArgumentError: ``result`` is not a max-product result, or was computed with
            ``record_path=False``.
        CoordinateError: unknown source, or index outside its shape.

    Examples:
        Two linear layers without bias: ``h = W1 x``, ``y = W2 h``. The paths from ``x[0]``
        to ``y`` have products ``2 * 1`` (through ``h[0]``) and ``1 * 4`` (through ``h[1]``);
        the top path is the second one, while the gradient is their sum, 6.

        >>> import torch
        >>> from iit.semiring import SemiringConfig, semiring_backward, top_path
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.Linear(2, 1, bias=False))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.copy_(torch.tensor([[2.0, 0.0], [1.0, 3.0]]))
        ...     _ = net[1].weight.copy_(torch.tensor([[1.0, 4.0]]))
        >>> x = torch.tensor([[1.0, 1.0]])
        >>> result = semiring_backward(net, x, 0, SemiringConfig(semiring="max_product"))
        >>> result.values["input"]
        tensor([[ 4., 12.]])
        >>> path = top_path(result, "input", (0, 0))
        >>> path.value, path.product()
        (4.0, 4.0)
        >>> [(step.module, step.index, step.weight) for step in path.steps]
        [('', (0, 0), 1.0), ('0', (0, 1), 1.0), ('1', (0, 0), 4.0), ('', (0,), 1.0), ('', (), 1.0)]

        The last two steps are the target (column 0 of the output) and the sum over rows.
    """
    if result.config.semiring != "max_product":
        raise ArgumentError(f"top_path needs a max_product result, got {result.config.semiring!r}")
    if not result.config.record_path:
        raise ArgumentError(
            "top_path needs the node states, but this result was computed with "
            "record_path=False; rerun with SemiringConfig(record_path=True)"
        )
    comp = result.computation
    if source not in comp.sources:
        raise CoordinateError(f"unknown source {source!r}; sources: {list(comp.sources)}")
    node = comp.sources[source]
    shape = tuple(comp.env[node].shape)
    if len(index) != len(shape) or any(not 0 <= i < n for i, n in zip(index, shape)):
        raise CoordinateError(f"index {index} is outside source {source!r} of shape {shape}")
    batch = shape[0]
    seq = shape[1] if len(shape) >= 2 else None
    heads = result.config.num_heads
    consumers = _consumers(result)
    scalar = result.config.granularity == "scalar"
    flat = int(torch.tensor(index) @ torch.tensor(torch.ones(shape).stride()))
    states = result.node_states
    mode = 0
    if scalar:
        mx, mn = states[node][0].reshape(-1)[flat], states[node][1].reshape(-1)[flat]
        mode = 0 if mx >= -mn else 1
    value = float(states[node][mode].reshape(-1)[flat]) if node in states else 0.0

    def step(n: Node, f: int, weight: float, branch: str) -> PathStep:
        t = comp.env[n]
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(f), t.shape))
        tok, head = locate(tuple(t.shape), idx, batch, seq, heads)
        if n.op == "placeholder":
            op = "input"
        elif n.target is operator.getitem:
            op = f"{packet_name(n.args[0].target)}[{n.args[1]}]"
        else:
            op = packet_name(n.target)
        return PathStep(n.name, op, comp.modules.get(n, ""), idx, tok, head, weight, branch)

    steps = [step(node, flat, 1.0, "")]
    while node is not comp.root and node in states:
        best: tuple[float, Node, int, float, int, str] | None = None
        for consumer, slot in consumers.get(node, []):
            call = comp.call(consumer)
            w = edge_weights(call, slot, flat).reshape(-1)
            cs = [t.reshape(-1) for t in states[consumer]]
            label = f"{call.name} arg {slot[0]}" + (f"[{slot[1]}]" if slot[1] is not None else "")
            if scalar:
                hi, lo = signed_products(w, cs[0], cs[1])
                cand = hi if mode == 0 else -lo
                cand = torch.where(w != 0, cand, torch.full_like(cand, -torch.inf))
                o = int(cand.argmax())
                score = float(cand[o])
            else:
                terms = w.abs() * cs[0]
                o = int(terms.argmax())
                score = float(terms.sum())
            if best is None or score > best[0]:
                best = (score, consumer, o, float(w[o]), slot[0], label)
        if best is None or best[0] == -torch.inf:
            break
        _, node, flat, weight, _, label = best
        if scalar and weight < 0:
            mode = 1 - mode
        steps.append(step(node, flat, weight, label))
    return GradientPath(value, result.config.granularity, tuple(steps))
