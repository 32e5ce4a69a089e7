"""draw_alignment writes a picture naming every aligned variable, module and index."""

from __future__ import annotations

from causal_models import standard
from iit import Alignment, Coordinate, Index
from iit.drawing import draw_alignment
from tests.conftest import ToyMLP


def test_alignment_svg_names_variables_modules_and_indices(tmp_path):
    model = standard.digit_sum(4)
    alignment = Alignment(model, {"S": Coordinate("layers.0", Index.dims(0, 4)), "z": Coordinate("layers.1", Index.dims(4, 8))})
    path = draw_alignment(alignment, ToyMLP(), tmp_path / "alignment.svg")
    svg = path.read_text()
    for text in ("layers.0", "layers.1", "head", "S [dims 0:4]", "z [dims 4:8]", "digit sum"):
        assert text in svg, text
    assert ">layers<" not in svg  # ModuleList containers are not drawn
    png = draw_alignment(alignment, ToyMLP(), tmp_path / "alignment.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_plots_leave_the_matplotlib_backend_alone(tmp_path) -> None:
    """A notebook's backend (inline there; ``pdf`` here, to differ from Agg) is not switched by the
    library's plots, and no pyplot figure is left open."""
    import matplotlib
    import matplotlib.pyplot as plt

    from iit.training.report import plot_history

    previous = matplotlib.get_backend()
    matplotlib.use("pdf")
    try:
        open_before = plt.get_fignums()
        metrics = tmp_path / "metrics.csv"
        metrics.write_text("epoch,step,val/task_acc,val/iia\n0,9,0.5,0.4\n1,19,0.9,0.8\n")
        assert plot_history({"run": metrics}, tmp_path / "history.png").stat().st_size > 0
        assert matplotlib.get_backend() == "pdf"
        assert plt.get_fignums() == open_before
    finally:
        matplotlib.use(previous)
