"""Matplotlib figures of attributions, saved as files (non-interactive ``Agg`` canvas).

* `plot_token_heatmap`: token scores ``[rows, seq]`` (one row per method or example).
* `plot_contribution_matrix`: a token x token matrix ``[seq, seq]`` (ALTI, rollout).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from iit.errors import ArgumentError

__all__ = ["plot_contribution_matrix", "plot_token_heatmap"]


def _figure(width: float, height: float):  # noqa: ANN202 - matplotlib types are optional
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _labels(tokens: Sequence[str] | None, n: int, what: str) -> list[str]:
    if tokens is None:
        return [str(i) for i in range(n)]
    if len(tokens) != n:
        raise ArgumentError(f"{what}: got {len(tokens)} labels for {n} positions")
    return list(tokens)


def plot_token_heatmap(
    scores: Tensor,
    path: str | Path,
    *,
    tokens: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Save a heatmap of token scores ``[rows, seq]`` (or ``[seq]``) to ``path``.

    Colours are symmetric around 0 (diverging map). Returns the written path.

    Raises:
        ArgumentError: scores not 1-D/2-D, or label counts that do not match.
    """
    if scores.dim() == 1:
        scores = scores.unsqueeze(0)
    if scores.dim() != 2:
        raise ArgumentError(f"scores must be [rows, seq] or [seq], got {tuple(scores.shape)}")
    data = scores.detach().float().cpu().numpy()
    xs = _labels(tokens, data.shape[1], "tokens")
    ys = _labels(row_labels, data.shape[0], "row_labels")
    fig = _figure(max(4.0, 0.5 * len(xs) + 2), max(1.5, 0.45 * len(ys) + 1))
    ax = fig.add_subplot(1, 1, 1)
    bound = float(abs(data).max()) or 1.0
    image = ax.imshow(data, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(range(len(xs)), xs, rotation=60, ha="right")
    ax.set_yticks(range(len(ys)), ys)
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out


def plot_contribution_matrix(
    matrix: Tensor,
    path: str | Path,
    *,
    tokens: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Save a token x token matrix ``[seq, seq]`` (row = output, column = input) to ``path``.

    Raises:
        ArgumentError: matrix not square 2-D, or label count mismatch.
    """
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ArgumentError(f"matrix must be [seq, seq], got {tuple(matrix.shape)}")
    data = matrix.detach().float().cpu().numpy()
    labels = _labels(tokens, data.shape[0], "tokens")
    size = max(3.0, 0.45 * len(labels) + 2)
    fig = _figure(size + 1, size)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(data, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("input token")
    ax.set_ylabel("output position")
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out
