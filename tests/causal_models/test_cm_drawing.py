"""Tests of causal_models.drawing: layout depths against networkx's topological generations, the
matplotlib drawing, and DOT text parsed back with a small regex reader."""

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from causal_models import (  # noqa: E402
    CausalModel,
    CausalModelError,
    FiniteDomain,
    IntegerRange,
    RealDomain,
    UnknownVariableError,
    draw,
    layered_positions,
    standard,
    to_dot,
    write_dot,
)
from causal_models.drawing import short_domain  # noqa: E402

MODELS = [
    standard.digit_sum(),
    standard.digit_sum4(),
    standard.hierarchical_equality(),
    standard.pointer_value(),
    standard.price_tagging(),
    standard.boolean_circuit("A = a & b\nB = A | c\nC = a ^ B\nO = C & ~A"),
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_layers_are_networkx_topological_generations(model) -> None:
    pos = layered_positions(model, layer_gap=2.0, node_gap=0.5)
    for depth, generation in enumerate(nx.topological_generations(model.graph)):
        assert {pos[v][0] for v in generation} == {2.0 * depth}
        ys = sorted(pos[v][1] for v in generation)
        assert all(abs(b - a - 0.5) < 1e-9 for a, b in zip(ys, ys[1:], strict=False))
        assert abs(sum(ys)) < 1e-9  # centred
    assert set(pos) == set(model.variables)
    assert all(pos[u][0] < pos[v][0] for u, v in model.graph.edges)


def test_layer_order_follows_parents_height() -> None:
    m = standard.hierarchical_equality()
    pos = layered_positions(m)
    assert pos["WX"][1] > pos["YZ"][1]  # W, X are drawn above Y, Z
    with pytest.raises(CausalModelError, match="gaps must be positive"):
        layered_positions(m, layer_gap=0)


def test_draw_writes_an_image_with_labels_values_and_highlight(tmp_path) -> None:
    m = standard.digit_sum()
    values = m.run({v: torch.tensor([1, 2]) for v in "xyz"})
    ax = draw(m, values=values, row=1, highlight={"S": "red"}, show_domains=True)
    texts = {t.get_text() for t in ax.texts}
    assert "S\n{0..18}\n= 4" in texts and "O\n{0..27}\n= 6" in texts
    assert ax.get_title() == "digit sum"
    path = tmp_path / "dag.png"
    ax.figure.savefig(path)
    assert path.stat().st_size > 1000
    plt.close(ax.figure)
    fig, ax2 = plt.subplots()
    e = standard.hierarchical_equality(2)
    assert draw(e, ax=ax2, values=e.run({k: torch.zeros(1, 2) for k in "WXYZ"})) is ax2
    plt.close(fig)
    with pytest.raises(UnknownVariableError, match="did you mean 'S'"):
        draw(m, highlight={"SS": "red"})


def _parse_dot(text):
    nodes = dict(re.findall(r'^\s+"((?:[^"\\]|\\.)*)" \[label="((?:[^"\\]|\\.)*)"', text, re.M))
    edges = set(re.findall(r'^\s+"((?:[^"\\]|\\.)*)" -> "((?:[^"\\]|\\.)*)";', text, re.M))
    ranks = [re.findall(r'"([^"]*)";', g) for g in re.findall(r"\{ rank=same; (.*) \}", text)]
    return nodes, edges, ranks


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_dot_round_trips_nodes_edges_and_ranks(model) -> None:
    text = to_dot(model)
    assert text.startswith(f'digraph "{model.name}" {{\n  rankdir=LR;') and text.endswith("}\n")
    nodes, edges, ranks = _parse_dot(text)
    assert set(nodes) == set(model.variables)
    assert edges == set(model.graph.edges)
    for v, label in nodes.items():
        assert label == f"{v}\\n{model.domain(v)!r}"
    generations = [sorted(g) for g in nx.topological_generations(model.graph) if len(g) > 1]
    assert sorted(sorted(r) for r in ranks) == sorted(generations)


def test_short_domain() -> None:
    assert short_domain(IntegerRange(0, 10)) == "{0..9}"
    assert short_domain(FiniteDomain.boolean()) == "{F,T}"
    assert short_domain(FiniteDomain((1, 4))) == "{1,4}"
    assert short_domain(RealDomain((2,), -1.0, 1.0)) == "R^2 [-1.0,1.0]"
    assert short_domain(RealDomain()) == "R"


def test_dot_escapes_quotes_and_write_dot(tmp_path) -> None:
    m = CausalModel.from_mapping(
        {
            'a"b': ((), None, FiniteDomain.boolean()),
            "O": (('a"b',), lambda a: ~a, FiniteDomain.boolean()),
        },
        ["O"],
        name='q"name',
    )
    text = to_dot(m, rankdir="TB")
    assert 'digraph "q\\"name"' in text and '"a\\"b" -> "O";' in text and "rankdir=TB" in text
    assert write_dot(m, tmp_path / "m.dot").read_text() == to_dot(m)
    with pytest.raises(CausalModelError, match="rankdir must be"):
        to_dot(m, rankdir="XY")
