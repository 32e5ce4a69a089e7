"""Draw an alignment: the causal model beside the network's modules, each high-level variable
linked to the coordinates that stand for it (seed 004's wish for communicating experiments)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from causal_models.drawing import layered_positions
from iit.alignment import Alignment
from iit.interventions import Interchange

__all__ = ["draw_alignment"]


def _module_column(model: nn.Module, needed: list[str], max_depth: int) -> list[str]:
    """Module paths to show, in forward-definition order: every module up to ``max_depth``
    dots deep plus every aligned module."""
    names = []
    for name, module in model.named_modules():
        if not name:
            continue
        if isinstance(module, (nn.ModuleList, nn.ModuleDict)) and name not in needed:
            continue
        if name.count(".") < max_depth or name in needed:
            names.append(name)
    return names


def draw_alignment(alignment: Alignment, model: nn.Module, path: str | Path, max_depth: int = 2) -> Path:
    """Save a picture of an alignment (SVG, PNG or PDF by the file suffix).

    Left: the causal DAG, layered by depth. Right: the network's modules (top-level and
    aligned ones) from input to output. A line joins each aligned variable to each of its
    coordinates, labelled with the index (e.g. ``[dims 0:4]``).

    Args:
        alignment: the alignment to draw.
        model: the network (plain or `iit.Interventionable`; its ``model`` is used).
        path: the output file.
        max_depth: module path depth shown besides aligned modules (``2`` shows ``layers.0``).

    Returns:
        The written path.
    """
    import matplotlib
    from matplotlib.figure import (
        Figure,  # no pyplot: the caller's backend and figures are left alone
    )

    network = getattr(model, "model", model)
    causal = alignment.causal_model
    positions = layered_positions(causal, layer_gap=1.0, node_gap=1.0)
    links: list[tuple[str, str, str]] = []
    for variable in alignment.variables:
        for iv in alignment.interventions(variable):
            coordinate: Any = iv.coordinate
            module = getattr(coordinate, "module", None) or str(coordinate)
            label = iv.where_text().removeprefix(module).lstrip(".").removeprefix("output")
            if type(iv) is not Interchange:
                label = f"{type(iv).__name__} {label}"
            links.append((variable, module, label))
    modules = _module_column(network, [m for _, m, _ in links], max_depth)
    depth = max(x for x, _ in positions.values()) or 1.0
    ys = [y for _, y in positions.values()]
    span = max(max(ys) - min(ys), 1.0)
    height = max(len(modules) * 0.45, span + 2, 4)
    fig = Figure(figsize=(11, height))
    ax = fig.subplots()
    # causal graph on the left, scaled into x in [0, 3]
    def place(v: str) -> tuple[float, float]:
        x, y = positions[v]
        return 3.0 * x / depth, height / 2 + (y / span) * (height * 0.6)

    for u, v in causal.graph.edges:
        (x0, y0), (x1, y1) = place(u), place(v)
        ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "-|>", "color": "0.3", "shrinkA": 14, "shrinkB": 14})
    aligned = set(alignment.variables)
    for v in causal.variables:
        x, y = place(v)
        ax.scatter([x], [y], s=900, color="#f4a261" if v in aligned else "#d9d9d9", zorder=3, edgecolors="k")
        ax.text(x, y, v, ha="center", va="center", fontsize=9, zorder=4)
    # network modules on the right, input at the bottom
    module_y = {m: 0.5 + i * (height - 1) / max(len(modules) - 1, 1) for i, m in enumerate(modules)}
    used = {m for _, m, _ in links}
    for m, y in module_y.items():
        ax.text(6.0, y, m, ha="left", va="center", fontsize=8, family="monospace",
                bbox={"boxstyle": "round", "fc": "#a8dadc" if m in used else "white", "ec": "0.5"})
    per_module: dict[str, int] = {}
    for variable, module, label in links:
        x0, y0 = place(variable)
        k = per_module.get(module, 0)
        per_module[module] = k + 1
        y1 = module_y[module] + 0.18 * k
        ax.annotate("", (5.9, y1), (x0, y0), arrowprops={
            "arrowstyle": "-|>", "color": "#e76f51", "lw": 1.2, "shrinkA": 14, "connectionstyle": "arc3,rad=-0.15"})
        ax.text(5.85, y1 + 0.05, f"{variable} {label}", ha="right", va="bottom", fontsize=7, color="#9d0208")
    ax.text(1.5, height + 0.2, f"causal model: {getattr(causal, 'name', '')}", ha="center", fontsize=10)
    ax.text(6.8, height + 0.2, f"network: {type(network).__name__}", ha="center", fontsize=10)
    ax.set_xlim(-0.6, 9.5)
    ax.set_ylim(-0.5, height + 0.7)
    ax.axis("off")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # keep text as text in SVG
        fig.savefig(path, bbox_inches="tight")
    return path
