"""The semiring package: what importing does (nothing registered, built or compiled; no
plotly), lazy kernels, and SemiringBackprop as an attribution with coordinate sources."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from iit.coordinates import Coordinate, Index
from iit.semiring import SemiringBackprop, SemiringConfig
from tests.attribution.conftest import tiny_gpt2
from tests.semiring.test_backward import _module_grad


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return out.stdout.strip()


def test_import_attribution_imports_neither_semiring_nor_plotly() -> None:
    code = (
        "import sys, iit.attribution as a\n"
        "print(sorted(m for m in sys.modules if m.startswith(('iit.semiring', 'plotly', "
        "'pytorch_lightning', 'lightning'))))\n"
        "try:\n    a.semiring\nexcept AttributeError as e:\n    print(e)\n"
    )
    modules, message = _run(code).splitlines()
    assert modules == "[]"
    assert "iit.semiring" in message


def test_import_semiring_registers_builds_and_compiles_nothing() -> None:
    code = (
        "import torch, iit.semiring\n"
        "from iit.semiring import kernels, tropical, SemiringBackprop, SemiringConfig\n"
        "def op_registered():\n"
        "    try:\n        torch.ops.iit.signed_max_product_matmul\n        return True\n"
        "    except (AttributeError, RuntimeError):\n        return False\n"
        "print(op_registered(), tropical._CPP_STATE['built'], kernels._registered_op.cache_info().currsize)\n"
        "net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))\n"
        "for s in ('real', 'entropy'):\n"
        "    SemiringBackprop(net, SemiringConfig(s)).attribute(torch.randn(2, 3), 1)\n"
        "print(op_registered(), tropical._CPP_STATE['built'], kernels._registered_op.cache_info().currsize)\n"
        "kernels.max_product_matmul(torch.zeros(2, 2), torch.zeros(2, 2), torch.ones(2, 2), compiled=True)\n"
        "print(op_registered())\n"
    )
    before, after_calls, after_compiled = _run(code).splitlines()
    assert before == "False False 0"
    assert after_calls == "False False 0"  # no max-product matmul: nothing built
    assert after_compiled == "True"  # registered by the first call that asks for it


def test_coordinate_sources_with_index_and_tuple_outputs() -> None:
    """Real semiring == autograd's gradient at the place, read at the coordinate's index:
    a module output, element 0 of GPT-2's attention tuple, and a TransformerCoordinate."""
    from iit.transformers import TransformerCoordinate

    model = tiny_gpt2(seed=1)
    ids = {"input_ids": torch.randint(0, 40, (2, 5), generator=torch.Generator().manual_seed(0))}

    def score(out):
        return out.logits[:, 1]

    config = SemiringConfig("real")
    index = Index.positions([1, 3])
    ours = SemiringBackprop(model, config, sources=[Coordinate("transformer.h.0", index)])
    want = _module_grad(model, "transformer.h.0", ids, score)
    torch.testing.assert_close(ours.attribute(ids, score), index.read(want))
    assert ours.last_result is not None and ours.last_result.values["transformer.h.0"].shape == (2, 5, 16)
    attn = SemiringBackprop(model, config, sources=[TransformerCoordinate(1, "attention_output")])
    captured = []

    def hook(_m, _a, out):
        out[0].retain_grad()
        captured.append(out[0])

    handle = model.transformer.h[1].attn.register_forward_hook(hook)
    try:
        score(model(**ids)).sum().backward()
    finally:
        handle.remove()
    torch.testing.assert_close(attn.attribute(ids, score), captured[0].grad)
    with pytest.raises(Exception, match="module output"):
        SemiringBackprop(model, config, sources=[TransformerCoordinate(1, "block_input")]).attribute(
            ids, score
        )
