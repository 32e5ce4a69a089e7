"""Top gradient paths on a tiny BERT: value, module/token/head mapping, errors."""

from __future__ import annotations

import pytest
import torch

from iit.errors import CoordinateError
from iit.semiring import (
    SemiringConfig,
    best_source_index,
    semiring_backward,
    top_path,
)
from iit.semiring.paths import locate
from tests.attribution.conftest import tiny_bert, tiny_gpt2

SRC = "bert.embeddings.word_embeddings"


@pytest.fixture(scope="module")
def bert_result():
    model = tiny_bert(seed=3).double()
    ids = torch.randint(2, 40, (2, 5), generator=torch.Generator().manual_seed(1))
    config = SemiringConfig("max_product", sources=(SRC,), num_heads=4)
    return semiring_backward(model, {"input_ids": ids}, 2, config)


def test_path_product_equals_value_and_walks_source_to_output(bert_result) -> None:
    for row in (0, 1):
        index = best_source_index(bert_result, SRC, row)
        assert index[0] == row
        path = top_path(bert_result, SRC, index)
        assert path.value == pytest.approx(bert_result.values[SRC][index].item(), rel=1e-12)
        assert path.product() == pytest.approx(path.value, rel=1e-9)
        assert path.steps[0].op == "input" and path.steps[0].token == index[1]
        assert path.steps[-1].node == bert_result.computation.root.name
        assert path.modules()[-1].startswith("classifier")
        assert any(m.startswith("bert.encoder.layer.1") for m in path.modules())
        assert abs(path.value) == bert_result.values[SRC][row].abs().max().item()


def test_every_source_element_path_reproduces_its_value(bert_result) -> None:
    vals = bert_result.values[SRC]
    for index in [(0, 0, 0), (1, 4, 15), (0, 2, 7)]:
        path = top_path(bert_result, SRC, index)
        assert path.product() == pytest.approx(vals[index].item(), rel=1e-9)


def test_heads_and_tokens_are_reported_inside_attention() -> None:
    """Force the path through attention: the target reads only the value branch of token 1."""
    model = tiny_bert(seed=0, layers=1).double()
    ids = torch.randint(2, 40, (1, 5), generator=torch.Generator().manual_seed(0))
    src = "bert.encoder.layer.0.attention.self.value"
    target = lambda out: out.logits[:, 0]  # noqa: E731
    config = SemiringConfig("max_product", sources=(src,), num_heads=4)
    res = semiring_backward(model, {"input_ids": ids}, target, config)
    path = top_path(res, src, best_source_index(res, src, 0))
    heads = {s.head for s in path.steps if s.head is not None}
    assert len(heads) == 1  # one head's value vectors, then merged back
    head = heads.pop()
    assert path.steps[0].index[2] // 4 == head  # value unit // head_dim == head
    assert path.product() == pytest.approx(path.value, rel=1e-9)
    attn = [s for s in path.steps if s.module == "bert.encoder.layer.0.attention.self"]
    assert attn and all(s.token is not None for s in attn)


def test_op_granularity_path_and_errors(bert_result) -> None:
    model = tiny_bert(seed=3).double()
    ids = torch.randint(2, 40, (1, 5), generator=torch.Generator().manual_seed(1))
    config = SemiringConfig("max_product", "op", sources=(SRC,), num_heads=4)
    res = semiring_backward(model, {"input_ids": ids}, 2, config)
    index = best_source_index(res, SRC, 0)
    path = top_path(res, SRC, index)
    assert path.granularity == "op"
    assert path.value == pytest.approx(res.values[SRC][index].item())
    assert path.steps[-1].node == res.computation.root.name
    with pytest.raises(CoordinateError, match="outside"):
        top_path(bert_result, SRC, (0, 9, 0))
    with pytest.raises(CoordinateError, match="unknown source"):
        top_path(bert_result, "bert.embeddings", (0, 0, 0))
    entropy = semiring_backward(
        model, {"input_ids": ids}, 2, SemiringConfig("entropy", sources=(SRC,))
    )
    with pytest.raises(ValueError, match="max_product"):
        top_path(entropy, SRC, (0, 0, 0))


def test_locate_layouts() -> None:
    assert locate((2, 5, 16), (1, 3, 7), 2, 5, 4) == (3, None)
    assert locate((10, 16), (7, 1), 2, 5, 4) == (2, None)
    assert locate((2, 4, 5, 4), (1, 2, 3, 0), 2, 5, 4) == (3, 2)
    assert locate((2, 5, 4, 4), (1, 3, 2, 0), 2, 5, 4) == (3, 2)
    assert locate((8, 5, 5), (6, 1, 2), 2, 5, 4) == (1, 2)
    assert locate((3,), (1,), 2, 5, 4) == (None, None)


def test_values_only_pass_frees_states_and_values_and_refuses_paths(bert_result) -> None:
    from iit.semiring.backward import _walk
    from iit.semiring.trace import trace_computation

    comp = bert_result.computation
    model = tiny_bert(seed=3).double()
    ids = torch.randint(2, 40, (2, 5), generator=torch.Generator().manual_seed(1))
    config = SemiringConfig("max_product", sources=(SRC,), num_heads=4, record_path=False)
    lean = semiring_backward(model, {"input_ids": ids}, 2, config)
    torch.testing.assert_close(lean.values[SRC], bert_result.values[SRC], rtol=0, atol=0)
    assert lean.node_states == {} and len(bert_result.node_states) == len(comp.live)
    with pytest.raises(ValueError, match="record_path=False"):
        top_path(lean, SRC, (0, 0, 0))
    fresh = trace_computation(model, {"input_ids": ids}, 2, (SRC,))
    held: list[int] = []
    with torch.no_grad():
        _walk(fresh, config, held)
    # forward values are released after their last reader (a one-element stand-in keeps the
    # shape): only the sources (and the parameters, which the pass never owns) keep their
    # data, and the held bytes shrink to the end
    def holds_data(v) -> bool:
        ts = v if isinstance(v, (tuple, list)) else (v,)
        return any(isinstance(t, torch.Tensor) and t.untyped_storage().nbytes() > 8 for t in ts)

    left = {n for n, v in fresh.env.items() if n.op != "get_attr" and holds_data(v)}
    assert left == set(fresh.sources.values())
    assert held[-1] < held[0] / 4


@pytest.mark.parametrize("semiring", ["real", "entropy", "max_product"])
@pytest.mark.parametrize("make", [tiny_bert, tiny_gpt2], ids=["bert", "gpt2"])
def test_released_values_are_never_read(semiring: str, make, monkeypatch) -> None:
    """Values the rules do not read are replaced by NaN stand-ins as the walk goes: the
    results equal a walk that keeps every value, bit for bit."""
    from iit.semiring import backward

    model = make(seed=2).double()
    ids = torch.randint(2, 40, (2, 5), generator=torch.Generator().manual_seed(3))
    src = SRC if make is tiny_bert else "transformer.wte"
    config = SemiringConfig(semiring, sources=(src,), record_path=False)
    lean = semiring_backward(model, {"input_ids": ids}, 1, config)
    monkeypatch.setattr(backward, "_last_reads", lambda comp, order: {})
    kept = semiring_backward(model, {"input_ids": ids}, 1, config)
    for name in ("values", "aux"):
        a, b = getattr(lean, name)[src], getattr(kept, name)[src]
        for x, y in zip(a.values() if isinstance(a, dict) else [a], b.values() if isinstance(b, dict) else [b]):
            assert not x.isnan().any()
            torch.testing.assert_close(x, y, rtol=0, atol=0)
