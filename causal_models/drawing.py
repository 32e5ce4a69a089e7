"""Inspection of causal models: layered layout, matplotlib drawing and Graphviz DOT export.

:func:`layered_positions` is the layout used by :func:`draw`; other code (e.g. drawing an alignment
beside a neural model) can reuse it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

from causal_models.domains import Domain, FiniteDomain, IntegerRange, RealDomain
from causal_models.errors import CausalModelError
from causal_models.model import CausalModel

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["short_domain", "layered_positions", "draw", "to_dot", "write_dot", "KIND_COLORS"]

#: Fill colour of each variable kind in :func:`draw` and :func:`to_dot`.
KIND_COLORS: dict[str, str] = {
    "input": "#a6cee3",
    "constant": "#dddddd",
    "intermediate": "#fdbf6f",
    "output": "#b2df8a",
}


def short_domain(domain: Domain) -> str:
    """Compact text for a domain: ``{0..9}``, ``{F,T}``, ``{1,4,9}``, ``R^2 [-1,1]``."""
    if isinstance(domain, IntegerRange):
        return f"{{{domain.low}..{domain.high - 1}}}"
    if isinstance(domain, FiniteDomain):
        if domain.values == (False, True):
            return "{F,T}"
        return "{" + ",".join(str(v) for v in domain.values) + "}"
    if isinstance(domain, RealDomain):
        dims = "x".join(str(s) for s in domain.shape)
        text = "R" + (f"^{dims}" if dims else "")
        if domain.low is not None or domain.high is not None:
            text += f" [{domain.low},{domain.high}]"
        return text
    return repr(domain)


def layered_positions(
    model: CausalModel, layer_gap: float = 1.0, node_gap: float = 1.0
) -> dict[str, tuple[float, float]]:
    """Positions ``{var: (x, y)}`` with ``x = depth * layer_gap`` (longest path from a root) and the
    variables of one layer spread ``node_gap`` apart around ``y = 0``, ordered by the mean height of
    their parents (fewer crossings), then topologically.

    Raises
    ------
    CausalModelError
        If a gap is not positive.
    """
    if layer_gap <= 0 or node_gap <= 0:
        raise CausalModelError(f"gaps must be positive, got {layer_gap}, {node_gap}")
    layers: dict[int, list[str]] = {}
    for v in model.variables:
        layers.setdefault(model.depth(v), []).append(v)
    pos: dict[str, tuple[float, float]] = {}
    for depth in sorted(layers):
        members = layers[depth]
        if depth > 0:

            def key(v: str) -> float:
                ps = model.parents(v)
                return -sum(pos[p][1] for p in ps) / len(ps) if ps else 0.0

            members = sorted(members, key=key)
        k = len(members)
        for i, v in enumerate(members):
            pos[v] = (depth * layer_gap, ((k - 1) / 2 - i) * node_gap)
    return pos


def draw(
    model: CausalModel,
    ax: Axes | None = None,
    values: Mapping[str, Tensor] | None = None,
    row: int = 0,
    highlight: Mapping[str, str] | None = None,
    show_domains: bool = False,
) -> Axes:
    """Draw the DAG layered by depth with networkx + matplotlib.

    Parameters
    ----------
    model
        The model.
    ax
        Axes to draw on (default: a new figure).
    values
        Optional ``{var: [batch, ...]}`` (e.g. the output of :meth:`CausalModel.run`); row ``row``
        is written under each variable name.
    row
        Which example of ``values`` to show.
    highlight
        ``{var: colour}`` overriding the fill colour (e.g. intervened variables).
    show_domains
        Write each variable's domain (:func:`short_domain`) under its name.

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    UnknownVariableError
        If ``highlight`` or ``values`` name an unknown variable.
    """
    import matplotlib.pyplot as plt
    import networkx as nx

    for var in [*(highlight or {}), *(values or {})]:
        model.domain(var)
    if ax is None:
        _, ax = plt.subplots(
            figsize=(1.8 * (1 + max(model.depth(v) for v in model.variables)), 3.5)
        )
    pos = layered_positions(model)
    labels = {}
    for v in model.variables:
        text = v
        if show_domains:
            text += f"\n{short_domain(model.domain(v))}"
        if values is not None and v in values:
            val = values[v][row]
            shown = val.item() if val.dim() == 0 else [round(x, 3) for x in val.flatten().tolist()]
            text += f"\n= {shown}"
        labels[v] = text
    colors = [(highlight or {}).get(v, KIND_COLORS[model.kind(v)]) for v in model.variables]
    nx.draw_networkx(
        model.graph,
        pos=pos,
        ax=ax,
        nodelist=model.variables,
        node_color=colors,
        labels=labels,
        node_size=1400,
        font_size=8,
        arrowsize=14,
        edgecolors="#444444",
    )
    ax.set_title(model.name)
    ax.set_axis_off()
    return ax


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(model: CausalModel, rankdir: str = "LR") -> str:
    """The DAG as Graphviz DOT text (no graphviz/pydot needed).

    Inputs are ellipses, outputs double circles, others boxes; labels hold name and domain; variables
    of equal depth share a rank.

    Raises
    ------
    CausalModelError
        If ``rankdir`` is not one of ``LR``, ``TB``, ``RL``, ``BT``.
    """
    if rankdir not in ("LR", "TB", "RL", "BT"):
        raise CausalModelError(f"rankdir must be LR, TB, RL or BT, got {rankdir!r}")
    shapes = {
        "input": "ellipse",
        "constant": "box",
        "intermediate": "box",
        "output": "doublecircle",
    }
    lines = [f"digraph {_q(model.name)} {{", f"  rankdir={rankdir};"]
    for v in model.variables:
        kind = model.kind(v)
        label = f"{v}\n{model.domain(v)!r}"
        lines.append(
            f"  {_q(v)} [label={_q(label)}, shape={shapes[kind]}, style=filled, "
            f"fillcolor={_q(KIND_COLORS[kind])}];"
        )
    layers: dict[int, list[str]] = {}
    for v in model.variables:
        layers.setdefault(model.depth(v), []).append(v)
    for members in layers.values():
        if len(members) > 1:
            lines.append("  { rank=same; " + " ".join(_q(v) + ";" for v in members) + " }")
    for v in model.variables:
        for p in model.parents(v):
            lines.append(f"  {_q(p)} -> {_q(v)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_dot(model: CausalModel, path: str | Path, rankdir: str = "LR") -> Path:
    """Write :func:`to_dot` to ``path``; returns the path."""
    path = Path(path)
    path.write_text(to_dot(model, rankdir))
    return path
