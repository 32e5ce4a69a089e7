"""signed_max_product_matmul: bitwise equality with a brute-force reference on every backend."""

from __future__ import annotations

import pytest
import torch

from iit.semiring import tropical
from iit.semiring.tropical import signed_max_product_matmul

INF = float("inf")


def reference(s_max, s_min, w):
    """Brute force: all ``[..., i, j, k]`` sign-selected products, NaN (0 * inf) = no path."""
    a = s_max[..., :, :, None] * w[..., None, :, :]
    b = s_min[..., :, :, None] * w[..., None, :, :]
    pos = (w >= 0)[..., None, :, :]
    up, down = torch.where(pos, a, b), torch.where(pos, b, a)
    up = torch.where(torch.isnan(up), -INF, up)
    down = torch.where(torch.isnan(down), INF, down)
    return up.amax(-2), down.amin(-2)


def state(shape, dtype=torch.float32, *, unreached=0.0, ints=False, scale=1.0, seed=0):
    """A max-product state: ``s_max >= s_min``; a fraction ``unreached`` of ``(-inf, +inf)``;
    small integers (ties, zeros) with ``ints``."""
    g = torch.Generator().manual_seed(seed)
    if ints:
        a = torch.randint(-3, 4, shape, generator=g).to(dtype)
        b = torch.randint(-3, 4, shape, generator=g).to(dtype)
    else:
        a = (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)
        b = (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)
    s_max, s_min = torch.maximum(a, b), torch.minimum(a, b)
    if unreached:
        off = torch.rand(shape, generator=g) < unreached
        s_max[off], s_min[off] = -INF, INF
    return s_max, s_min


def weights(shape, dtype=torch.float32, *, ints=False, zeros=0.0, scale=1.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    if ints:
        w = torch.randint(-2, 3, shape, generator=g).to(dtype)
    else:
        w = (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)
    if zeros:
        w[torch.rand(shape, generator=g) < zeros] = 0.0
    return w


def assert_exact(got, want):
    for g, e in zip(got, want, strict=True):
        assert g.shape == e.shape and g.dtype == e.dtype
        assert not g.isnan().any()
        # equal values bit for bit (torch.equal: -0.0 == 0.0, the only freedom left)
        assert torch.equal(g, e), (g - e).abs().max()


def cpp_or_skip():
    if not tropical.cpp_kernel_available():
        pytest.skip(f"C++ kernel unavailable: {tropical._CPP_STATE['error']}")


BACKENDS = ["torch", "cpp"]

# (state shape, w shape): 2-D, tile/tail boundaries, batched attention, broadcast batch dims
SHAPES = [
    ((1, 3), (3, 2)),
    ((5, 17), (17, 33)),
    ((7, 1), (1, 1)),
    ((3, 40), (40, 16)),
    ((4, 9), (9, 32)),
    ((6, 8), (8, 47)),
    ((9, 5), (5, 15)),
    ((2, 5, 7), (2, 7, 19)),
    ((3, 4, 6), (6, 9)),
    ((6, 5), (2, 3, 5, 4)),
    ((2, 1, 3, 4), (1, 3, 4, 5)),
    ((4, 8, 8), (4, 8, 16)),
]

CASES = {
    "finite": {},
    "ties": {"ints": True},
    "unreached": {"unreached": 0.3},
    "unreached_ties": {"unreached": 0.3, "ints": True},
    "overflow": {"scale": 1e30},
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_matches_brute_force(backend, dtype, case, shapes):
    if backend == "cpp":
        cpp_or_skip()
    opts = CASES[case]
    s_max, s_min = state(shapes[0], dtype, **opts)
    w_opts = {"ints": opts.get("ints", False), "zeros": 0.2, "scale": opts.get("scale", 1.0)}
    w = weights(shapes[1], dtype, **w_opts)
    if case == "overflow":  # reached elements at +-inf too (an overflowed path product)
        s_max[..., :1, :1] = INF
    got = signed_max_product_matmul(s_max, s_min, w, backend=backend)
    assert_exact(got, reference(s_max, s_min, w))


@pytest.mark.parametrize("backend", BACKENDS)
def test_unreached_rows_and_zero_weights(backend):
    if backend == "cpp":
        cpp_or_skip()
    s_max, s_min = state((6, 20), ints=True)
    s_max[1:4], s_min[1:4] = -INF, INF  # rows that no path reaches
    w = weights((20, 18), ints=True, zeros=0.5)
    w[:, 3] = 0.0  # a column of zero weights: only reached elements give (0, 0)
    hi, lo = signed_max_product_matmul(s_max, s_min, w, backend=backend)
    assert_exact((hi, lo), reference(s_max, s_min, w))
    assert (hi[1:4] == -INF).all() and (lo[1:4] == INF).all()
    assert (hi[0, 3] == 0) and (lo[0, 3] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unreached_row_tiles_are_filled(backend):
    """Whole tiles of unreached rows (the C++ kernel fills them without computing): a full
    4-row tile in one batch element, the ragged last tile in another, and one row less than a
    tile, against brute force."""
    if backend == "cpp":
        cpp_or_skip()
    s_max, s_min = state((3, 11, 37), ints=True)
    for b, rows in ((0, slice(4, 8)), (1, slice(8, 11)), (2, slice(0, 3))):
        s_max[b, rows], s_min[b, rows] = -INF, INF
    w = weights((3, 37, 45), ints=True, zeros=0.3)
    hi, lo = signed_max_product_matmul(s_max, s_min, w, backend=backend)
    assert_exact((hi, lo), reference(s_max, s_min, w))
    assert (hi[0, 4:8] == -INF).all() and (lo[1, 8:] == INF).all() and (hi[2, 3] > -INF).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_negative_weight_swaps(backend):
    if backend == "cpp":
        cpp_or_skip()
    s_max, s_min = torch.tensor([[3.0, -INF]]), torch.tensor([[-2.0, INF]])
    w = torch.tensor([[-2.0, 0.5, 0.0], [1.0, 0.0, -1.0]])
    hi, lo = signed_max_product_matmul(s_max, s_min, w, backend=backend)
    assert hi.tolist() == [[4.0, 1.5, 0.0]] and lo.tolist() == [[-6.0, -1.0, 0.0]]


@pytest.mark.parametrize("chunk", [1, 7, 64, 300])
@pytest.mark.parametrize(
    "shapes", [((9, 5), (5, 13)), ((3, 4, 6), (3, 6, 11)), ((5, 4, 3), (3, 7))]
)
def test_chunk_boundaries(monkeypatch, chunk, shapes):
    monkeypatch.setattr(tropical, "_CHUNK_ELEMENTS", chunk)
    for unreached in (0.0, 0.3):
        s_max, s_min = state(shapes[0], unreached=unreached, ints=True)
        w = weights(shapes[1], ints=True, zeros=0.2)
        got = signed_max_product_matmul(s_max, s_min, w, backend="torch")
        assert_exact(got, reference(s_max, s_min, w))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_dtypes_torch(dtype):
    s_max, s_min = state((5, 12), dtype, unreached=0.2)
    w = weights((12, 7), dtype, zeros=0.2)
    assert_exact(signed_max_product_matmul(s_max, s_min, w), reference(s_max, s_min, w))


def test_promotes_dtypes():
    s_max, s_min = state((3, 4))
    w = weights((4, 5), torch.float64)
    hi, lo = signed_max_product_matmul(s_max, s_min, w, backend="torch")
    assert hi.dtype == lo.dtype == torch.float64
    assert_exact((hi, lo), reference(s_max.double(), s_min.double(), w))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_sizes(backend):
    if backend == "cpp":
        cpp_or_skip()
    hi, lo = signed_max_product_matmul(torch.ones(3, 0), torch.ones(3, 0), torch.ones(0, 2))
    assert hi.shape == (3, 2) and (hi == -INF).all() and (lo == INF).all()
    hi, lo = signed_max_product_matmul(torch.ones(0, 4), torch.ones(0, 4), torch.ones(4, 2))
    assert hi.shape == lo.shape == (0, 2)
    hi, _ = signed_max_product_matmul(torch.ones(2, 0, 4), torch.ones(2, 0, 4), torch.ones(4, 2))
    assert hi.shape == (2, 0, 2)


def test_no_autograd():
    s_max = torch.randn(3, 4, requires_grad=True)
    hi, lo = signed_max_product_matmul(s_max, s_max - 1, torch.randn(4, 2))
    assert not hi.requires_grad and not lo.requires_grad


def test_errors():
    s, w = torch.ones(3, 4), torch.ones(4, 2)
    with pytest.raises(ValueError, match="at least 2 dims"):
        signed_max_product_matmul(torch.ones(4), torch.ones(4), w)
    with pytest.raises(ValueError, match="differ"):
        signed_max_product_matmul(s, torch.ones(3, 5), w)
    with pytest.raises(ValueError, match="inner sizes"):
        signed_max_product_matmul(s, s, torch.ones(5, 2))
    with pytest.raises(ValueError, match="broadcast"):
        signed_max_product_matmul(torch.ones(2, 3, 4), torch.ones(2, 3, 4), torch.ones(3, 4, 2))
    with pytest.raises(TypeError, match="floating"):
        signed_max_product_matmul(s.long(), s.long(), w.long())
    with pytest.raises(ValueError, match="backend"):
        signed_max_product_matmul(s, s, w, backend="blas")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="float32/float64"):
        signed_max_product_matmul(s.half(), s.half(), w.half(), backend="cpp")


def test_fallback_without_compiler(monkeypatch):
    """A failed build warns once, then the torch ops serve ``auto``; ``cpp`` raises."""
    import torch.utils.cpp_extension as ext

    def no_compiler(*args, **kwargs):
        raise OSError("no compiler")

    monkeypatch.setattr(tropical, "_CPP_STATE", {"built": False, "module": None, "error": None})
    monkeypatch.setattr(ext, "load_inline", no_compiler)
    s_max, s_min = state((4, 6), unreached=0.2)
    w = weights((6, 5), zeros=0.2)
    with pytest.warns(RuntimeWarning, match="could not be built"):
        got = signed_max_product_matmul(s_max, s_min, w)
    assert_exact(got, reference(s_max, s_min, w))
    assert not tropical.cpp_kernel_available()
    with pytest.raises(RuntimeError, match="no compiler"):
        signed_max_product_matmul(s_max, s_min, w, backend="cpp")


def test_disabled_by_env(monkeypatch):
    monkeypatch.setattr(tropical, "_CPP_STATE", {"built": False, "module": None, "error": None})
    monkeypatch.setenv("IIT_TROPICAL_CPP", "0")
    assert not tropical.cpp_kernel_available()


@pytest.mark.slow
@pytest.mark.parametrize("keyed", [True, False], ids=["int_keys", "float"])
def test_compiled_matches_brute_force(monkeypatch, keyed):
    """``compiled=True`` (both the CPU integer-key reduction and the float one used on GPUs),
    finite and not, float32/float64, shared and batched weights."""
    if not keyed:  # the float formulation, as on a GPU
        monkeypatch.setattr(tropical, "_KEY_DTYPES", {})
    tropical._compiled.cache_clear()
    try:
        for dtype in (torch.float32, torch.float64):
            for (ss, ws), seed in zip(SHAPES, range(len(SHAPES)), strict=True):
                for opts in ({}, {"unreached": 0.3, "ints": True}):
                    s_max, s_min = state(ss, dtype, seed=seed, **opts)
                    w = weights(ws, dtype, zeros=0.2, seed=seed, ints=opts.get("ints", False))
                    got = signed_max_product_matmul(s_max, s_min, w, compiled=True, backend="torch")
                    assert_exact(got, reference(s_max, s_min, w))
    finally:
        tropical._compiled.cache_clear()


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_compiled_half_dtypes(dtype):
    for opts in ({}, {"unreached": 0.3}):
        s_max, s_min = state((5, 12), dtype, **opts)
        w = weights((12, 37), dtype, zeros=0.2)
        got = signed_max_product_matmul(s_max, s_min, w, compiled=True, backend="torch")
        assert_exact(got, reference(s_max, s_min, w))


@pytest.mark.slow
def test_portable_cpp_tile():
    """The C++ kernel's portable (non-AVX-512) tile, built without vector-extension flags
    (cached by torch.utils.cpp_extension like the real one)."""
    from torch.utils.cpp_extension import load_inline

    try:
        module = load_inline(
            name="iit_tropical_test_portable",
            cpp_sources=[tropical._CPP_SOURCE],
            functions=["signed_max_product_matmul"],
            extra_cflags=["-O2", "-ffp-contract=off", "-fopenmp", "-mno-avx512f"],
            extra_ldflags=["-fopenmp"],
        )
    except Exception as err:  # pragma: no cover - no compiler
        pytest.skip(f"cannot build: {err}")
    for dtype in (torch.float32, torch.float64):
        for ss, ws in [((5, 17), (17, 33)), ((9, 3), (3, 40))]:
            s_max, s_min = state(ss, dtype, unreached=0.3, ints=True)
            w = weights(ws, dtype, ints=True, zeros=0.3)
            got = module.signed_max_product_matmul(s_max[None], s_min[None], w[None])
            want = reference(s_max, s_min, w)
            assert_exact((got[0][0], got[1][0]), want)


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(monkeypatch, tmp_path):
    """An interrupted build leaves a lock that ``load_inline`` would wait for forever."""
    import os
    import time

    import torch.utils.cpp_extension as ext

    monkeypatch.setattr(ext, "_get_build_directory", lambda name, verbose: str(tmp_path))
    lock = tmp_path / "lock"
    lock.touch()
    old = time.time() - tropical._STALE_LOCK_SECONDS - 60
    os.utime(lock, (old, old))
    tropical._clear_stale_build_lock("any")
    assert not lock.exists()
    lock.touch()  # a build in progress in another process
    tropical._clear_stale_build_lock("any")
    assert lock.exists()
