"""Tests of causal_models.standard: each model against a plain-Python reference, and the samplers
by counting. One test checks digit-sum interchanges against pyvene's CausalModel (peer library)."""

import itertools
import random

import pytest
import torch

from causal_models import DomainError, GraphError, IntegerRange, standard
from causal_models.standard import EntityPool, EqualityPatternSampler


def _batch(rows, names):
    return {n: torch.tensor([r[i] for r in rows]) for i, n in enumerate(names)}


def test_digit_sum_exhaustive_and_domains() -> None:
    m = standard.digit_sum()
    rows = list(itertools.product(range(10), repeat=3))
    out = m.run(_batch(rows, "xyz"))
    assert out["S"].tolist() == [x + y for x, y, _ in rows]
    assert out["O"].tolist() == [x + y + z for x, y, z in rows]
    assert m.domain("O") == IntegerRange(0, 28) and m.domain("S") == IntegerRange(0, 19)
    with pytest.raises(ValueError, match="max_digit must be an int >= 0"):
        standard.digit_sum(-1)


def test_digit_sum4_two_outputs() -> None:
    m = standard.digit_sum4(max_digit=29, outputs=("O", "S2"))
    assert m.outputs == ["O", "S2"] and m.domain("x") == IntegerRange(0, 30)
    rows = [tuple(random.Random(i).randrange(30) for _ in range(4)) for i in range(200)]
    out = m.run(_batch(rows, "wxyz"))
    assert out["S2"].tolist() == [w + x + y for w, x, y, _ in rows]
    assert out["O"].tolist() == [sum(r) for r in rows]


def _pvr_reference(tl, tr, bl, br):
    if tl < 4:
        return tr
    if tl < 7:
        return bl
    return br


def test_pointer_value_exhaustive() -> None:
    m = standard.pointer_value()
    rows = list(itertools.product(range(10), repeat=4))
    out = m.run(_batch(rows, ["TL", "TR", "BL", "BR"]))["O"]
    assert out.tolist() == [_pvr_reference(*r) for r in rows]


def test_price_tagging_against_python_comparisons() -> None:
    m = standard.price_tagging()
    rng = random.Random(0)
    rows = [tuple(round(rng.uniform(0, 10), 2) for _ in range(3)) for _ in range(500)]
    rows += [(2.0, 2.0, 5.0), (5.0, 2.0, 5.0), (1.99, 2.0, 5.0)]  # boundaries
    b = _batch(rows, ["amount", "lower", "upper"])
    out = m.run(b)
    f = [
        (torch.tensor(a).item(), torch.tensor(lo).item(), torch.tensor(u).item())
        for a, lo, u in rows
    ]
    assert out["L"].tolist() == [a >= lo for a, lo, _ in f]
    assert out["O"].tolist() == [lo <= a <= u for a, lo, u in f]
    assert out["O"][-3:].tolist() == [True, True, False]


def test_price_sampler_follows_the_boundless_das_distribution() -> None:
    s = standard.PriceSampler()(20000, torch.Generator().manual_seed(0))
    width = s["upper"] - s["lower"]
    assert width.min() >= 2.5 - 1e-4 and width.max() <= 7.5 + 0.011
    assert s["lower"].min() >= 0.05 - 1e-6 and s["upper"].max() <= 9.95 + 0.011
    assert s["amount"].min() >= 0.01 - 1e-6 and s["amount"].max() <= 9.99 + 1e-6
    cents = s["amount"].double() * 100
    assert torch.allclose(cents, cents.round(), atol=1e-3)
    inside = standard.price_tagging().run(s)["O"].float().mean().item()
    assert 0.3 < inside < 0.7  # the prompt distribution gives both answers often


def _python_bool(program_fn, rows):
    return [program_fn(*r) for r in rows]


def test_boolean_circuit_exhaustive_against_python() -> None:
    program = "A = a & b\nB = a ^ c; C = not (B or d)\nO = (A | ~C) and (c or True)"
    m = standard.boolean_circuit(program)
    assert m.inputs == ["a", "b", "c", "d"] and m.intermediates == ["A", "B", "C"]
    assert m.parents("O") == ("A", "C", "c")
    rows = list(itertools.product([False, True], repeat=4))
    out = m.run(_batch(rows, "abcd"))

    def ref(a, b, c, d):
        big_a = a and b
        big_b = a != c
        big_c = not (big_b or d)
        return big_a, big_b, big_c, (big_a or not big_c) and (c or True)

    expected = [ref(*r) for r in rows]
    for k, v in enumerate("ABCO"):
        assert out[v].tolist() == [e[k] for e in expected]


def test_single_expression_and_custom_outputs() -> None:
    m = standard.boolean_circuit("a & ~b")
    assert m.outputs == ["O"] and m.variables == ["a", "b", "O"]
    m2 = standard.boolean_circuit("H = a | b\nO = H & c", outputs=["O", "H"])
    assert m2.outputs == ["O", "H"]


@pytest.mark.parametrize("k", [2, 3, 5])
def test_and_or_not_exhaustive(k) -> None:
    m = standard.and_or_not(k)
    rows = list(itertools.product([False, True], repeat=k))
    out = m.run(_batch(rows, [f"x{i}" for i in range(k)]))["O"]
    half = (k + 1) // 2
    assert out.tolist() == [all(r[:half]) and not any(r[half:]) for r in rows]


@pytest.mark.parametrize(
    "program, match",
    [
        ("A = a +", "cannot parse"),
        ("A = a + b", "unsupported syntax"),
        ("A = a\nA = b", "assigned twice"),
        ("A = True", "uses no variable"),
        ("A = B\nB = a", "used before they are assigned"),
        ("a & b\nO = a", "must be 'name = expression'"),
        ("", "empty boolean program"),
    ],
)
def test_boolean_program_errors(program, match) -> None:
    with pytest.raises(GraphError, match=match):
        standard.boolean_circuit(program)
    with pytest.raises(GraphError, match="k >= 2"):
        standard.and_or_not(1)


def test_hierarchical_equality_compares_whole_vectors() -> None:
    m = standard.hierarchical_equality(emb_dim=2)
    a, b = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.5, -0.5]])
    out = m.run({"W": a, "X": b, "Y": a, "Z": a})
    assert out["WX"].tolist() == [False] and out["YZ"].tolist() == [True]
    assert out["O"].tolist() == [False]
    with pytest.raises(DomainError, match="emb_dim"):
        standard.hierarchical_equality(emb_dim=0)


def test_pattern_sampler_is_balanced_over_the_four_patterns() -> None:
    pool, _ = standard.make_entity_pools(8, 4, emb_dim=2, seed=0)
    x = EqualityPatternSampler(pool)(20000, torch.Generator().manual_seed(1))
    wx = (x["W"] == x["X"]).all(-1)
    yz = (x["Y"] == x["Z"]).all(-1)
    code = wx.long() * 2 + yz.long()
    freq = torch.bincount(code, minlength=4).float() / 20000
    assert torch.allclose(freq, torch.full((4,), 0.25), atol=0.015)
    # entities come from the pool, and non-equal positions hold 4 distinct entities (ABCD)
    match = torch.stack(
        [(x[k].unsqueeze(1) == pool.vectors.unsqueeze(0)).all(-1) for k in "WXYZ"], dim=1
    )  # [n, 4, pool]
    assert (match.sum(-1) == 1).all()
    ids = match.float().argmax(-1)
    abcd = code == 0
    assert (ids[abcd].sort(1).values.diff(1) != 0).all()
    o = standard.hierarchical_equality(2).run(x)["O"].float().mean().item()
    assert abs(o - 0.5) < 0.015


def test_unbalanced_sampler_draws_independently() -> None:
    pool, _ = standard.make_entity_pools(4, 4, emb_dim=2, seed=0)
    x = EqualityPatternSampler(pool, balanced=False)(20000, torch.Generator().manual_seed(1))
    wx = (x["W"] == x["X"]).all(-1).float().mean().item()
    assert abs(wx - 0.25) < 0.015  # P(W == X) = 1 / pool size


def test_fresh_pool_is_disjoint_and_pools_are_validated() -> None:
    train, test = standard.make_entity_pools(200, 50, emb_dim=3, seed=2)
    assert train.vectors.shape == (200, 3) and test.size == 50 and test.emb_dim == 3
    same = (test.vectors.unsqueeze(1) == train.vectors.unsqueeze(0)).all(-1)
    assert not same.any()
    assert torch.unique(train.vectors, dim=0).shape[0] == 200
    assert ((train.vectors >= -1) & (train.vectors <= 1)).all()
    with pytest.raises(DomainError, match="distinct"):
        EntityPool(torch.zeros(5, 2))
    with pytest.raises(DomainError, match=">= 4 entities"):
        EntityPool(torch.rand(3, 2))
    with pytest.raises(DomainError, match="float tensor"):
        EntityPool(torch.zeros(5, dtype=torch.long))
    with pytest.raises(DomainError, match="exclude has emb_dim 3"):
        EntityPool.random(5, 2, exclude=train)


@pytest.mark.slow  # importing pyvene takes ~8 s
def test_digit_sum_interchange_matches_pyvene_causal_model() -> None:
    pv = pytest.importorskip("pyvene")
    names = ["x", "y", "z", "S", "O"]
    values = {v: list(range(10)) for v in "xyz"}
    values["S"], values["O"] = list(range(19)), list(range(28))
    parents = {"x": [], "y": [], "z": [], "S": ["x", "y"], "O": ["S", "z"]}
    functions = {
        "x": lambda: 0,
        "y": lambda: 0,
        "z": lambda: 0,
        "S": lambda x, y: x + y,
        "O": lambda s, z: s + z,
    }
    peer = pv.CausalModel(list(names), values, parents, functions)
    ours = standard.digit_sum()
    rng = random.Random(0)
    pairs = [
        ({v: rng.randrange(10) for v in "xyz"}, {v: rng.randrange(10) for v in "xyz"})
        for _ in range(200)
    ]
    base = {v: torch.tensor([b[v] for b, _ in pairs]) for v in "xyz"}
    src = {v: torch.tensor([s[v] for _, s in pairs]) for v in "xyz"}
    for var in names:
        got = ours.interchange(base, [src], {var: 0})["O"].tolist()
        ref = [peer.run_interchange(dict(b), {var: dict(s)})["O"] for b, s in pairs]
        assert got == ref, var
