"""Max-product and entropy semirings against brute-force enumeration of every path.

The scalar computation graph of each tiny model is written out by hand here from its weights
(nodes = scalar values, edges = partial derivatives, each edge labelled with the op branch it
belongs to); every source-to-output path is enumerated; the statistics are computed directly:

* scalar max-product: max / min signed path product and the best path by ``|product|``;
* op-level max-product: max over *branch policies* (each fan-out node keeps one branch) of the
  summed absolute path weight in the pruned graph;
* entropy: ``H = -Σ (p/Z) log (p/Z)`` with ``p = Π |w|``.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from iit.semiring import SemiringConfig, semiring_backward, top_path

Edge = tuple[tuple, tuple, float, str]  # (src node, dst node, weight, branch)


class BranchyMLP(nn.Module):
    """``y = l2(h) + l3(h) + skip(x)``, ``h = tanh(l1(x))``: fan-out at x and at h."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.l1, self.l2, self.l3 = nn.Linear(3, 3), nn.Linear(3, 2), nn.Linear(3, 2)
        self.skip = nn.Linear(3, 2, bias=False)
        self.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3] -> [B, 2]
        h = torch.tanh(self.l1(x))
        return self.l2(h) + self.l3(h) + self.skip(x)


class ToyAttention(nn.Module):
    """Single-head attention with query/key/value/residual branches; negative weights."""

    def __init__(self, seed: int, t: int = 3, d: int = 2) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        p = lambda *s: nn.Parameter(torch.randn(*s, generator=g, dtype=torch.float64))  # noqa: E731
        self.wq, self.wk, self.wv = p(d, d), p(d, d), p(d, d)
        self.c, self.r = p(t, d), p(t, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B]
        q, k, v = x @ self.wq, x @ self.wk, x @ self.wv
        a = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        return (a @ v * self.c).sum((-1, -2)) + (x * self.r).sum((-1, -2))


@torch.no_grad()
def mlp_edges(m: BranchyMLP, x: torch.Tensor) -> list[Edge]:
    """Scalar graph of ``BranchyMLP`` output 0 for one input row ``x`` ``[3]``."""
    h = torch.tanh(m.l1(x))
    e: list[Edge] = []
    for i in range(3):
        e.append((("x", i), ("s",), float(m.skip.weight[0, i]), "skip"))
        for j in range(3):
            e.append((("x", i), ("a", j), float(m.l1.weight[j, i]), "l1"))
    for j in range(3):
        e.append((("a", j), ("h", j), float(1 - h[j] ** 2), "tanh"))
        e.append((("h", j), ("p2",), float(m.l2.weight[0, j]), "l2"))
        e.append((("h", j), ("p3",), float(m.l3.weight[0, j]), "l3"))
    e += [
        (("p2",), ("y",), 1.0, "add"),
        (("p3",), ("y",), 1.0, "add"),
        (("s",), ("y",), 1.0, "add"),
    ]
    return e


@torch.no_grad()
def attention_edges(m: ToyAttention, x: torch.Tensor) -> list[Edge]:
    """Scalar graph of ``ToyAttention`` for one input ``x`` ``[T, D]``."""
    T, D = x.shape
    q, k, v = x @ m.wq, x @ m.wk, x @ m.wv
    a = torch.softmax(q @ k.T, dim=-1)
    e: list[Edge] = []
    for t, d, h in itertools.product(range(T), range(D), range(D)):
        e.append((("x", t, d), ("q", t, h), float(m.wq[d, h]), "query"))
        e.append((("x", t, d), ("k", t, h), float(m.wk[d, h]), "key"))
        e.append((("x", t, d), ("v", t, h), float(m.wv[d, h]), "value"))
    for t, d in itertools.product(range(T), range(D)):
        e.append((("x", t, d), ("y",), float(m.r[t, d]), "residual"))
    for t, u, h in itertools.product(range(T), range(T), range(D)):
        e.append((("q", t, h), ("s", t, u), float(k[u, h]), "qk"))
        e.append((("k", u, h), ("s", t, u), float(q[t, h]), "qk"))
        e.append((("a", t, u), ("o", t, h), float(v[u, h]), "av"))
        e.append((("v", u, h), ("o", t, h), float(a[t, u]), "av"))
    # softmax as the tracer decomposes it: u = s - max (detached), e = exp(u), S = Σ e, a = e / S
    scores = q @ k.T
    ex = torch.exp(scores - scores.amax(-1, keepdim=True))
    total = ex.sum(-1)
    for t, j in itertools.product(range(T), range(T)):
        e.append((("s", t, j), ("u", t, j), 1.0, "sub"))
        e.append((("u", t, j), ("e", t, j), float(ex[t, j]), "exp"))
        e.append((("e", t, j), ("a", t, j), float(1 / total[t]), "div"))
        e.append((("e", t, j), ("S", t), 1.0, "sum"))
        e.append((("S", t), ("a", t, j), float(-ex[t, j] / total[t] ** 2), "div"))
    for t, h in itertools.product(range(T), range(D)):
        e.append((("o", t, h), ("y",), float(m.c[t, h]), "readout"))
    return e


class MVReadout(nn.Module):
    """``y = tanh(l1(x)) @ w`` with a 1-D ``w``: the readout is ``aten.mv``."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.l1 = nn.Linear(3, 3)
        self.w = nn.Parameter(torch.randn(3))
        self.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3] -> [B]
        return torch.tanh(self.l1(x)) @ self.w


@torch.no_grad()
def mv_edges(m: MVReadout, x: torch.Tensor) -> list[Edge]:
    """Scalar graph of ``MVReadout`` for one input row ``x`` ``[3]``."""
    h = torch.tanh(m.l1(x))
    e: list[Edge] = []
    for i, j in itertools.product(range(3), range(3)):
        e.append((("x", i), ("a", j), float(m.l1.weight[j, i]), "l1"))
    for j in range(3):
        e.append((("a", j), ("h", j), float(1 - h[j] ** 2), "tanh"))
        e.append((("h", j), ("y",), float(m.w[j]), "mv"))
    return e


class RowOp(nn.Module):
    """``y = Σ_i c_i f(x)_i`` with ``f`` = LayerNorm (affine), softmax or log-softmax."""

    def __init__(self, kind: str, seed: int, d: int = 3) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.kind = kind
        self.c, self.gamma, self.beta = (torch.randn(d, dtype=torch.float64, generator=g) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, d] -> [B]
        if self.kind == "layer_norm":
            f = F.layer_norm(x, x.shape[-1:], self.gamma, self.beta, 1e-5)
        else:
            f = torch.softmax(x, -1) if self.kind == "softmax" else torch.log_softmax(x, -1)
        return (f * self.c).sum(-1)


@torch.no_grad()
def row_op_edges(m: RowOp, x: torch.Tensor) -> list[Edge]:
    """Scalar graph of ``RowOp`` for one row ``x`` ``[d]``, written from the decompositions the
    tracer applies (LayerNorm: mean, centre, square, mean, rsqrt, scale; softmax: exp of the
    max-shifted input over its sum; log-softmax: shifted input minus log of the sum)."""
    d = x.shape[0]
    e: list[Edge] = []
    if m.kind == "layer_norm":
        c = x - x.mean()
        r = float(torch.rsqrt((c**2).mean() + 1e-5))
        e.append((("v",), ("r",), -0.5 * r**3, "rsqrt"))
        for j in range(d):
            e += [
                (("x", j), ("mu",), 1 / d, "mean"),
                (("x", j), ("c", j), 1.0, "sub"),
                (("mu",), ("c", j), -1.0, "sub"),
                (("c", j), ("q", j), float(2 * c[j]), "pow"),
                (("q", j), ("v",), 1 / d, "mean"),
                (("c", j), ("n", j), r, "mul"),
                (("r",), ("n", j), float(c[j]), "mul"),
                (("n", j), ("o", j), float(m.gamma[j]), "affine"),
                (("o", j), ("y",), float(m.c[j]), "readout"),
            ]
        return e
    ex = torch.exp(x - x.max())
    total = float(ex.sum())
    for j in range(d):
        e += [(("x", j), ("u", j), 1.0, "sub"), (("u", j), ("e", j), float(ex[j]), "exp")]
        e.append((("e", j), ("S",), 1.0, "sum"))
        if m.kind == "softmax":
            e.append((("e", j), ("p", j), 1 / total, "div"))
            e.append((("S",), ("p", j), float(-ex[j] / total**2), "div"))
            e.append((("p", j), ("y",), float(m.c[j]), "readout"))
        else:
            e.append((("u", j), ("o", j), 1.0, "sub_log"))
            e.append((("L",), ("o", j), -1.0, "sub_log"))
            e.append((("o", j), ("y",), float(m.c[j]), "readout"))
    if m.kind == "log_softmax":
        e.append((("S",), ("L",), 1 / total, "log"))
    return e


def enumerate_paths(edges: list[Edge], src: tuple, dst: tuple = ("y",)) -> list[list[Edge]]:
    out_edges: dict[tuple, list[Edge]] = defaultdict(list)
    for e in edges:
        out_edges[e[0]].append(e)
    paths: list[list[Edge]] = []

    def dfs(node: tuple, acc: list[Edge]) -> None:
        if node == dst:
            paths.append(list(acc))
            return
        for e in out_edges[node]:
            acc.append(e)
            dfs(e[1], acc)
            acc.pop()

    dfs(src, [])
    return paths


def product(path: list[Edge]) -> float:
    return math.prod(e[2] for e in path)


def brute_entropy(paths: list[list[Edge]]) -> tuple[float, float]:
    p = [abs(product(pi)) for pi in paths]
    z = sum(p)
    h = -sum(pi / z * math.log(pi / z) for pi in p if pi > 0)
    return z, h


def brute_op_level(edges: list[Edge], src: tuple, src_branch: str | None = None) -> float:
    """Max over branch policies of the pruned graph's abs path sum (``src_branch``: the
    source's own branch is fixed)."""
    if src_branch is not None:
        edges = [e for e in edges if e[0] != src or e[3] == src_branch]
    branches: dict[tuple, set[str]] = defaultdict(set)
    for e in edges:
        branches[e[0]].add(e[3])
    reach = {n for p in enumerate_paths(edges, src) for e in p for n in (e[0],)}
    choice_nodes = sorted(n for n in reach if len(branches[n]) > 1)
    best = 0.0
    for choice in itertools.product(*(sorted(branches[n]) for n in choice_nodes)):
        policy = dict(zip(choice_nodes, choice))
        kept = [e for e in edges if e[0] not in policy or policy[e[0]] == e[3]]
        best = max(best, sum(abs(product(p)) for p in enumerate_paths(kept, src)))
    return best


def non_unit_weights(weights: list[float]) -> list[float]:
    return [w for w in weights if w != 1.0]


def test_mv_is_traced_as_a_matrix_product_and_other_ops_are_named() -> None:
    """``h @ w`` with a 1-D ``w`` (``aten.mv``) and ``w @ h`` (``aten.dot`` for 1-D ``h``)
    give autograd's gradient; an op without a rule is named in the error."""
    model = MVReadout(seed=1)
    x = torch.randn(4, 3, dtype=torch.float64)
    got = semiring_backward(model, x, lambda out: out, SemiringConfig("real")).values["input"]
    leaf = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(model(leaf).sum(), leaf)
    torch.testing.assert_close(got, want)

    class Dot(nn.Module):
        def forward(self, v: torch.Tensor) -> torch.Tensor:  # [3] -> [1]
            return (torch.sin(v) @ v).reshape(1)

    v = torch.randn(3, dtype=torch.float64)
    got = semiring_backward(Dot(), v, lambda out: out, SemiringConfig("real")).values["input"]
    torch.testing.assert_close(got, torch.cos(v) * v + torch.sin(v))

    class Cumsum(nn.Module):
        def forward(self, v: torch.Tensor) -> torch.Tensor:
            return torch.cumsum(v, -1).sum(-1)

    from iit.errors import UnsupportedOpError

    with pytest.raises(UnsupportedOpError, match="cumsum"):
        semiring_backward(Cumsum(), torch.randn(2, 3), lambda out: out, SemiringConfig("real"))


def _models() -> list[tuple[str, nn.Module, torch.Tensor, object, list[Edge], list[tuple]]]:
    """(name, model, input, target, hand-written scalar graph, source nodes)."""
    mlp = BranchyMLP(seed=3)
    xm = torch.randn(1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    att = ToyAttention(seed=5)
    xa = torch.randn(1, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    rows = []
    for seed, kind in enumerate(("layer_norm", "softmax", "log_softmax")):
        op = RowOp(kind, seed=10 + seed)
        xr = torch.randn(1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        rows.append((kind, op, xr, lambda out: out, row_op_edges(op, xr[0]), [("x", i) for i in range(3)]))
    mv = MVReadout(seed=MV_SEED)
    xv = torch.randn(1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    return rows + [
        ("mlp", mlp, xm, 0, mlp_edges(mlp, xm[0]), [("x", i) for i in range(3)]),
        ("mv", mv, xv, lambda out: out, mv_edges(mv, xv[0]), [("x", i) for i in range(3)]),
        (
            "attention",
            att,
            xa,
            lambda out: out,
            attention_edges(att, xa[0]),
            [("x", t, d) for t in range(3) for d in range(2)],
        ),
    ]


MV_SEED = 0
MODELS = _models()
BY_NAME = {case[0]: case for case in MODELS}


@pytest.mark.parametrize("case", MODELS, ids=[c[0] for c in MODELS])
def test_scalar_max_product_matches_enumeration(case) -> None:
    _, model, x, target, edges, srcs = case
    res = semiring_backward(model, x, target, SemiringConfig(semiring="max_product"))
    mx, mn = res.aux["input"]["max"].reshape(-1), res.aux["input"]["min"].reshape(-1)
    saw_negative_best = False
    for flat, src in enumerate(srcs):
        paths = enumerate_paths(edges, src)
        prods = [product(p) for p in paths]
        assert mx[flat].item() == pytest.approx(max(prods), rel=1e-10, abs=1e-14)
        assert mn[flat].item() == pytest.approx(min(prods), rel=1e-10, abs=1e-14)
        best = max(paths, key=lambda p: abs(product(p)))
        saw_negative_best |= product(best) < 0
        path = top_path(
            res, "input", (0, *divmod(flat, x.shape[-1])) if x.dim() == 3 else (0, flat)
        )
        assert path.value == pytest.approx(product(best), rel=1e-10)
        assert path.product() == pytest.approx(product(best), rel=1e-10)
        ours = non_unit_weights([s.weight for s in path.steps])
        theirs = non_unit_weights([e[2] for e in best])
        assert ours == pytest.approx(theirs, rel=1e-10)
    assert saw_negative_best, "the case should exercise a negative best path (sign swap)"


@pytest.mark.parametrize("case", MODELS, ids=[c[0] for c in MODELS])
def test_entropy_matches_enumeration(case) -> None:
    _, model, x, target, edges, srcs = case
    res = semiring_backward(model, x, target, SemiringConfig(semiring="entropy"))
    h, z = res.values["input"].reshape(-1), res.aux["input"]["Z"].reshape(-1)
    for flat, src in enumerate(srcs):
        z_ref, h_ref = brute_entropy(enumerate_paths(edges, src))
        assert z[flat].item() == pytest.approx(z_ref, rel=1e-10)
        assert h[flat].item() == pytest.approx(h_ref, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("case", MODELS, ids=[c[0] for c in MODELS])
def test_op_level_max_product_matches_policy_enumeration(case) -> None:
    _, model, x, target, edges, srcs = case
    config = SemiringConfig(semiring="max_product", granularity="op")
    res = semiring_backward(model, x, target, config)
    vals = res.values["input"].reshape(-1)
    for flat, src in enumerate(srcs):
        assert vals[flat].item() == pytest.approx(brute_op_level(edges, src), rel=1e-10)


def test_op_level_picks_the_branch_of_the_best_policy() -> None:
    _, model, x, target, edges, srcs = BY_NAME["attention"]
    res = semiring_backward(model, x, target, SemiringConfig("max_product", "op"))
    vals = res.values["input"].reshape(-1)
    chosen: set[str] = set()
    names = {"query": "wq", "key": "wk", "value": "wv", "residual": "r"}
    for flat, src in enumerate(srcs):
        per_branch = {}
        for b in names:
            per_branch[b] = brute_op_level(edges, src, src_branch=b)
        best = max(per_branch, key=per_branch.get)
        chosen.add(best)
        assert vals[flat].item() == pytest.approx(per_branch[best], rel=1e-10)
        path = top_path(res, "input", (0, *divmod(flat, 2)))
        if best == "residual":  # x * r: the residual branch is the elementwise mul
            assert path.steps[1].op == "mul"
            assert path.steps[1].weight == pytest.approx(float(model.r[src[1], src[2]]))
        else:  # x -> view -> mm: the mm edge weight is a row entry of that projection
            row = getattr(model, names[best]).detach()[src[2]]
            assert path.steps[1].op == "view" and path.steps[2].op == "mm"
            assert min(abs(float(v) - path.steps[2].weight) for v in row) < 1e-12
    assert len(chosen) >= 2, "the case should exercise more than one winning branch"


def test_op_level_differs_from_scalar_level_on_a_summed_contraction() -> None:
    """Summing a matmul's inner index (op) exceeds the best single path (scalar)."""
    model, x, target = BY_NAME["mlp"][1], BY_NAME["mlp"][2], 0
    op = semiring_backward(model, x, target, SemiringConfig("max_product", "op")).values["input"]
    sc = semiring_backward(model, x, target, SemiringConfig("max_product")).values["input"]
    assert (op >= sc.abs() - 1e-12).all() and (op > sc.abs() + 1e-6).any()


def _chain(k: int, w1: float, w2: float) -> nn.Module:
    net = nn.Sequential(nn.Linear(1, k, bias=False), nn.Tanh(), nn.Linear(k, 1, bias=False))
    net = net.double()
    with torch.no_grad():
        net[0].weight.fill_(w1)
        net[2].weight.fill_(w2)
    return net.double()


def test_closed_forms_single_path_and_parallel_paths() -> None:
    x = torch.tensor([[0.3]], dtype=torch.float64)
    single = semiring_backward(_chain(1, -0.8, 1.7), x, 0, SemiringConfig("entropy"))
    assert single.values["input"].item() == pytest.approx(0.0, abs=1e-12)
    for k in (2, 5):
        res = semiring_backward(_chain(k, 0.5, -0.7), x, 0, SemiringConfig("entropy"))
        assert res.values["input"].item() == pytest.approx(math.log(k), rel=1e-12)
        mp = semiring_backward(_chain(k, 0.5, -0.7), x, 0, SemiringConfig("max_product"))
        tanh_d = 1 - math.tanh(0.15) ** 2
        assert mp.values["input"].item() == pytest.approx(-0.35 * tanh_d, rel=1e-12)


def test_entropy_z_is_the_abs_linearised_gradient() -> None:
    model, x = BY_NAME["mlp"][1], BY_NAME["mlp"][2]
    res = semiring_backward(model, x, 0, SemiringConfig("entropy"))
    with torch.no_grad():
        h = torch.tanh(model.l1(x[0]))
        a1 = model.l1.weight.abs()  # [3 hidden, 3 in]
        top = (model.l2.weight[0].abs() + model.l3.weight[0].abs()) * (1 - h**2).abs()
        z_ref = top @ a1 + model.skip.weight[0].abs()
    torch.testing.assert_close(res.aux["input"]["Z"][0], z_ref, rtol=1e-12, atol=1e-14)


def test_zero_local_derivative_is_zero_log_zero() -> None:
    """A ReLU that is off gives zero-weight paths: no NaN, they add nothing to H."""
    net = nn.Sequential(nn.Linear(1, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        net[2].weight.copy_(torch.tensor([[2.0, 3.0]]))
    x = torch.tensor([[1.0]], dtype=torch.float64)
    res = semiring_backward(net.double(), x, 0, SemiringConfig("entropy"))
    assert res.values["input"].item() == 0.0  # one live path (through unit 0)
    assert res.aux["input"]["Z"].item() == pytest.approx(2.0)
