"""FirstTokenRepeatedOnce with a small BERT: does the top gradient path route through the
first token and its repeat? (paper §5.1)

    python -m tasks.semiring.first_token_repeated [--epochs N] [--examples K]

Trains a 2-layer BERT on raw token ids (4000 points instead of the paper's 1000 so that the
tiny model generalises within 10 epochs), then runs max-product semiring backpropagation from
the input embeddings to the gold logit of positive test examples. Prints: test accuracy; how
often the token with the largest top-path value is the first token or its repeat (chance
2/10); mean top-path value of relevant vs other tokens; and which self-attention branch
(query/key/value/residual) each token's top path takes per layer.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass

import torch

from iit.semiring import SemiringConfig, semiring_backward, top_path
from tasks.semiring.common import (
    TrainConfig,
    accuracy,
    attention_branch,
    tiny_bert_classifier,
    train_classifier,
)
from tasks.semiring.data import first_token_repeated_once, split

SOURCE = "bert.embeddings.word_embeddings"


@dataclass(frozen=True)
class Findings:
    test_accuracy: float
    top_token_is_relevant: float  # fraction of positive examples
    chance: float
    mean_value_relevant: float
    mean_value_other: float
    branches: dict[str, dict[str, int]]  # token class -> branch (per layer) -> count


def run(
    epochs: int = 10,
    examples: int = 16,
    path_examples: int = 4,
    num_points: int = 4000,
    seed: int = 0,
) -> Findings:
    """Train and analyse; returns the findings (see module docs)."""
    torch.set_num_threads(2)
    data = first_token_repeated_once(num_points=num_points, seed=seed)
    train, _, test = split(len(data.labels), seed=seed)
    model = tiny_bert_classifier(vocab_size=20, seed=seed)
    forward = lambda ids: model(input_ids=ids).logits  # noqa: E731
    model.train()
    train_classifier(forward, list(model.parameters()), data.ids[train], data.labels[train],
                     TrainConfig(epochs=epochs, seed=seed))  # fmt: skip
    model.eval()
    acc = accuracy(forward, data.ids[test], data.labels[test])

    pos = test[data.labels[test] == 1][:examples]
    ids, repeat = data.ids[pos], data.meta[pos, 0]
    config = SemiringConfig("max_product", sources=(SOURCE,), num_heads=2)
    res = semiring_backward(
        model.double(), {"input_ids": ids}, torch.ones(len(pos), dtype=torch.long), config
    )
    token_value = res.values[SOURCE].abs().amax(-1)  # [examples, seq]
    top = token_value.argmax(-1)
    relevant = torch.zeros_like(token_value, dtype=torch.bool)
    relevant[:, 0] = True
    relevant[torch.arange(len(pos)), repeat] = True
    hit = float(((top == 0) | (top == repeat)).float().mean())

    branches: dict[str, Counter] = {"first": Counter(), "repeat": Counter(), "other": Counter()}
    for row in range(min(path_examples, len(pos))):
        for tok in range(ids.shape[1]):
            d = int(res.values[SOURCE][row, tok].abs().argmax())
            modules = top_path(res, SOURCE, (row, tok, d)).modules()
            kind = "first" if tok == 0 else "repeat" if tok == int(repeat[row]) else "other"
            for layer in range(2):
                branches[kind][f"L{layer}:{attention_branch(modules, layer)}"] += 1
    return Findings(
        test_accuracy=acc,
        top_token_is_relevant=hit,
        chance=2 / ids.shape[1],
        mean_value_relevant=float(token_value[relevant].mean()),
        mean_value_other=float(token_value[~relevant].mean()),
        branches={k: dict(sorted(v.items())) for k, v in branches.items()},
    )


def main(argv: list[str] | None = None) -> Findings:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--points", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    f = run(epochs=args.epochs, examples=args.examples, num_points=args.points, seed=args.seed)
    print(f"test accuracy: {f.test_accuracy:.3f}")
    print(
        f"top-path token is the first token or its repeat: {f.top_token_is_relevant:.2f} (chance {f.chance:.2f})"
    )
    print(
        f"mean top-path |value|: relevant tokens {f.mean_value_relevant:.4g}, others {f.mean_value_other:.4g}"
    )
    print("self-attention branch of each token's top path (per layer):")
    for kind, counts in f.branches.items():
        print(f"  {kind:>6}: {counts}")
    return f


if __name__ == "__main__":
    main()
