"""Inspection of causal models: layered layout, matplotlib drawing and Graphviz DOT export.

`layered_positions` is the layout used by `draw`; other code (e.g. drawing an alignment beside a
neural model) can reuse it. `KIND_COLORS` holds the fill colour of each variable kind.
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

KIND_COLORS: dict[str, str] = {
    "input": "#a6cee3",
    "constant": "#dddddd",
    "intermediate": "#fdbf6f",
    "output": "#b2df8a",
}
"""Fill colour of each variable kind (``"input"``, ``"constant"``, ``"intermediate"``, ``"output"``)
in `draw` and `to_dot`."""


def short_domain(domain: Domain) -> str:
    """Compact text for a domain: ``{0..9}``, ``{F,T}``, ``{1,4,9}``, ``R^2 [-1,1]``.

    Args:
        domain: The domain; an object that is not a `FiniteDomain`, `IntegerRange` or `RealDomain`
            is shown by its ``repr``.

    Returns:
        The text.

    Raises:
        TypeError: not called with exactly one argument (any object is accepted and shown).

    Examples:
        >>> from causal_models import FiniteDomain, IntegerRange, RealDomain
        >>> short_domain(IntegerRange(0, 10)), short_domain(FiniteDomain.boolean())
        ('{0..9}', '{F,T}')
        >>> short_domain(RealDomain((2,), -1.0, 1.0))
        'R^2 [-1.0,1.0]'
    """
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
    """Node positions for a left-to-right drawing, one column per depth.

    ``x = depth * layer_gap`` (the longest path from a root); the variables of one layer are spread
    ``node_gap`` apart around ``y = 0``, ordered by the mean height of their parents (fewer
    crossings), then topologically.

    Args:
        model: The causal model.
        layer_gap: Horizontal distance between layers.
        node_gap: Vertical distance between the variables of one layer.

    Returns:
        ``{var: (x, y)}`` for every variable.

    Raises:
        CausalModelError: ``layer_gap`` or ``node_gap`` is not positive.

    Examples:
        >>> from causal_models import standard
        >>> layered_positions(standard.digit_sum())
        {'x': (0.0, 1.0), 'y': (0.0, 0.0), 'z': (0.0, -1.0), 'S': (1.0, 0.0), 'O': (2.0, 0.0)}
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
    """Draw the DAG layered by depth with networkx and matplotlib.

    Nodes are filled by kind (`KIND_COLORS`) and placed by `layered_positions`.

    Args:
        model: The causal model.
        ax: Axes to draw on (default: a new figure).
        values: Optional ``{var: [batch, *shape]}`` (e.g. the output of `CausalModel.run`); row
            ``row`` is written under each variable name.
        row: Which example of ``values`` to show.
        highlight: ``{var: colour}`` overriding the fill colour (e.g. intervened variables).
        show_domains: Write each variable's domain (`short_domain`) under its name.

    Returns:
        The ``matplotlib.axes.Axes`` drawn on.

    Raises:
        UnknownVariableError: ``highlight`` or ``values`` names an unknown variable.
        IndexError: ``row`` is outside the batch of ``values``.

    Examples:
        >>> import matplotlib.pyplot as plt
        >>> import torch
        >>> from causal_models import standard
        >>> m = standard.digit_sum()
        >>> values = m.run({"x": torch.tensor([1]), "y": torch.tensor([2]), "z": torch.tensor([3])})
        >>> ax = draw(m, values=values, highlight={"S": "tomato"}, show_domains=True)
        >>> ax.get_title()
        'digit sum'
        >>> plt.close(ax.figure)
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
    """``text`` as a quoted DOT identifier (backslashes, quotes and newlines escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(model: CausalModel, rankdir: str = "LR") -> str:
    """The DAG as Graphviz DOT text (no graphviz or pydot needed).

    Inputs are ellipses, outputs double circles, others boxes, filled by kind (`KIND_COLORS`);
    labels hold name and domain; variables of equal depth share a rank.

    Args:
        model: The causal model.
        rankdir: Graphviz layout direction: ``"LR"``, ``"TB"``, ``"RL"`` or ``"BT"``.

    Returns:
        The DOT text, ending with a newline.

    Raises:
        CausalModelError: ``rankdir`` is not one of ``LR``, ``TB``, ``RL``, ``BT``.

    Examples:
        >>> from causal_models import standard
        >>> dot = to_dot(standard.digit_sum())
        >>> dot.splitlines()[:2]
        ['digraph "digit sum" {', '  rankdir=LR;']
        >>> [line.strip() for line in dot.splitlines() if "->" in line]
        ['"x" -> "S";', '"y" -> "S";', '"S" -> "O";', '"z" -> "O";']
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
    """Write `to_dot` to ``path``.

    Args:
        model: The causal model.
        path: The file to write (overwritten if it exists).
        rankdir: As in `to_dot`.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        CausalModelError: ``rankdir`` is not one of ``LR``, ``TB``, ``RL``, ``BT``.
        OSError: the file cannot be written (e.g. its folder does not exist).
    """
    path = Path(path)
    path.write_text(to_dot(model, rankdir))
    return path
