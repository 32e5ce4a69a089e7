"""The family table: where each transformer component lives in a Hugging Face model.

Adding a family is one `Family` entry: module paths relative to one block per component, the layout of the query / key / value
projections, and the config attributes that hold the head counts. Example:

```python
GPT2 = Family(
    name="gpt2", model_types=("gpt2",), layers="h",
    sites={"attention_output": Site("attn", output=0), ...},
    qkv=QKVLayout("fused_blocks", ("attn.c_attn",)), attention_module="attn",
)
```

Paths are relative to the *base* model (``GPT2Model``); a task head around it (``GPT2LMHeadModel``)
is found through ``model.base_model_prefix``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from iit.errors import CoordinateError, did_you_mean

__all__ = [
    "Component",
    "COMPONENTS",
    "HEAD_COMPONENTS",
    "Site",
    "QKVLayout",
    "Family",
    "FAMILIES",
    "ModelShape",
    "family_of",
    "model_shape",
]

Component = Literal[
    "block_input",
    "block_output",
    "attention_output",
    "mlp_output",
    "mlp_hidden",
    "head_attention_output",
    "query",
    "key",
    "value",
    "attention_probs",
]
"""The name of a place inside a transformer block (the type of `TransformerCoordinate.component`); `COMPONENTS` lists the values."""
COMPONENTS: tuple[str, ...] = (
    "block_input",
    "block_output",
    "attention_output",
    "mlp_output",
    "mlp_hidden",
    "head_attention_output",
    "query",
    "key",
    "value",
    "attention_probs",
)
"""Every valid `Component` name, in order: block input / output, attention and MLP outputs, per-head values and attention probabilities."""
# Components whose last axis is made of heads (``[batch, seq, n_heads * d_head]``) or that
# have a head axis (``attention_probs``: ``[batch, n_heads, seq_q, seq_k]``).
HEAD_COMPONENTS: frozenset[str] = frozenset(
    {"head_attention_output", "query", "key", "value", "attention_probs"}
)


@dataclass(frozen=True)
class Site:
    """A module hook relative to one block: ``path`` (``""`` = the block itself), the output
    (``io="output"``) or the input (``io="input"``), and an output selector (tuple index).

    Args:
        path: the module's path relative to the block.
        io: hook the module's ``"output"`` or its ``"input"``.
        output: which element of a tuple output (or positional input) holds the tensor
            (``None``: the value is the tensor itself).

    Raises:
        TypeError: an unknown field (the table is declarative; paths are checked against the
            model when a coordinate is resolved).

    Examples:
        >>> Site("attn", output=0)
        Site(path='attn', io='output', output=0)
    """

    path: str
    io: Literal["output", "input"] = "output"
    output: int | None = None


@dataclass(frozen=True)
class QKVLayout:
    """Where queries, keys and values are computed.

    ``kind``:
        * ``"separate"``: three projections, ``paths = (q, k, v)``; each output is
          ``[batch, seq, heads * d_head]`` (keys / values have the key-value head count).
        * ``"fused_blocks"``: one projection ``paths = (qkv,)`` whose output is
          ``[q | k | v]`` along the last axis (GPT-2 ``c_attn``).
        * ``"fused_per_head"``: one projection whose output, viewed as
          ``[batch, seq, heads, 3 * d_head]``, is ``[q_h | k_h | v_h]`` per head (GPT-NeoX).

    Args:
        kind: one of the layouts above.
        paths: the projection module paths, relative to the block.

    Raises:
        TypeError: a missing or unknown field.
    """

    kind: Literal["separate", "fused_blocks", "fused_per_head"]
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Family:
    """One model family: declarative paths and config attribute names.

    Args:
        name: short family name.
        model_types: ``config.model_type`` values of this family.
        layers: path of the ``nn.ModuleList`` of blocks in the base model.
        sites: component -> `Site` relative to one block (all components but
            ``query`` / ``key`` / ``value`` / ``attention_probs``).
        qkv: the query / key / value layout.
        attention_module: path (relative to the block) of the module that calls the attention
            function; the attention probabilities ``[batch, heads, seq_q, seq_k]`` are the output
            of its child hook point ``iit_attention_probs`` (added for one call by
            `iit.transformers.attention.attention_probs_hook_points`).
        norm: the normalisation of the blocks: ``"layernorm"`` (``nn.LayerNorm``) or
            ``"rmsnorm"`` (Llama-style, no centring, no bias).
        pre_ln: pre-LN blocks (the norm before each sub-layer; decoders here) or post-LN
            (after each residual sum: BERT, RoBERTa, DistilBERT).
        attention_norm: pre-LN: the norm before attention; post-LN: the norm after the
            attention residual sum (its input is that sum, its output the block's mid-point).
        mlp_norm: pre-LN: the norm before the MLP; post-LN: the norm after the MLP residual.
        gate_activation: gated MLPs (``down(act(gate(x)) * up(x))``): the activation module
            whose output gates the up projection; ``None`` for plain MLPs.
        parallel_attr: config attribute that, when true, makes attention and MLP read the same
            block input (GPT-NeoX ``use_parallel_residual``); ``None``: sequential.
        explained_position: the output position attributions explain by default (``0`` =
            ``[CLS]`` for encoders, ``-1`` = the last token for decoders).
        final_norm: pre-LN: path (in the base model) of the norm after the last block (its input
            is the final residual stream); ``""`` for post-LN.
        heads_attr: config attribute holding the number of query heads.
        kv_heads_attr: config attribute holding the number of key-value heads (``None``: as
            many as query heads).
        layers_attr: config attribute holding the number of blocks.
        hidden_attr: config attribute holding the model width.

    Raises:
        TypeError: a missing or unknown field (paths are checked against the model when a
            coordinate is resolved).
    """

    name: str
    model_types: tuple[str, ...]
    layers: str
    sites: dict[str, Site]
    qkv: QKVLayout
    attention_module: str
    heads_attr: str = "num_attention_heads"
    kv_heads_attr: str | None = None
    layers_attr: str = "num_hidden_layers"
    hidden_attr: str = "hidden_size"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    pre_ln: bool = True
    attention_norm: str = ""
    mlp_norm: str = ""
    gate_activation: str | None = None
    parallel_attr: str | None = None
    explained_position: int = -1
    final_norm: str = ""


def _decoder_sites(attn: str, o_proj: str, mlp: str, down: str) -> dict[str, Site]:
    return {
        "block_input": Site("", io="input"),
        "block_output": Site(""),
        "attention_output": Site(f"{attn}.{o_proj}"),
        "head_attention_output": Site(f"{attn}.{o_proj}", io="input"),
        "mlp_output": Site(mlp),
        "mlp_hidden": Site(f"{mlp}.{down}", io="input"),
    }


GPT2 = Family(
    name="gpt2",
    model_types=("gpt2",),
    layers="h",
    sites={
        **_decoder_sites("attn", "c_proj", "mlp", "c_proj"),
        "attention_output": Site("attn", output=0),
    },
    qkv=QKVLayout("fused_blocks", ("attn.c_attn",)),
    attention_module="attn",
    attention_norm="ln_1",
    mlp_norm="ln_2",
    final_norm="ln_f",
)

_BERT_SITES = {
    "block_input": Site("", io="input"),
    "block_output": Site(""),
    "attention_output": Site("attention.output.dense"),
    "head_attention_output": Site("attention.output.dense", io="input"),
    "mlp_output": Site("output.dense"),
    "mlp_hidden": Site("output.dense", io="input"),
}
_BERT_QKV = QKVLayout(
    "separate", ("attention.self.query", "attention.self.key", "attention.self.value")
)


def _bert_like(name: str) -> Family:
    return Family(
        name=name,
        model_types=(name,),
        layers="encoder.layer",
        sites=_BERT_SITES,
        qkv=_BERT_QKV,
        attention_module="attention.self",
        pre_ln=False,
        attention_norm="attention.output.LayerNorm",
        mlp_norm="output.LayerNorm",
        explained_position=0,
    )


BERT = _bert_like("bert")
ROBERTA = _bert_like("roberta")

DISTILBERT = Family(
    name="distilbert",
    model_types=("distilbert",),
    layers="transformer.layer",
    sites={
        "block_input": Site("", io="input"),
        "block_output": Site(""),
        "attention_output": Site("attention.out_lin"),
        "head_attention_output": Site("attention.out_lin", io="input"),
        "mlp_output": Site("ffn.lin2"),
        "mlp_hidden": Site("ffn.lin2", io="input"),
    },
    qkv=QKVLayout("separate", ("attention.q_lin", "attention.k_lin", "attention.v_lin")),
    attention_module="attention",
    pre_ln=False,
    attention_norm="sa_layer_norm",
    mlp_norm="output_layer_norm",
    explained_position=0,
)

LLAMA = Family(
    name="llama",
    model_types=("llama", "qwen2", "mistral"),
    layers="layers",
    sites=_decoder_sites("self_attn", "o_proj", "mlp", "down_proj"),
    qkv=QKVLayout("separate", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    attention_module="self_attn",
    kv_heads_attr="num_key_value_heads",
    norm="rmsnorm",
    attention_norm="input_layernorm",
    mlp_norm="post_attention_layernorm",
    gate_activation="mlp.act_fn",
    final_norm="norm",
)

GPT_NEOX = Family(
    name="gpt_neox",
    model_types=("gpt_neox",),
    layers="layers",
    sites=_decoder_sites("attention", "dense", "mlp", "dense_4h_to_h"),
    qkv=QKVLayout("fused_per_head", ("attention.query_key_value",)),
    attention_module="attention",
    attention_norm="input_layernorm",
    mlp_norm="post_attention_layernorm",
    parallel_attr="use_parallel_residual",
    final_norm="final_layer_norm",
)

FAMILIES: dict[str, Family] = {
    mt: fam for fam in (GPT2, BERT, ROBERTA, DISTILBERT, LLAMA, GPT_NEOX) for mt in fam.model_types
}
"""The family table: Hugging Face ``config.model_type`` -> its `Family` (module paths, norms, attention layout). Add an entry to support a new architecture."""


@dataclass(frozen=True)
class ModelShape:
    """Sizes read from the config: layers, heads, key-value heads, head width, model width,
    and the prefix of the base model inside the wrapped model (``"transformer."`` or ``""``).

    Made by `model_shape`.

    Attributes:
        n_layers: number of blocks.
        n_heads: number of query heads.
        n_kv_heads: number of key-value heads (grouped-query attention: fewer than ``n_heads``).
        d_head: width of one head.
        d_model: model width.
        prefix: the base model's path inside the wrapped model, with a trailing dot, or ``""``.

    Raises:
        TypeError: a missing or unknown field.

    Examples:
        >>> shape = ModelShape(n_layers=2, n_heads=8, n_kv_heads=2, d_head=16, d_model=128, prefix="")
        >>> [shape.kv_head(h) for h in range(8)]
        [0, 0, 0, 0, 1, 1, 1, 1]
    """

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    prefix: str

    def kv_head(self, head: int) -> int:
        """The key / value head a query head reads (grouped-query attention: query heads
        ``[g * r, (g + 1) * r)`` share key-value head ``g``, ``r = n_heads // n_kv_heads``)."""
        return head // (self.n_heads // self.n_kv_heads)


def family_of(model: nn.Module) -> Family:
    """The `Family` of a Hugging Face model, from ``model.config.model_type``.

    Raises:
        CoordinateError: no config, or a model type without a family entry (lists the
            nearest supported types).
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise CoordinateError(
            f"{type(model).__name__} has no Hugging Face config.model_type; TransformerInterventionable "
            f"supports {sorted(FAMILIES)} (use iit.Interventionable with module paths otherwise)"
        )
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise CoordinateError(
            f"model type {model_type!r} has no family entry{did_you_mean(model_type, FAMILIES, cutoff=0.4)} "
            f"supported: {sorted(FAMILIES)}; add a Family to iit.transformers.families.FAMILIES"
        ) from None


def model_shape(model: nn.Module, family: Family) -> ModelShape:
    """Read layer / head counts of ``model`` (see `ModelShape`).

    Args:
        model: a Hugging Face model with a ``config``.
        family: its `Family` (see `family_of`).

    Returns:
        The `ModelShape`.

    Raises:
        CoordinateError: the query heads cannot be shared evenly by the key-value heads.
        AttributeError: the config lacks an attribute the family names.
    """
    config = model.config
    n_heads = int(getattr(config, family.heads_attr))
    d_model = int(getattr(config, family.hidden_attr))
    n_kv = int(getattr(config, family.kv_heads_attr) or n_heads) if family.kv_heads_attr else n_heads
    d_head = getattr(config, "head_dim", None) or d_model // n_heads
    prefix_name = getattr(model, "base_model_prefix", "")
    inner = getattr(model, prefix_name, None) if prefix_name else None
    prefix = f"{prefix_name}." if isinstance(inner, nn.Module) and inner is not model else ""
    if n_heads % n_kv:
        raise CoordinateError(f"{n_heads} query heads cannot share {n_kv} key-value heads evenly")
    return ModelShape(
        n_layers=int(getattr(config, family.layers_attr)),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_head=int(d_head),
        d_model=d_model,
        prefix=prefix,
    )
