"""IIT training with TransformerCoordinate on tiny Llama and GPT-2 configs: the module's losses
and gradients equal a hand-written IIT step (raw hooks, per-row token positions of left-padded
mixed-length batches, head-level coordinates); strict IIT, evaluation and checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from causal_models import CounterfactualGenerator
from iit.training import (
    CounterfactualDataModule,
    IITConfig,
    IITModule,
    evaluate_alignment,
    load_module,
    make_trainer,
)
from iit.transformers import TransformerInterventionable
from tasks.token_digit_sum import TokenDigitSumLM

HALF = 16


def _task(family: str) -> TokenDigitSumLM:
    return TokenDigitSumLM(family, max_digit=4, d_model=32, n_layers=2, n_heads=4, max_pad=2)


def _block0(net, family):
    return net.model.layers[0] if family == "llama" else net.transformer.h[0]


def _out_proj(net, family):
    return net.model.layers[0].self_attn.o_proj if family == "llama" else net.transformer.h[0].attn.c_proj


def _hand_losses(net, task, family, batch, perm, alignment):
    """Behaviour + IIT loss written out with raw hooks; sources are rows ``perm`` of the batch."""
    inputs = task.encode_inputs(batch.base)
    length = inputs["input_ids"].shape[1]
    y_col = task.max_pad - task.fillers(batch.base) + 1  # [batch] absolute column of the y token
    rows = torch.arange(len(batch))
    on_s, on_z = batch.intervened[:, 0], batch.intervened[:, 1]
    block, proj = _block0(net, family), _out_proj(net, family)
    store = {}

    def grab(m, a, o):
        store["h"] = o[0] if isinstance(o, tuple) else o

    def grab_heads(m, args):
        store["heads"] = args[0]

    handles = [block.register_forward_hook(grab), proj.register_forward_pre_hook(grab_heads)]
    out_b = net(**inputs)
    for h in handles:
        h.remove()
    h_src, heads_src = store["h"][perm], store["heads"][perm]
    y_src = y_col[perm]

    def patch_block(m, a, o):
        hidden = (o[0] if isinstance(o, tuple) else o).clone()
        if alignment == "default":
            hidden[rows[on_s], y_col[on_s], :HALF] = h_src[rows[on_s], y_src[on_s], :HALF]
        hidden[rows[on_z], length - 1, :HALF] = h_src[rows[on_z], length - 1, :HALF]
        return (hidden, *o[1:]) if isinstance(o, tuple) else hidden

    def patch_heads(m, args):
        x = args[0].clone()  # [batch, seq, heads * d_head]; heads (0, 1) are the first 16 dims
        x[rows[on_s], y_col[on_s], :HALF] = heads_src[rows[on_s], y_src[on_s], :HALF]
        return (x, *args[1:])

    handles = [block.register_forward_hook(patch_block)]
    if alignment == "heads":
        handles.append(proj.register_forward_pre_hook(patch_heads))
    out_cf = net(**inputs)
    for h in handles:
        h.remove()
    x, y, z = (batch.base[k] for k in "xyz")
    xs, ys, zs = (batch.base[k][perm] for k in "xyz")
    label_cf = torch.where(on_s, xs + ys, x + y) + torch.where(on_z, zs, z)
    behaviour = F.cross_entropy(out_b.logits[:, -1, :13], x + y + z)
    iit = F.cross_entropy(out_cf.logits[:, -1, :13], label_cf)
    return behaviour, iit


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("alignment", ["default", "heads"])
def test_iit_step_equals_a_hand_written_step(family, alignment):
    task = _task(family)
    module = IITModule(task, IITConfig(alignment=alignment, seed=0))
    assert isinstance(module.network, TransformerInterventionable)
    batch = CounterfactualGenerator(task.causal_model(), task.counterfactual_config(), seed=3).generate(24)
    fillers = task.fillers(batch.base)
    assert len(set(fillers.tolist())) == 3  # mixed lengths: y at different columns per row
    assert batch.intervened[:, 0].any() and batch.intervened[:, 1].any()
    losses = module.compute_losses(batch, torch.Generator().manual_seed(7))
    losses["total"].backward()

    net = copy.deepcopy(module.network.model)
    net.zero_grad()
    perm = torch.randperm(len(batch), generator=torch.Generator().manual_seed(7))
    behaviour, iit = _hand_losses(net, task, family, batch, perm, alignment)
    torch.testing.assert_close(losses["behaviour"], behaviour, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["iit"], iit, rtol=1e-5, atol=1e-6)
    (behaviour + iit).backward()
    ours = dict(module.network.model.named_parameters())
    for name, p in net.named_parameters():
        if p.grad is None:
            assert ours[name].grad is None or not ours[name].grad.any(), name
            continue
        torch.testing.assert_close(ours[name].grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_strict_iit_fit_evaluate_and_checkpoint_on_llama(tmp_path):
    task = _task("llama")
    module = IITModule(task, IITConfig(lr=3e-3, strict_weight=1.0, seed=0))
    data = CounterfactualDataModule(task, train_size=96, val_size=48, batch_size=32, seed=0)
    trainer = make_trainer(task, max_epochs=1, root=tmp_path, progress_bar=False)
    trainer.fit(module, data)
    header = next(tmp_path.rglob("metrics.csv")).read_text().splitlines()[0]
    assert "train/strict_loss" in header and "val/strict_acc" in header and "val/iia/S" in header
    results = evaluate_alignment(module, data)
    assert {"iia/S", "iia/z", "strict_acc", "task_acc"} <= set(results)
    ckpt = next(tmp_path.rglob("*.ckpt"))
    loaded = load_module(ckpt, _task("llama"))
    assert isinstance(loaded.network, TransformerInterventionable)
    for (name, a), (_, b) in zip(module.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert evaluate_alignment(loaded, data) == results
    assert evaluate_alignment(str(ckpt), data, "S_at_x")["iia/S"] == pytest.approx(
        evaluate_alignment(module, data, "S_at_x")["iia/S"])
