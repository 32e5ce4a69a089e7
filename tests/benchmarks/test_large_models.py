"""benchmarks/large_models.py on its small configuration: the measurement functions against closed
forms, and the DAS / IIT steps end to end (checkpointing stores fewer activations and changes
neither loss nor gradient; iit's loss equals pyvene's with the same initial rotation)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("large_models", ROOT / "benchmarks" / "large_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("large_models", module)
    spec.loader.exec_module(module)
    return module


lm = _load_benchmark()
linux = pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc (Linux)")


def test_saved_activations_closed_form() -> None:
    x = torch.randn(4, 8, requires_grad=True)  # 128 bytes
    linear = nn.Linear(8, 8)
    with lm.SavedActivations([linear]) as saved:
        y = linear(x).sin().exp()  # linear saves x (and its weight, excluded); sin its input; exp its output
    assert saved.total == 3 * 4 * 8 * 4
    y.sum().backward()
    with torch.no_grad(), lm.SavedActivations([]) as nothing:
        linear(x).exp()
    assert nothing.total == 0


@linux
def test_peak_rss_increase_sees_a_touched_allocation() -> None:
    """Measured in a fresh process: in the test session's own process other threads (left by
    earlier tests) allocate concurrently and the high-water mark is process-wide."""
    code = (
        "import importlib.util, sys, torch\n"
        f"spec = importlib.util.spec_from_file_location('large_models', {str(ROOT / 'benchmarks' / 'large_models.py')!r})\n"
        "lm = importlib.util.module_from_spec(spec); sys.modules['large_models'] = lm; spec.loader.exec_module(lm)\n"
        "size = 64 * 2**20\n"
        "def allocate():\n"
        "    t = torch.ones(size // 4)  # touched: resident\n"
        "    return float(t[-1])\n"
        "out, peak, seconds, method = lm.peak_rss_increase(allocate)\n"
        "print(out, peak, seconds, method)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    out, peak, seconds, method = result.stdout.split()[-4:]
    size = 64 * 2**20
    assert float(out) == 1.0 and float(seconds) > 0 and method in ("clear_refs", "sampling")
    assert size <= int(peak) < size + 32 * 2**20


@linux
@pytest.mark.parametrize("step", ["das", "iit"])
def test_checkpointing_stores_fewer_activations_same_gradients(step: str) -> None:
    off = lm.measure(lm.Spec("small", "bfloat16", step, "iit", checkpointing=False))
    on = lm.measure(lm.Spec("small", "bfloat16", step, "iit", checkpointing=True))
    for result in (off, on):
        assert not result.error, result.error
        assert result.peak_bytes > 0 and result.seconds > 0
        assert torch.isfinite(torch.tensor([result.loss, result.grad_norm])).all()
    assert on.loss == off.loss and on.grad_norm == off.grad_norm
    # DAS: only the layers above the intervention keep activations (the layer inputs stay with
    # checkpointing); IIT: every layer of two passes
    assert on.saved_bytes < (0.5 if step == "das" else 0.2) * off.saved_bytes


@linux
@pytest.mark.parametrize("step", ["das", "iit"])
def test_same_loss_as_pyvene(step: str) -> None:
    pytest.importorskip("pyvene")
    ours = lm.measure(lm.Spec("small", "bfloat16", step, "iit", checkpointing=False))
    theirs = lm.measure(lm.Spec("small", "bfloat16", step, "pyvene", checkpointing=False))
    assert not theirs.error, theirs.error
    assert ours.loss == pytest.approx(theirs.loss, rel=1e-6)
    assert ours.grad_norm == pytest.approx(theirs.grad_norm, rel=1e-3)


@linux
@pytest.mark.slow  # a fresh Python process imports torch and transformers again
def test_fresh_process_and_report(capsys: pytest.CaptureFixture[str]) -> None:
    spec = lm.Spec("small", "bfloat16", "intervene", "iit", checkpointing=False)
    result = lm.measure_fresh(spec, timeout=300)
    assert not result.error and result.peak_bytes > 0 and result.loss > 0
    lm.print_report(lm.summarize({spec: [result, result]}), reps=2)
    table = capsys.readouterr().out
    assert "| intervene | off | iit |" in table


def test_bad_step_is_reported() -> None:
    result = lm.measure(lm.Spec("small", "bfloat16", "nonsense", "iit", checkpointing=False))  # type: ignore[arg-type]
    assert "unknown step 'nonsense'" in result.error
