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
