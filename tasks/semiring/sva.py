"""Subject-verb agreement on a synthetic grammar: top gradient paths and entropy (paper §5.2,
appendix B.2).

    python -m tasks.semiring.sva [--epochs N] [--examples K]

A 2-layer BERT reads ``[CLS] the (ADJ) N_subj (PREP the (ADJ) N_attr) [MASK]`` and predicts
the verb number at ``[MASK]``. On test sentences whose attractor noun disagrees with the
subject, max-product semiring backpropagation from the input embeddings to the gold logit
finds the token whose embedding starts the top gradient path, and the entropy semiring gives
per-token gradient-graph entropy. Prints accuracy (with/without attractor), how often the top
path starts at the subject vs the attractor, per-layer attention branches of the subject's
top path, and mean entropy per token role.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from iit.semiring import SemiringConfig, semiring_backward, top_path
from tasks.semiring.common import (
    TrainConfig,
    accuracy,
    attention_branch,
    tiny_bert_classifier,
    train_classifier,
)
from tasks.semiring.data import SVA_VOCAB, split, sva_grammar

SOURCE = "bert.embeddings.word_embeddings"
MASK_ID = SVA_VOCAB.index("[MASK]")


class MaskedVerbClassifier(nn.Module):
    """BERT encoder + the sequence classifier head applied at the ``[MASK]`` position."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        clf = tiny_bert_classifier(vocab_size=len(SVA_VOCAB), seed=seed)
        self.bert, self.classifier = clf.bert, clf.classifier

    def forward(self, input_ids: Tensor) -> Tensor:  # [B, T] -> [B, 2]
        hidden = self.bert(
            input_ids=input_ids, attention_mask=(input_ids != 0).long()
        ).last_hidden_state
        pos = (input_ids == MASK_ID).long().argmax(1)  # [B]
        return self.classifier(hidden[torch.arange(len(input_ids)), pos])


@dataclass(frozen=True)
class Findings:
    accuracy_with_attractor: float
    accuracy_without_attractor: float
    top_path_starts_at: dict[str, float]  # role -> fraction of disagreeing-attractor examples
    subject_branches: dict[str, int]
    mean_entropy: dict[str, float]  # role -> mean per-token entropy (nats)


def run(epochs: int = 6, examples: int = 16, path_examples: int = 4, seed: int = 0) -> Findings:
    """Train and analyse; returns the findings (see module docs)."""
    torch.set_num_threads(2)
    data = sva_grammar(seed=seed)
    train, _, test = split(len(data.labels), seed=seed)
    model = MaskedVerbClassifier(seed)
    train_classifier(model, list(model.parameters()), data.ids[train], data.labels[train],
                     TrainConfig(epochs=epochs, lr=3e-3, seed=seed))  # fmt: skip
    model.eval()
    has_attr = data.meta[test, 1] >= 0
    acc_with = accuracy(model, data.ids[test][has_attr], data.labels[test][has_attr])
    acc_without = accuracy(model, data.ids[test][~has_attr], data.labels[test][~has_attr])

    hard = test[data.meta[test, 2] == 1][:examples]
    ids, labels, subj, attr = (
        data.ids[hard],
        data.labels[hard],
        data.meta[hard, 0],
        data.meta[hard, 1],
    )
    model.double()
    mp = semiring_backward(
        model, {"input_ids": ids}, labels, SemiringConfig("max_product", sources=(SOURCE,))
    )
    ent = semiring_backward(
        model, {"input_ids": ids}, labels, SemiringConfig("entropy", sources=(SOURCE,))
    )
    token_value = mp.values[SOURCE].abs().amax(-1)  # [K, T]
    # the [MASK] token's own residual stream trivially carries the largest value: compare the
    # content tokens (everything but [CLS], [MASK] and padding)
    token_value[(ids == 0) | (ids == MASK_ID) | (ids == SVA_VOCAB.index("[CLS]"))] = 0
    top = token_value.argmax(-1)
    rows = torch.arange(len(hard))
    starts = {
        "subject": float((top == subj).float().mean()),
        "attractor": float((top == attr).float().mean()),
    }
    starts["other"] = 1.0 - starts["subject"] - starts["attractor"]

    branches: Counter = Counter()
    for row in range(min(path_examples, len(hard))):
        d = int(mp.values[SOURCE][row, subj[row]].abs().argmax())
        modules = top_path(mp, SOURCE, (row, int(subj[row]), d)).modules()
        for layer in range(2):
            branches[f"L{layer}:{attention_branch(modules, layer)}"] += 1

    h = ent.values[SOURCE].mean(-1)  # [K, T] mean over embedding units
    role_mask = {
        "subject": torch.zeros_like(h, dtype=torch.bool),
        "attractor": torch.zeros_like(h, dtype=torch.bool),
    }
    role_mask["subject"][rows, subj] = True
    role_mask["attractor"][rows, attr] = True
    role_mask["other"] = (ids != 0) & ~role_mask["subject"] & ~role_mask["attractor"]
    entropy = {k: float(h[m].mean()) for k, m in role_mask.items()}
    return Findings(acc_with, acc_without, starts, dict(sorted(branches.items())), entropy)


def main(argv: list[str] | None = None) -> Findings:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    f = run(epochs=args.epochs, examples=args.examples, seed=args.seed)
    print(
        f"test accuracy: with attractor {f.accuracy_with_attractor:.3f}, without {f.accuracy_without_attractor:.3f}"
    )
    print("top gradient path starts at (content tokens, sentences with a disagreeing attractor):")
    for role, frac in f.top_path_starts_at.items():
        print(f"  {role:>9}: {frac:.2f}")
    print(f"attention branch of the subject's top path per layer: {f.subject_branches}")
    print("mean gradient-graph entropy per token role (nats): "
          + ", ".join(f"{k} {v:.3f}" for k, v in f.mean_entropy.items()))  # fmt: skip
    return f


if __name__ == "__main__":
    main()
