"""Small models for the attribution tests (random init from configs, eval mode, no dropout)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

VOCAB = 40


def tiny_bert(*, zero_bias: bool = False, layers: int = 2, seed: int = 0) -> nn.Module:
    """BertForSequenceClassification, hidden 16, 4 heads, 3 labels."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = BertForSequenceClassification(config).eval()
    if zero_bias:
        zero_biases(model)
    return model


def tiny_gpt2(*, zero_bias: bool = False, seed: int = 0, layers: int = 2) -> nn.Module:
    """GPT2ForSequenceClassification, 2 layers, hidden 16, 4 heads, 3 labels (pad id 0)."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_embd=16,
        n_layer=layers,
        n_head=4,
        n_positions=32,
        num_labels=3,
        pad_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2ForSequenceClassification(config).eval()
    if zero_bias:
        zero_biases(model)
    return model


def tiny_distilbert(seed: int = 0) -> nn.Module:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(seed)
    config = DistilBertConfig(
        vocab_size=VOCAB,
        dim=16,
        n_layers=2,
        n_heads=4,
        hidden_dim=32,
        num_labels=3,
        max_position_embeddings=32,
        dropout=0.0,
        attention_dropout=0.0,
    )
    return DistilBertForSequenceClassification(config).eval()


def tiny_roberta(seed: int = 0) -> nn.Module:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(seed)
    config = RobertaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=40,
        num_labels=3,
        pad_token_id=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return RobertaForSequenceClassification(config).eval()


def zero_biases(model: nn.Module) -> None:
    """Set every bias (linear, LayerNorm β, Conv1D) to zero, in place."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()


def mlp64(seed: int = 1, bias: bool = True) -> nn.Sequential:
    """5 -> 8 -> 6 -> 3 ReLU MLP in float64."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(5, 8, bias=bias),
        nn.ReLU(),
        nn.Linear(8, 6, bias=bias),
        nn.ReLU(),
        nn.Linear(6, 3, bias=bias),
    ).double()


@pytest.fixture
def bert() -> nn.Module:
    return tiny_bert()


@pytest.fixture
def ids() -> torch.Tensor:
    torch.manual_seed(123)
    return torch.randint(2, VOCAB, (3, 7))
