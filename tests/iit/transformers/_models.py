"""Tiny randomly initialised models of every supported family (shared by the transformer tests)."""

from __future__ import annotations

import torch
import transformers as tf
from torch import nn

VOCAB = 60


def tiny_config(family: str, attn: str = "sdpa") -> tf.PretrainedConfig:
    """A 3-layer, 16-wide, 4-head config of ``family`` (2 key-value heads for Llama-likes)."""
    common_gqa = dict(
        num_hidden_layers=3, hidden_size=16, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=24, vocab_size=VOCAB, max_position_embeddings=64,
    )
    configs = {
        "gpt2": lambda: tf.GPT2Config(
            n_layer=3, n_embd=16, n_head=4, n_inner=24, vocab_size=VOCAB, n_positions=64,
            bos_token_id=0, eos_token_id=0,
        ),
        "bert": lambda: tf.BertConfig(
            num_hidden_layers=3, hidden_size=16, num_attention_heads=4, intermediate_size=24,
            vocab_size=VOCAB, max_position_embeddings=64,
        ),
        "roberta": lambda: tf.RobertaConfig(
            num_hidden_layers=3, hidden_size=16, num_attention_heads=4, intermediate_size=24,
            vocab_size=VOCAB, max_position_embeddings=70, pad_token_id=1,
        ),
        "distilbert": lambda: tf.DistilBertConfig(
            n_layers=3, dim=16, n_heads=4, hidden_dim=24, vocab_size=VOCAB, max_position_embeddings=64
        ),
        "llama": lambda: tf.LlamaConfig(**common_gqa),
        "qwen2": lambda: tf.Qwen2Config(**common_gqa),
        "mistral": lambda: tf.MistralConfig(**common_gqa),
        "gpt_neox": lambda: tf.GPTNeoXConfig(
            num_hidden_layers=3, hidden_size=16, num_attention_heads=4, intermediate_size=24,
            vocab_size=VOCAB, max_position_embeddings=64,
        ),
    }
    config = configs[family]()
    config._attn_implementation = attn
    return config


FAMILY_NAMES = ["gpt2", "bert", "roberta", "distilbert", "llama", "qwen2", "mistral", "gpt_neox"]


def tiny_model(family: str, seed: int = 0, attn: str = "sdpa", head: bool = False) -> nn.Module:
    """A tiny base model (or causal-LM / masked-LM model with ``head=True``) in eval mode."""
    torch.manual_seed(seed)
    config = tiny_config(family, attn)
    cls = tf.AutoModelForCausalLM if head else tf.AutoModel
    if head and family in ("bert", "roberta", "distilbert"):
        cls = tf.AutoModelForMaskedLM
    model = cls.from_config(config, attn_implementation=attn)
    return model.eval()
