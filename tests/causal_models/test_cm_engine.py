"""Tests of causal_models.engine (run / do / interchange).

The reference is a naive recursive evaluator written here: pure Python, one example at a time, with
its own per-example mechanisms. It must agree with the vectorised engine on every
(base, source, variables) combination of small finite domains (exhaustive enumeration), and on
random DAGs drawn by hypothesis.
"""

import itertools
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from causal_models import (
    BatchShapeError,
    CausalModel,
    DomainError,
    IntegerRange,
    InterventionSpecError,
    MechanismError,
    MissingInputError,
    RealDomain,
    UnknownVariableError,
    standard,
)

# ----------------------------------------------------------------- naive reference evaluator


def naive_run(spec: dict, fixed: dict) -> dict:
    """spec: {var: (parents, python_fn)} for non-inputs; fixed: values of inputs and of
    intervened variables. Recursive, memoised, one example."""
    memo = dict(fixed)

    def value(v):
        if v not in memo:
            parents, fn = spec[v]
            memo[v] = fn(*(value(p) for p in parents))
        return memo[v]

    return {v: value(v) for v in [*fixed, *spec]}


def naive_interchange(spec: dict, base: dict, sources: list, variables: dict) -> dict:
    fixed = dict(base)
    for var, idx in variables.items():
        fixed[var] = naive_run(spec, dict(sources[idx]))[var]
    return naive_run(spec, fixed)


def to_batch(rows: list, names: list) -> dict:
    return {n: torch.tensor([r[n] for r in rows]) for n in names}


DIGIT_SPEC = {"S": (("x", "y"), lambda x, y: x + y), "O": (("S", "z"), lambda s, z: s + z)}
DIGIT4_SPEC = {
    "S1": (("w", "x"), lambda w, x: w + x),
    "S2": (("S1", "y"), lambda s, y: s + y),
    "O": (("S2", "z"), lambda s, z: s + z),
}
EQ_SPEC = {
    "WX": (("W", "X"), lambda w, x: w == x),
    "YZ": (("Y", "Z"), lambda y, z: y == z),
    "O": (("WX", "YZ"), lambda a, b: a == b),
}


def _check_all_pairs(model, spec, inputs_list, var_sets):
    """Every (base, source, variable set) triple, one vectorised call per variable set."""
    names = model.inputs
    pairs = list(itertools.product(inputs_list, inputs_list))
    bases = [b for b, _ in pairs]
    srcs = [s for _, s in pairs]
    base_t, src_t = to_batch(bases, names), to_batch(srcs, names)
    for var_set in var_sets:
        got = model.interchange(base_t, [src_t], dict.fromkeys(var_set, 0))
        for i, (b, s) in enumerate(pairs):
            ref = naive_interchange(spec, b, [s], dict.fromkeys(var_set, 0))
            for v in model.variables:
                g = got[v][i]
                gv = tuple(g.tolist()) if g.dim() else g.item()
                assert gv == ref[v], (var_set, b, s, v)
    return len(pairs) * len(var_sets)


def test_digit_sum_exhaustive_against_naive_evaluator() -> None:
    m = standard.digit_sum(max_digit=2)
    inputs = [dict(zip("xyz", c, strict=True)) for c in itertools.product(range(3), repeat=3)]
    singles = [(v,) for v in m.variables]
    pairs = list(itertools.combinations(m.variables, 2))
    n = _check_all_pairs(m, DIGIT_SPEC, inputs, singles + pairs)
    assert n == 27 * 27 * 15


def test_digit_sum4_exhaustive_single_variables_against_naive_evaluator() -> None:
    m = standard.digit_sum4(max_digit=2)
    inputs = [dict(zip("wxyz", c, strict=True)) for c in itertools.product(range(3), repeat=4)]
    assert _check_all_pairs(m, DIGIT4_SPEC, inputs, [(v,) for v in m.variables]) == 81 * 81 * 7


def test_hierarchical_equality_exhaustive_against_naive_evaluator() -> None:
    vocab = [(0.25, -0.5), (0.75, 0.5), (-0.25, 0.0)]
    m = standard.hierarchical_equality(emb_dim=2)
    inputs = [dict(zip("WXYZ", c, strict=True)) for c in itertools.product(vocab, repeat=4)]
    var_sets = [(v,) for v in m.variables] + [("WX", "YZ"), ("W", "YZ"), ("WX", "O")]
    assert _check_all_pairs(m, EQ_SPEC, inputs, var_sets) == 81 * 81 * 10


def test_multi_source_interchange_against_naive_evaluator() -> None:
    rng = random.Random(0)
    m = standard.digit_sum4(max_digit=3)
    names = m.inputs
    for assignment in ({"S1": 0, "y": 1}, {"S2": 1, "w": 0}, {"S1": 1, "S2": 0}, {"x": 0, "z": 1}):
        rows = [[{n: rng.randrange(4) for n in names} for _ in range(3)] for _ in range(300)]
        b, s0, s1 = (to_batch([r[k] for r in rows], names) for k in range(3))
        got = m.interchange(b, [s0, s1], assignment)
        for i, (rb, rs0, rs1) in enumerate(rows):
            ref = naive_interchange(DIGIT4_SPEC, rb, [rs0, rs1], assignment)
            assert {v: got[v][i].item() for v in m.variables} == ref


def test_row_masks_select_where_each_variable_is_intervened() -> None:
    rng = random.Random(1)
    m = standard.digit_sum4(max_digit=3)
    names = m.inputs
    rows = [[{n: rng.randrange(4) for n in names} for _ in range(2)] for _ in range(400)]
    b, s = (to_batch([r[k] for r in rows], names) for k in range(2))
    mask_s1 = torch.tensor([rng.random() < 0.5 for _ in rows])
    mask_z = torch.tensor([rng.random() < 0.5 for _ in rows])
    got = m.interchange(b, [s], {"S1": 0, "z": 0}, rows={"S1": mask_s1, "z": mask_z})
    for i, (rb, rs) in enumerate(rows):
        chosen = [v for v, mk in (("S1", mask_s1), ("z", mask_z)) if bool(mk[i])]
        ref = naive_interchange(DIGIT4_SPEC, rb, [rs], dict.fromkeys(chosen, 0))
        assert got["O"][i].item() == ref["O"]


def test_interchange_per_row_against_naive_evaluator() -> None:
    rng = random.Random(2)
    m = standard.digit_sum4(max_digit=3)
    names, cands = m.inputs, ["S1", "S2", "y"]
    rows = [[{n: rng.randrange(4) for n in names} for _ in range(3)] for _ in range(400)]
    b, s0, s1 = (to_batch([r[k] for r in rows], names) for k in range(3))
    intervened = torch.rand(400, 3, generator=torch.Generator().manual_seed(0)) < 0.5
    slot = torch.randint(0, 2, (400, 3), generator=torch.Generator().manual_seed(1))
    slot[~intervened] = -1
    got = m.interchange_per_row(b, [s0, s1], cands, intervened, slot)
    for i, (rb, r0, r1) in enumerate(rows):
        assignment = {v: int(slot[i, j]) for j, v in enumerate(cands) if intervened[i, j]}
        ref = naive_interchange(DIGIT4_SPEC, rb, [r0, r1], assignment)
        assert {v: got[v][i].item() for v in m.variables} == ref


def test_do_against_naive_evaluator_and_overrides_downstream_interventions() -> None:
    m = standard.digit_sum4(max_digit=5)
    base = {n: torch.tensor([1, 5, 0]) for n in m.inputs}
    out = m.do(base, {"S1": torch.tensor([2, 2, 9]), "S2": torch.tensor([4, 15, 15])})
    for i in range(3):
        ref = naive_run(
            DIGIT4_SPEC,
            {**{n: base[n][i].item() for n in m.inputs}, "S1": [2, 2, 9][i], "S2": [4, 15, 15][i]},
        )
        assert {v: out[v][i].item() for v in m.variables} == ref
    # S2 overrides S1's effect: O = S2 + z
    assert out["O"].tolist() == [5, 20, 15]


def test_per_row_python_mechanisms_agree_with_vectorised_ones() -> None:
    d = IntegerRange(0, 10)
    spec_vec = {
        "x": ((), None, d),
        "y": ((), None, d),
        "M": (("x", "y"), torch.maximum, d),
        "O": (("M", "x"), lambda m, x: (m * x) % 10, d),
    }
    spec_py = {
        "x": ((), None, d),
        "y": ((), None, d),
        "M": (("x", "y"), max, d, False),
        "O": (("M", "x"), lambda m, x: (m * x) % 10, d, False),
    }
    vec, py = CausalModel.from_mapping(spec_vec, ["O"]), CausalModel.from_mapping(spec_py, ["O"])
    g = torch.Generator().manual_seed(0)
    b = {n: torch.randint(0, 10, (64,), generator=g) for n in "xy"}
    s = {n: torch.randint(0, 10, (64,), generator=g) for n in "xy"}
    for var in ("M", "x"):
        a, c = vec.interchange(b, [s], {var: 0}), py.interchange(b, [s], {var: 0})
        assert all(torch.equal(a[v], c[v]) for v in vec.variables)


def test_per_row_mechanism_receives_row_tensors_for_vector_parents() -> None:
    m = CausalModel.from_mapping(
        {
            "e": ((), None, RealDomain((3,), -1.0, 1.0)),
            "n": (("e",), lambda e: float(e.abs().sum()), RealDomain(()), False),
        },
        ["n"],
    )
    e = torch.rand(5, 3) * 2 - 1
    assert torch.allclose(m.run({"e": e})["n"], e.abs().sum(1))


def test_inputs_are_not_modified() -> None:
    m = standard.digit_sum()
    b = {n: torch.tensor([1, 2]) for n in m.inputs}
    s = {n: torch.tensor([3, 4]) for n in m.inputs}
    copies = {n: t.clone() for n, t in {**b}.items()}
    m.interchange(b, [s], {"x": 0, "S": 0}, rows={"x": torch.tensor([True, False])})
    assert all(torch.equal(b[n], copies[n]) for n in m.inputs)


# ----------------------------------------------------------------- hypothesis: random DAGs

M = 5


@st.composite
def random_dags(draw):
    n_in = draw(st.integers(1, 3))
    n_mid = draw(st.integers(1, 4))
    names = [f"i{k}" for k in range(n_in)]
    spec_model, spec_py = {n: ((), None, IntegerRange(0, M)) for n in names}, {}
    for k in range(n_mid):
        name = f"v{k}"
        parents = tuple(draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)))
        w = [j + 2 + k for j in range(len(parents))]

        def vec(*a, w=w, k=k):
            return (sum(wi * ai for wi, ai in zip(w, a, strict=True)) + k) % M

        def py(*a, w=w, k=k):
            total = k
            for wi, ai in zip(w, a, strict=True):
                total += wi * ai
            return total % M

        spec_model[name] = (parents, vec, IntegerRange(0, M))
        spec_py[name] = (parents, py)
        names.append(name)
    output = names[-1]
    model = CausalModel.from_mapping(spec_model, [output])
    return model, spec_py


def batch_of(model, data, n):
    return {
        v: torch.tensor(data.draw(st.lists(st.integers(0, M - 1), min_size=n, max_size=n)))
        for v in model.inputs
    }


@settings(max_examples=40, deadline=None)
@given(dag=random_dags(), data=st.data())
def test_random_dags_agree_with_naive_evaluator(dag, data) -> None:
    model, spec = dag
    b, s = batch_of(model, data, 4), batch_of(model, data, 4)
    var_set = data.draw(st.lists(st.sampled_from(model.variables), min_size=1, unique=True))
    got = model.interchange(b, [s], dict.fromkeys(var_set, 0))
    for i in range(4):
        rb = {v: b[v][i].item() for v in model.inputs}
        rs = {v: s[v][i].item() for v in model.inputs}
        ref = naive_interchange(spec, rb, [rs], dict.fromkeys(var_set, 0))
        assert {v: got[v][i].item() for v in model.variables} == ref


@settings(max_examples=40, deadline=None)
@given(dag=random_dags(), data=st.data())
def test_interchange_with_source_equal_to_base_is_identity(dag, data) -> None:
    model, _ = dag
    b = batch_of(model, data, 6)
    var_set = data.draw(st.lists(st.sampled_from(model.variables), unique=True))
    plain = model.run(b)
    got = model.interchange(b, [b], dict.fromkeys(var_set, 0))
    assert all(torch.equal(plain[v], got[v]) for v in model.variables)


@settings(max_examples=40, deadline=None)
@given(dag=random_dags(), data=st.data())
def test_variable_without_path_to_output_never_changes_it(dag, data) -> None:
    model, _ = dag
    out = model.outputs[0]
    cut = [v for v in model.variables if not model.has_path(v, out)]
    b, s = batch_of(model, data, 6), batch_of(model, data, 6)
    base_out = model.run(b)[out]
    for v in cut:
        assert torch.equal(model.interchange(b, [s], {v: 0})[out], base_out)


@settings(max_examples=40, deadline=None)
@given(dag=random_dags(), data=st.data())
def test_interchanging_an_input_equals_running_on_the_modified_input(dag, data) -> None:
    model, _ = dag
    b, s = batch_of(model, data, 6), batch_of(model, data, 6)
    v = data.draw(st.sampled_from(model.inputs))
    modified = {**b, v: s[v]}
    got, ref = model.interchange(b, [s], {v: 0}), model.run(modified)
    assert all(torch.equal(got[u], ref[u]) for u in model.variables)


@settings(max_examples=40, deadline=None)
@given(dag=random_dags(), data=st.data())
def test_do_on_all_parents_determines_the_node(dag, data) -> None:
    model, spec = dag
    node = data.draw(st.sampled_from([v for v in model.variables if model.parents(v)]))
    parents = model.parents(node)
    values = {
        p: torch.tensor(data.draw(st.lists(st.integers(0, M - 1), min_size=6, max_size=6)))
        for p in parents
    }
    b1, b2 = batch_of(model, data, 6), batch_of(model, data, 6)
    r1, r2 = model.do(b1, values), model.do(b2, values)
    assert torch.equal(r1[node], r2[node])
    expected = [spec[node][1](*(values[p][i].item() for p in parents)) for i in range(6)]
    assert r1[node].tolist() == expected


# ----------------------------------------------------------------- errors


def _ds_batch(n=3):
    return {v: torch.arange(n) for v in "xyz"}


def test_input_errors() -> None:
    m = standard.digit_sum()
    with pytest.raises(
        MissingInputError, match="missing input.*'z'.*every input is needed: x, y, z"
    ):
        m.run({"x": torch.tensor([1]), "y": torch.tensor([1])})
    with pytest.raises(UnknownVariableError, match="unknown input variable 'zz'.*did you mean 'z'"):
        m.run({**_ds_batch(), "zz": torch.tensor([1])})
    with pytest.raises(BatchShapeError, match="'y' has batch size 2 but 'x' has 3"):
        m.run({"x": torch.arange(3), "y": torch.arange(2), "z": torch.arange(3)})
    with pytest.raises(DomainError, match=r"input 'x': value 10 \(row 1\) is outside"):
        m.run({**_ds_batch(2), "x": torch.tensor([0, 10])})
    with pytest.raises(DomainError, match=r"input 'x': expected shape \[batch\]"):
        m.run({**_ds_batch(2), "x": torch.zeros(2, 1, dtype=torch.long)})


def test_intervention_errors() -> None:
    m = standard.digit_sum()
    b = _ds_batch()
    with pytest.raises(UnknownVariableError, match="unknown variable 'SS'.*did you mean 'S'"):
        m.do(b, {"SS": torch.arange(3)})
    with pytest.raises(DomainError, match=r"intervention on 'S': value 40 \(row 0\)"):
        m.do(b, {"S": torch.tensor([40, 0, 0])})
    with pytest.raises(
        BatchShapeError, match="intervention on 'S' has batch size 2, inputs have 3"
    ):
        m.do(b, {"S": torch.tensor([1, 2])})
    with pytest.raises(
        InterventionSpecError, match="rows\\['O'\\] given but 'O' is not intervened"
    ):
        m.do(b, {"S": torch.arange(3)}, rows={"O": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(InterventionSpecError, match="must be a bool tensor"):
        m.do(b, {"S": torch.arange(3)}, rows={"S": torch.ones(3)})
    with pytest.raises(BatchShapeError, match=r"rows\['S'\] has shape \(2,\)"):
        m.do(b, {"S": torch.arange(3)}, rows={"S": torch.ones(2, dtype=torch.bool)})


def test_interchange_errors() -> None:
    m = standard.digit_sum()
    b = _ds_batch()
    with pytest.raises(BatchShapeError, match="source 1 has batch size 2, base has 3"):
        m.interchange(b, [b, _ds_batch(2)], {"S": 0})
    with pytest.raises(InterventionSpecError, match="source index 1 for 'S' is out of range"):
        m.interchange(b, [b], {"S": 1})
    with pytest.raises(UnknownVariableError, match="did you mean 'O'"):
        m.interchange(b, [b], {"O2": 0})
    with pytest.raises(
        InterventionSpecError, match="rows\\['x'\\] given but 'x' is not intervened"
    ):
        m.interchange(b, [b], {"S": 0}, rows={"x": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(InterventionSpecError, match="sequence of input mappings"):
        m.interchange(b, b, {"S": 0})
    with pytest.raises(MissingInputError, match="source 0: missing input"):
        m.interchange(b, [{"x": torch.arange(3)}], {"S": 0})


def test_interchange_per_row_errors() -> None:
    m = standard.digit_sum()
    b = _ds_batch()
    ok = torch.ones(3, 1, dtype=torch.bool)
    with pytest.raises(BatchShapeError, match=r"intervened has shape \(3, 2\)"):
        m.interchange_per_row(
            b, [b], ["S"], torch.ones(3, 2, dtype=torch.bool), torch.zeros(3, 1, dtype=torch.long)
        )
    with pytest.raises(InterventionSpecError, match="source_index must be an integer tensor"):
        m.interchange_per_row(b, [b], ["S"], ok, torch.zeros(3, 1))
    with pytest.raises(InterventionSpecError, match="values outside 0..0"):
        m.interchange_per_row(b, [b], ["S"], ok, torch.ones(3, 1, dtype=torch.long))
    with pytest.raises(InterventionSpecError, match="repeat a name"):
        m.interchange_per_row(
            b, [b], ["S", "S"], ok.repeat(1, 2), torch.zeros(3, 2, dtype=torch.long)
        )


def _mech_model(fn, vectorized=True):
    domain = IntegerRange(0, 10)
    entry = (("x",), fn, domain) if vectorized else (("x",), fn, domain, False)
    return CausalModel.from_mapping({"x": ((), None, IntegerRange(0, 10)), "M": entry}, ["M"])


@pytest.mark.parametrize(
    "fn, vectorized, match",
    [
        (lambda x: x[:, None], True, r"mechanism of 'M' returned shape \(3, 1\), expected \(3,\)"),
        (lambda x: x.float(), True, "returned dtype torch.float32"),
        (lambda x: x.tolist(), True, "returned list, expected a Tensor"),
        (lambda x: 1 / 0, True, "mechanism of 'M' raised ZeroDivisionError"),
        (lambda x: x + 20, True, r"mechanism of 'M'.*value 20 \(row 0\) is outside"),
        (lambda x: [x, x], False, r"per-row mechanism of 'M' returned shape \(2,\) at row 0"),
        (lambda x: {}["k"], False, r"per-row mechanism of 'M' raised KeyError.*row 0"),
    ],
)
def test_broken_mechanisms_name_the_variable(fn, vectorized, match) -> None:
    with pytest.raises(MechanismError, match=match):
        _mech_model(fn, vectorized).run({"x": torch.arange(3)})


def test_validate_false_skips_value_checks_but_not_shapes() -> None:
    m = _mech_model(lambda x: x + 20)
    assert m.run({"x": torch.arange(3)}, validate=False)["M"].tolist() == [20, 21, 22]
    with pytest.raises(DomainError, match="expected shape"):
        m.run({"x": torch.zeros(3, 2, dtype=torch.long)}, validate=False)


def test_empty_interchange_is_the_base_run_and_output_interchange_copies_the_source() -> None:
    m = standard.digit_sum4()
    g = torch.Generator().manual_seed(0)
    b = {v: torch.randint(0, 10, (50,), generator=g) for v in m.inputs}
    s = {v: torch.randint(0, 10, (50,), generator=g) for v in m.inputs}
    plain = m.run(b)
    empty = m.interchange(b, [], {})
    assert all(torch.equal(plain[v], empty[v]) for v in m.variables)
    assert torch.equal(m.interchange(b, [s], {"O": 0})["O"], m.run(s)["O"])
