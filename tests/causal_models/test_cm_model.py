"""Tests of causal_models.model: construction, validation and structure queries."""

import networkx as nx
import pytest
import torch

from causal_models import (
    CausalModel,
    FiniteDomain,
    GraphError,
    IntegerRange,
    RealDomain,
    UnknownVariableError,
    Variable,
    standard,
)

D = IntegerRange(0, 10)


def add(a, b):
    return a + b


def spec_digit_sum():
    return {
        "x": ((), None, D),
        "y": ((), None, D),
        "z": ((), None, D),
        "S": (("x", "y"), add, IntegerRange(0, 19)),
        "O": (("S", "z"), add, IntegerRange(0, 28)),
    }


def test_structure_of_digit_sum() -> None:
    m = CausalModel.from_mapping(spec_digit_sum(), ["O"], name="ds")
    assert m.inputs == ["x", "y", "z"]
    assert m.outputs == ["O"]
    assert m.variables == ["x", "y", "z", "S", "O"]
    assert m.intermediates == ["S"]
    assert m.parents("O") == ("S", "z")
    assert m.children("x") == ["S"]
    assert m.domain("S") == IntegerRange(0, 19)
    assert [m.depth(v) for v in m.variables] == [0, 0, 0, 1, 2]
    assert m.ancestors("O") == {"x", "y", "z", "S"}
    assert m.descendants("y") == {"S", "O"}
    assert m.has_path("x", "O") and not m.has_path("z", "S") and m.has_path("S", "S")
    assert [m.kind(v) for v in m.variables] == ["input"] * 3 + ["intermediate", "output"]


def test_graph_is_a_frozen_networkx_dag_with_node_attributes() -> None:
    m = CausalModel.from_mapping(spec_digit_sum(), ["O"])
    g = m.graph
    assert isinstance(g, nx.DiGraph) and nx.is_directed_acyclic_graph(g)
    assert set(g.edges) == {("x", "S"), ("y", "S"), ("S", "O"), ("z", "O")}
    assert g.nodes["S"]["domain"] == IntegerRange(0, 19) and g.nodes["S"]["kind"] == "intermediate"
    assert g.nodes["O"]["depth"] == 2
    with pytest.raises(nx.NetworkXError):
        g.add_node("q")


def test_variables_are_a_topological_order_for_random_declaration_orders() -> None:
    spec = spec_digit_sum()
    for perm in ([4, 3, 2, 1, 0], [3, 0, 4, 1, 2]):
        keys = list(spec)
        m = CausalModel.from_mapping({keys[i]: spec[keys[i]] for i in perm}, ["O"])
        order = {v: i for i, v in enumerate(m.variables)}
        assert all(order[u] < order[v] for u, v in m.graph.edges)


def test_from_graph_equals_from_mapping() -> None:
    g = nx.DiGraph(name="ds graph")
    for v in "xyz":
        g.add_node(v, domain=D)
    g.add_node("S", domain=IntegerRange(0, 19), mechanism=add)
    g.add_node("O", domain=IntegerRange(0, 28), mechanism=lambda z, s: s + z, parents=("z", "S"))
    g.add_edges_from([("x", "S"), ("y", "S"), ("S", "O"), ("z", "O")])
    m = CausalModel.from_graph(g, ["O"])
    assert m.name == "ds graph" and m.parents("O") == ("z", "S")
    ref = CausalModel.from_mapping(spec_digit_sum(), ["O"])
    inputs = {v: torch.randint(0, 10, (50,)) for v in "xyz"}
    assert torch.equal(m.run(inputs)["O"], ref.run(inputs)["O"])


def test_from_graph_errors() -> None:
    g = nx.DiGraph()
    g.add_node("x", domain=D)
    g.add_node("S")
    g.add_edge("x", "S")
    with pytest.raises(GraphError, match="node 'S' has no 'domain'"):
        CausalModel.from_graph(g, ["S"])
    g.nodes["S"].update(domain=D, mechanism=lambda x: x, parents=("x", "q"))
    with pytest.raises(GraphError, match="must name exactly its predecessors"):
        CausalModel.from_graph(g, ["S"])
    with pytest.raises(GraphError, match="expected a networkx.DiGraph"):
        CausalModel.from_graph(nx.Graph(), ["S"])


def test_cycle_is_named() -> None:
    spec = spec_digit_sum()
    spec["S"] = (("x", "O"), add, IntegerRange(0, 19))
    with pytest.raises(GraphError, match="cycle: (S -> O -> S|O -> S -> O)"):
        CausalModel.from_mapping(spec, ["O"])


def test_missing_parent_lists_nearest_names() -> None:
    spec = spec_digit_sum()
    spec["O"] = (("S1", "z"), add, IntegerRange(0, 28))
    with pytest.raises(GraphError, match="parent 'S1' of 'O' is not a variable.*did you mean 'S'"):
        CausalModel.from_mapping(spec, ["O"])


def test_unknown_output_lists_nearest_names() -> None:
    with pytest.raises(
        UnknownVariableError, match="unknown output variable 'OO'.*did you mean 'O'"
    ):
        CausalModel.from_mapping(spec_digit_sum(), ["OO"])


def test_output_not_reachable_from_inputs() -> None:
    spec = spec_digit_sum()
    spec["c"] = ((), lambda: 3, D)
    spec["K"] = (("c",), lambda c: c + 1, IntegerRange(0, 11))
    with pytest.raises(GraphError, match="output 'K' is not reachable from any input"):
        CausalModel.from_mapping(spec, ["O", "K"])


def test_constant_variables_are_expanded_to_the_batch() -> None:
    spec = spec_digit_sum()
    spec["c"] = ((), lambda: 3, D)
    spec["T"] = (("O", "c"), add, IntegerRange(0, 40))
    m = CausalModel.from_mapping(spec, ["T"])
    assert m.kind("c") == "constant" and "c" not in m.inputs
    x = torch.tensor([1, 2])
    out = m.run({"x": x, "y": x, "z": x})
    assert out["c"].tolist() == [3, 3] and out["T"].tolist() == [6, 9]


@pytest.mark.parametrize(
    "spec, outputs, match",
    [
        ({"x": ((), None, D), "x2": (("x",), None, D)}, ["x2"], "has parents .* but no mechanism"),
        ({"x": ((), None, D), "S": (("x", "x"), add, D)}, ["S"], "repeat a name"),
        ({"x": ((), None, D), "S": ("x", add, D)}, ["S"], "got the string 'x'"),
        ({"x": ((), None, D), "S": (("x",), 3, D)}, ["S"], "not callable"),
        ({"x": ((), None, "ints")}, ["x"], "must be a Domain"),
        ({"x": ((), None)}, ["x"], r"\(parents, mechanism, domain\[, vectorized\]\)"),
        ({"x": ((), None, D, "no")}, ["x"], "vectorized flag"),
        ({"x": ((), None, D)}, [], "non-empty sequence"),
        ({"x": ((), None, D)}, ["x", "x"], "outputs repeat"),
        ({"c": ((), lambda: 1, D)}, ["c"], "no input"),
    ],
)
def test_invalid_specs(spec, outputs, match: str) -> None:
    with pytest.raises(GraphError, match=match):
        CausalModel.from_mapping(spec, outputs)


def test_duplicate_variables_rejected() -> None:
    with pytest.raises(GraphError, match="duplicate variable name 'x'"):
        CausalModel([Variable("x", D), Variable("x", D)], ["x"])


def test_unknown_names_in_queries_list_nearest() -> None:
    m = standard.digit_sum4()
    for query in (m.parents, m.domain, m.children, m.kind, m.depth, m.variable):
        with pytest.raises(UnknownVariableError, match="did you mean 'S1' or 'S2'|did you mean 'S2'"):
            query("S3")


def test_describe_lists_every_variable_with_domain_and_parents() -> None:
    m = CausalModel.from_mapping(
        {
            "e": ((), None, RealDomain((2,), -1.0, 1.0)),
            "b": (("e",), lambda e: bool(e[0] > 0), FiniteDomain.boolean(), False),
        },
        ["b"],
        name="tiny",
    )
    text = m.describe()
    lines = text.splitlines()
    assert lines[0] == "CausalModel 'tiny': 2 variables; inputs e; outputs b"
    assert lines[1].split() == ["variable", "kind", "parents", "domain", "depth"]
    assert lines[2].split()[:3] == ["e", "input", "-"] and "RealDomain(shape=(2,)" in lines[2]
    assert lines[3].split()[:4] == ["b", "output", "(per-row)", "e"]
    assert "FiniteDomain.boolean()" in lines[3]
    assert str(m) == text and "tiny" in repr(m)
