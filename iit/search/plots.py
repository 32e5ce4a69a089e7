"""Heatmaps of a search table (layer x position, layer x size, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iit.search.results import SearchResult

__all__ = ["plot_heatmap"]


def plot_heatmap(
    result: SearchResult,
    rows: str = "layer",
    columns: str = "size",
    *,
    value: str = "iia_test",
    featurizer: str | None = None,
    ax: Any = None,
    path: str | Path | None = None,
    title: str | None = None,
) -> Any:
    """Draw ``value`` over ``rows x columns`` (e.g. ``("layer", "position")`` or
    ``("layer", "size")``) with the numbers written in the cells.

    Args:
        result: a search result.
        rows: the table column on the vertical axis.
        columns: the table column on the horizontal axis.
        value: the column shown (default held-out IIA).
        featurizer: restrict to one featurizer (default: all, best by validation per point).
        ax: a matplotlib axes to draw into (default: a new figure).
        path: also save the figure there (PNG / SVG).
        title: the title (default: variable, featurizer and value).

    Returns:
        The matplotlib figure.

    Raises:
        NamingError: no cells with ``featurizer``.
        ArgumentError: an axis column that is empty for these cells.
    """
    import matplotlib.pyplot as plt

    grid = result.pivot(rows, columns, value, featurizer)
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.0 * grid.shape[1] + 2.4, 0.6 * grid.shape[0] + 1.6))
    else:
        fig = ax.figure
    image = ax.imshow(grid.to_numpy(dtype=float), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = float(grid.iat[i, j])
            if v == v:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=8)
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(r) for r in grid.index])
    ax.set_xlabel(columns)
    ax.set_ylabel(rows)
    variables = ", ".join(sorted(result.table["variable"].unique()))
    ax.set_title(title or f"{variables}: {value} ({featurizer or 'best featurizer'})", fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig
