"""MiniLM hierarchical equality over words: the encoding equals the tokenizer's, the network is
the pretrained blocks plus the sequence head, the alignment resolves to the x / z wordpieces of
every row, one IIT step (losses and gradients) and one DAS step equal hand-written steps on the
real pretrained weights, and (slow) behaviour-only fine-tuning leaves chance on held-out words."""

from __future__ import annotations

import copy

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from causal_models import CounterfactualGenerator
from iit.errors import ArgumentError
from iit.training import CounterfactualDataModule, IITConfig, IITModule, evaluate_alignment
from iit.transformers import TransformerInterventionable
from tasks.minilm_equality import (
    BaseFineTune,
    MiniLMClassifier,
    MiniLMEquality,
    MiniLMEqualityDAS,
    minilm_path,
    single_token_words,
)


@pytest.fixture(scope="module")
def tokenizer():
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(minilm_path()))


def _batch(task, n, seed=3):
    return CounterfactualGenerator(task.causal_model(), task.counterfactual_config(), seed=seed).generate(n)


def test_words_are_single_wordpieces_and_split_disjointly(tokenizer):
    task = MiniLMEquality(n_layers=1, layer=0, train_words=40, test_words=10)
    words, ids = single_token_words(50, 3000)
    assert sorted(task.words) == sorted(words) and len(set(words)) == 50
    for word, token_id in zip(words, ids):
        assert tokenizer(word, add_special_tokens=False)["input_ids"] == [token_id], word
    train, test = task.pools()
    assert not set(train.vectors.flatten().tolist()) & set(test.vectors.flatten().tolist())
    held_out = task.eval_sampler(task.causal_model())(64, torch.Generator().manual_seed(0))
    assert set(torch.cat(list(held_out.values())).flatten().long().tolist()) <= set(range(40, 50))


def test_network_is_the_pretrained_blocks_plus_the_sequence_head():
    import transformers

    task = MiniLMEquality(n_layers=2, layer=1, train_words=40, test_words=10)
    torch.manual_seed(0)
    net = task.build_network()
    assert isinstance(net, MiniLMClassifier) and len(net.bert.encoder.layer) == 2
    assert not net.bert.embeddings.word_embeddings.weight.requires_grad
    full = transformers.BertModel.from_pretrained(str(minilm_path())).eval()  # all 6 blocks
    inputs = task.encode_inputs(_batch(task, 8).base)
    with torch.no_grad():
        hidden = full(**inputs, output_hidden_states=True).hidden_states[2]  # after block 1
        first, relu, last = net.head
        expected = last(torch.relu(first(hidden.reshape(8, 6 * 384))))
        torch.testing.assert_close(net(**inputs), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ArgumentError, match="6 tokens"):
        net(inputs["input_ids"][:, :5], inputs["attention_mask"][:, :5])


def test_alignment_resolves_to_the_x_and_z_tokens_of_each_row(tokenizer):
    task = MiniLMEquality(n_layers=2, layer=1, train_words=40, test_words=10)
    module = IITModule(task, IITConfig(seed=0))
    assert isinstance(module.network, TransformerInterventionable)
    values = _batch(task, 8).base
    inputs = task.encode_inputs(values)
    encoded = tokenizer(task.sentences(values), return_tensors="pt")
    assert torch.equal(inputs["input_ids"], encoded["input_ids"])
    # positions of the 2nd and 4th words by the tokenizer's own word ids
    x_pos = [enc.word_ids.index(1) for enc in encoded.encodings]
    z_pos = [enc.word_ids.index(3) for enc in encoded.encodings]
    store = {}
    hook = module.network.model.bert.encoder.layer[1].register_forward_hook(
        lambda m, a, o: store.__setitem__("h", o[0] if isinstance(o, tuple) else o))
    try:
        with torch.no_grad():
            module.network.model(**inputs)
    finally:
        hook.remove()
    rows = torch.arange(8)
    alignment = task.alignments()["default"]
    with torch.no_grad():
        got = module.network.collect(inputs, [alignment["WX"], alignment["YZ"]])
    torch.testing.assert_close(got[alignment["WX"]].reshape(8, -1), store["h"][rows, x_pos])
    torch.testing.assert_close(got[alignment["YZ"]].reshape(8, -1), store["h"][rows, z_pos])


def _hand_iit_losses(net, task, batch, perm, patch):
    """Behaviour + IIT loss with raw hooks; sources are rows ``perm``; ``patch(hidden, h_src)``."""
    inputs = task.encode_inputs(batch.base)
    block = net.bert.encoder.layer[task.layer]
    store = {}
    handle = block.register_forward_hook(lambda m, a, o: store.__setitem__("h", o[0] if isinstance(o, tuple) else o))
    out_b = net(**inputs)
    handle.remove()
    h_src = store["h"][perm]

    def patch_block(m, a, o):
        hidden = patch(o[0] if isinstance(o, tuple) else o, h_src)
        return (hidden, *o[1:]) if isinstance(o, tuple) else hidden

    handle = block.register_forward_hook(patch_block)
    out_cf = net(**inputs)
    handle.remove()
    wx, yz = (batch.base["W"] == batch.base["X"]).flatten(), (batch.base["Y"] == batch.base["Z"]).flatten()
    on_wx, on_yz = batch.intervened[:, 0], batch.intervened[:, 1]
    label = (wx == yz).long()
    label_cf = (torch.where(on_wx, wx[perm], wx) == torch.where(on_yz, yz[perm], yz)).long()
    return F.cross_entropy(out_b, label), F.cross_entropy(out_cf, label_cf)


def test_iit_step_equals_a_hand_written_step_on_minilm():
    task = MiniLMEquality(n_layers=2, layer=0, train_words=40, test_words=10)
    module = IITModule(task, IITConfig(seed=0))
    batch = _batch(task, 16)
    on_wx, on_yz = batch.intervened[:, 0], batch.intervened[:, 1]
    assert on_wx.any() and on_yz.any() and not (on_wx & on_yz).all()
    losses = module.compute_losses(batch, torch.Generator().manual_seed(7))
    losses["total"].backward()

    net = copy.deepcopy(module.network.model)
    net.zero_grad()
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(7))
    rows = torch.arange(16)

    def patch(hidden, h_src):
        hidden = hidden.clone()
        hidden[rows[on_wx], 2] = h_src[rows[on_wx], 2]
        hidden[rows[on_yz], 4] = h_src[rows[on_yz], 4]
        return hidden

    behaviour, iit = _hand_iit_losses(net, task, batch, perm, patch)
    torch.testing.assert_close(losses["behaviour"], behaviour, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["iit"], iit, rtol=1e-5, atol=1e-6)
    (behaviour + iit).backward()
    ours = dict(module.network.model.named_parameters())
    n_checked = 0
    for name, p in net.named_parameters():
        if p.grad is None:
            assert ours[name].grad is None or not ours[name].grad.any(), name
            continue
        torch.testing.assert_close(ours[name].grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
        n_checked += 1
    assert n_checked > 20 and ours["bert.embeddings.word_embeddings.weight"].grad is None  # frozen


def test_das_step_on_the_frozen_finetuned_network_equals_a_hand_written_step():
    base = BaseFineTune(n_layers=1, layer=0, train_words=40, test_words=10, epochs=1, train_size=32, batch_size=32,
                        val_size=32)
    task = MiniLMEqualityDAS(k=4, base=base)
    module = IITModule(task, IITConfig(freeze_network=True, behaviour_weight=0.0, seed=0))
    assert not any(p.requires_grad for p in module.network.parameters())
    learned = [p for p in module.parameters() if p.requires_grad]
    assert len(learned) == 2  # one basis per place
    batch = _batch(task, 16)
    on_wx, on_yz = batch.intervened[:, 0], batch.intervened[:, 1]
    losses = module.compute_losses(batch, torch.Generator().manual_seed(7))
    losses["total"].backward()
    with torch.no_grad():
        W = {v: module.learned[f"{v}_0"].rotation.matrix().clone() for v in ("WX", "YZ")}  # [384, 4]
    assert torch.allclose(W["WX"].T @ W["WX"], torch.eye(4), atol=1e-5)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(7))
    rows = torch.arange(16)

    def patch(hidden, h_src):
        hidden = hidden.clone()
        for v, on, pos in (("WX", on_wx, 2), ("YZ", on_yz, 4)):
            b, s = hidden[rows[on], pos], h_src[rows[on], pos]
            hidden[rows[on], pos] = b + (s - b) @ W[v] @ W[v].T
        return hidden

    net = copy.deepcopy(module.network.model)
    _, iit = _hand_iit_losses(net, task, batch, perm, patch)
    torch.testing.assert_close(losses["iit"], iit, rtol=1e-5, atol=1e-6)


def test_bad_settings_are_rejected():
    with pytest.raises(ArgumentError, match="layer"):
        MiniLMEquality(n_layers=2, layer=2)
    with pytest.raises(ArgumentError, match="n_layers"):
        MiniLMEquality(n_layers=7)
    with pytest.raises(ArgumentError, match="k must be"):
        MiniLMEqualityDAS(k=0)
    with pytest.raises(ArgumentError, match="seq_len, hidden and n_classes"):
        MiniLMClassifier(torch.nn.Identity(), seq_len=0)


@pytest.mark.slow
def test_iit_finetuning_puts_the_equalities_at_x_and_z():
    """400 IIT steps of the registered settings: task accuracy and IIA of WX / YZ on held-out words
    (chance 0.5; behaviour-only fine-tuning solves the task with IIA 0.63 / 0.68, README)."""
    task = MiniLMEquality()
    pl.seed_everything(0, verbose=False)
    module = IITModule(task, IITConfig(lr=1e-4))
    data = CounterfactualDataModule(task, train_size=25_600, val_size=500, batch_size=64, seed=0)
    pl.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    ).fit(module, data)
    result = evaluate_alignment(module, data)
    assert result["task_acc"] >= 0.9, result
    assert result["iia/WX"] >= 0.9 and result["iia/YZ"] >= 0.9, result


@pytest.mark.slow
def test_behaviour_finetuning_leaves_chance_on_held_out_words():
    """300 steps of the registered settings (task acc at chance is 0.5; the full run reaches 0.997)."""
    task = MiniLMEquality()
    pl.seed_everything(0, verbose=False)
    module = IITModule(task, IITConfig(lr=1e-4, iit_weight=0.0))
    data = CounterfactualDataModule(task, train_size=19_200, val_size=500, batch_size=64, seed=0)
    pl.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    ).fit(module, data)
    assert evaluate_alignment(module, data)["task_acc"] >= 0.9
