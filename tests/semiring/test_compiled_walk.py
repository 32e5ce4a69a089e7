"""The compiled walk (``SemiringConfig(compile=True)``) against the eager walk on tiny BERTs:
equal results for every semiring, one program per graph structure, parameters as inputs (another
model and an in-place update are followed), path recovery, and the check for frozen reads."""

from __future__ import annotations

import pytest
import torch

from iit.errors import UnsupportedOpError
from iit.semiring import SemiringCache, SemiringConfig, semiring_backward, top_path
from iit.semiring.backward import _walk
from iit.semiring.compiled_walk import CompiledWalks, _reached_rows, compiled_walk
from iit.semiring.trace import trace_computation
from tests.attribution.conftest import tiny_bert, tiny_gpt2

SRC = "bert.embeddings.word_embeddings"
aten = torch.ops.aten
pytestmark = pytest.mark.slow  # each graph structure compiles once (about 10 s here)


def _ids(seq: int = 6, seed: int = 5) -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.randint(2, 40, (2, seq), generator=torch.Generator().manual_seed(seed))
    }


def _both(model, inputs, semiring: str, granularity: str = "scalar", record_path: bool = False):
    out = []
    for compile_ in (False, True):
        config = SemiringConfig(
            semiring, granularity, sources=(SRC,), record_path=record_path, compile=compile_
        )
        out.append(semiring_backward(model, inputs, 1, config))
    return out


def _assert_results_close(eager, compiled) -> None:
    for name in ("values", "aux"):
        torch.testing.assert_close(getattr(compiled, name), getattr(eager, name))


@pytest.mark.parametrize(
    ("semiring", "granularity"),
    [("real", "scalar"), ("max_product", "scalar"), ("max_product", "op"), ("entropy", "scalar")],
)
def test_compiled_walk_equals_eager(semiring: str, granularity: str) -> None:
    """Same values and aux tensors as the eager walk, up to float rounding in fused loops (the
    target reads the [CLS] row, so the last layer's matrix products run on that row only)."""
    model = tiny_bert(seed=4, layers=1)
    eager, compiled = _both(model, _ids(), semiring, granularity)
    _assert_results_close(eager, compiled)
    if semiring == "max_product" and granularity == "scalar":  # signs and no-path markers
        assert torch.equal(compiled.aux[SRC]["max"].isinf(), eager.aux[SRC]["max"].isinf())
    assert compiled.computation.env[compiled.computation.sources[SRC]].shape == (2, 6, 16)


def test_compiled_walk_equals_eager_on_gpt2_with_other_padding() -> None:
    """GPT-2 (entropy): Conv1D matrix products (untransposed weights as transform inputs), the
    causal mask's where, and a target that reads the last non-padding token, an index
    computed from the data: the second padding reuses the program recorded for the first
    (same structure) and still equals the eager walk. (Compiling this one-layer graph takes
    about 40 s here.)"""
    model = tiny_gpt2(seed=2, layers=1)
    cache = SemiringCache()
    for pad_from in ((4, 6), (3, 5)):  # pad id 0 from these positions on, per row
        ids = _ids()["input_ids"]
        for row, start in enumerate(pad_from):
            ids[row, start:] = 0
        out = []
        for compile_ in (False, True):
            config = SemiringConfig(
                "entropy", sources=("transformer.wte",), record_path=False, compile=compile_
            )
            out.append(semiring_backward(model, {"input_ids": ids}, 2, config, cache=cache))
        _assert_results_close(*out)
    assert len(cache.walks) == 1


def test_reached_rows_only_where_the_structure_fixes_them() -> None:
    """BERT's [CLS] target fixes the reached rows of the last layer; GPT-2's last-token target
    picks them by an index tensor, so all rows are kept."""
    bert = trace_computation(tiny_bert(seed=4, layers=1), _ids(), 1, (SRC,))
    config = SemiringConfig("real", sources=(SRC,))
    rows = _reached_rows(bert, config, _walk)
    assert rows and all(
        r.tolist() == [0, 6] for n, r in rows.items() if n.target is aten.addmm.default
    )
    gpt2 = trace_computation(tiny_gpt2(seed=2, layers=1), _ids(), 2, ("transformer.wte",))
    assert _reached_rows(gpt2, config, _walk) == {}


def test_one_program_per_structure_and_parameters_are_inputs() -> None:
    """A second call of the same structure reuses the program, also for another model of the
    same architecture (its own weights are used), after an in-place weight update, and with
    frozen parameters; another sequence length compiles a second program."""
    cache = SemiringCache()
    first, second = tiny_bert(seed=1, layers=1), tiny_bert(seed=2, layers=1)
    config = SemiringConfig("entropy", sources=(SRC,), compile=True)
    eager_config = SemiringConfig("entropy", sources=(SRC,))
    semiring_backward(first, _ids(), 1, config, cache=cache)
    assert len(cache.walks) == 1
    for model in (second, first):
        got = semiring_backward(model, _ids(seed=6), 1, config, cache=cache).values[SRC]
        want = semiring_backward(model, _ids(seed=6), 1, eager_config).values[SRC]
        torch.testing.assert_close(got, want)
    with torch.no_grad():  # bumps the version: the cached |W| and -|W| log |W| are recomputed
        first.bert.encoder.layer[0].intermediate.dense.weight.mul_(-3.0)
    got = semiring_backward(first, _ids(), 1, config, cache=cache).values[SRC]
    torch.testing.assert_close(got, semiring_backward(first, _ids(), 1, eager_config).values[SRC])
    assert len(cache.walks) == 1
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    first.requires_grad_(False)  # the program's inputs are detached: no recompilation
    semiring_backward(first, _ids(), 1, config, cache=cache)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    semiring_backward(first, _ids(seq=7), 1, config, cache=cache)
    assert len(cache.walks) == 2
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs + 1
    cache.clear()
    assert len(cache.walks) == 0


def test_record_path_keeps_every_state_and_recovers_the_same_path() -> None:
    model = tiny_bert(seed=3, layers=1)
    eager, compiled = _both(model, _ids(), "max_product", record_path=True)
    assert set(n.name for n in compiled.node_states) == set(n.name for n in eager.node_states)
    want, got = top_path(eager, SRC, (0, 2, 5)), top_path(compiled, SRC, (0, 2, 5))
    assert [(s.node, s.index) for s in got.steps] == [(s.node, s.index) for s in want.steps]
    assert got.value == pytest.approx(want.value, rel=1e-6)


def test_a_walk_that_reads_values_into_python_is_refused() -> None:
    """A branch on the data would be frozen into the program: recording refuses it."""
    model = tiny_bert(seed=3, layers=1)
    comp = trace_computation(model, _ids(), 1, (SRC,))
    config = SemiringConfig("real", sources=(SRC,), compile=True)

    def reads_a_value(c, _config, rows=None):
        node = c.sources[SRC]
        x = c.env[node]
        return {node: (x * 2 if float(x.sum()) > 0 else x,)}

    with pytest.raises(UnsupportedOpError, match="reads a tensor value into Python"):
        compiled_walk(comp, config, reads_a_value, CompiledWalks())
