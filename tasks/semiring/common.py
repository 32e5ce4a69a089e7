"""Shared pieces of the semiring tasks: tiny models and a plain training loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "TrainConfig",
    "tiny_bert_classifier",
    "train_classifier",
    "accuracy",
    "attention_branch",
]


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings of `train_classifier`."""

    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0


def tiny_bert_classifier(
    vocab_size: int,
    num_labels: int = 2,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    seed: int = 0,
    init_range: float = 0.2,
) -> nn.Module:
    """``BertForSequenceClassification`` with eager attention and no dropout (random init with
    std ``init_range``; larger than BERT's 0.02 so the tiny model trains in a few epochs)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=2 * hidden, max_position_embeddings=32,
        num_labels=num_labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        attn_implementation="eager", initializer_range=init_range,
    )  # fmt: skip
    return BertForSequenceClassification(config)


def train_classifier(
    forward: Callable[[Tensor], Tensor],
    params: list[nn.Parameter],
    x: Tensor,
    y: Tensor,
    config: TrainConfig,
) -> list[float]:
    """Minimise cross-entropy of ``forward(x[batch]) -> logits [batch, classes]``; returns the
    mean loss per epoch."""
    torch.manual_seed(config.seed)
    opt = torch.optim.Adam(params, lr=config.lr)
    losses = []
    for _ in range(config.epochs):
        perm = torch.randperm(len(x))
        total = 0.0
        for i in range(0, len(x), config.batch_size):
            idx = perm[i : i + config.batch_size]
            loss = nn.functional.cross_entropy(forward(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(x))
    return losses


@torch.no_grad()
def accuracy(forward: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> float:
    """Fraction of rows whose argmax logit equals the label."""
    return float((forward(x).argmax(-1) == y).float().mean())


def attention_branch(modules: list[str], layer: int) -> str:
    """Which branch a path takes through encoder layer ``layer``: ``"query"``, ``"key"``,
    ``"value"`` (entered self-attention through that projection) or ``"residual"``."""
    prefix = f"encoder.layer.{layer}.attention.self."
    for m in modules:
        i = m.find(prefix)
        if i >= 0:
            rest = m[i + len(prefix) :].split(".")[0]
            if rest in ("query", "key", "value"):
                return rest
    return "residual"
