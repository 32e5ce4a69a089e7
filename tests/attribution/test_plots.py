"""Plots are written as image files; bad shapes raise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from matplotlib.image import imread

from iit.attribution import plot_contribution_matrix, plot_token_heatmap


def test_heatmap_and_matrix_files(tmp_path: Path) -> None:
    tokens = ["[CLS]", "a", "b", "[SEP]"]
    heat = plot_token_heatmap(
        torch.tensor([[0.1, -0.5, 0.9, 0.0], [0.0, 0.2, 0.3, 0.1]]),
        tmp_path / "heat.png",
        tokens=tokens,
        row_labels=["ig", "lrp"],
        title="t",
    )
    matrix = plot_contribution_matrix(torch.eye(4), tmp_path / "matrix.png", tokens=tokens)
    for path in (heat, matrix):
        image = imread(path)
        assert image.ndim == 3 and image.shape[0] > 50 and image.std() > 0


def test_plot_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 labels for 4 positions"):
        plot_token_heatmap(torch.zeros(4), tmp_path / "x.png", tokens=["a", "b", "c"])
    with pytest.raises(ValueError, match="seq, seq"):
        plot_contribution_matrix(torch.zeros(2, 3), tmp_path / "x.png")
    with pytest.raises(ValueError, match="rows, seq"):
        plot_token_heatmap(torch.zeros(1, 2, 3), tmp_path / "x.png")
