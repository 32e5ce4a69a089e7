"""The semiring tasks' data generators (exact properties) and a quick FFOOM run."""

from __future__ import annotations

import math

import torch

from tasks.semiring.common import attention_branch
from tasks.semiring.data import SVA_VOCAB, ffoom, first_token_repeated_once, split, sva_grammar


def test_first_token_repeated_once_is_exact() -> None:
    data = first_token_repeated_once(num_points=300, seed=0)
    assert data.ids.shape == (300, 10) and int(data.labels.sum()) == 150
    assert ((data.ids >= 1) & (data.ids < 20)).all()  # 0 is reserved for padding
    first = data.ids[:, :1]
    occurrences = (data.ids == first).sum(1)
    assert torch.equal(occurrences, 1 + data.labels)  # exactly twice iff y = 1
    pos = data.labels == 1
    r = data.meta[pos, 0]
    assert ((r >= 1) & (r < 10)).all()
    assert torch.equal(data.ids[pos].gather(1, r[:, None]).squeeze(1), data.ids[pos, 0])
    assert (data.meta[~pos, 0] == -1).all()
    again = first_token_repeated_once(num_points=300, seed=0)
    assert torch.equal(again.ids, data.ids) and torch.equal(again.labels, data.labels)


def test_ffoom_label_depends_only_on_feature_zero() -> None:
    x, y = ffoom(500, seed=1)
    assert x.shape == (500, 4) and ((x >= 0) & (x < 1)).all()
    assert torch.equal(y, (x[:, 0] > 0.5).long())


def test_sva_grammar_agreement() -> None:
    data = sva_grammar(400, seed=0)
    rows = torch.arange(400)
    subject = data.ids[rows, data.meta[:, 0]]
    plural = (subject >= SVA_VOCAB.index("dogs")) & (subject <= SVA_VOCAB.index("cars"))
    singular = (subject >= SVA_VOCAB.index("dog")) & (subject <= SVA_VOCAB.index("car"))
    assert torch.equal(plural.long(), data.labels) and (plural | singular).all()
    has = data.meta[:, 1] >= 0
    attr = data.ids[rows[has], data.meta[has, 1]]
    attr_plural = (attr >= SVA_VOCAB.index("dogs")).long()
    assert torch.equal(data.meta[has, 2], (attr_plural != data.labels[has]).long())
    assert 0.5 < has.float().mean() < 0.9
    mask_id = SVA_VOCAB.index("[MASK]")
    assert ((data.ids == mask_id).sum(1) == 1).all()
    assert (data.ids[:, 0] == SVA_VOCAB.index("[CLS]")).all()


def test_split_is_a_partition() -> None:
    tr, va, te = split(100, seed=0)
    assert (len(tr), len(va), len(te)) == (70, 10, 20)
    assert sorted(torch.cat([tr, va, te]).tolist()) == list(range(100))


def test_attention_branch_parsing() -> None:
    mods = [
        "bert.embeddings",
        "bert.encoder.layer.0.attention.self.value",
        "bert.encoder.layer.1.output",
    ]
    assert attention_branch(mods, 0) == "value" and attention_branch(mods, 1) == "residual"


def test_ffoom_entropy_grows_with_width_and_respects_the_path_bound() -> None:
    from tasks.semiring.ffoom import run

    rows = run(hidden=(4, 16), points=400, epochs=3)
    assert rows[0].entropy_relevant < rows[1].entropy_relevant
    for r in rows:
        assert 0 <= r.entropy_relevant <= math.log(r.hidden**2) + 1e-9
