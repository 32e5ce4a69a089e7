"""Compile a RASP program with tracr and convert the weights to a PyTorch transformer.

The compiled model (tracr's ``CompiledTransformerModel``): token + position embeddings; per
layer an attention sublayer (``softmax(q k^T / sqrt(key_size))`` over non-pad keys, no layer norm)
and an MLP sublayer (ReLU), each added to the residual stream; the output is the residual
projected onto the output variable's dims (argmax for a categorical output). The PyTorch module
reproduces this with named identity modules at every residual-stream point::

    embed                 [batch, seq, d_model]   residual after the embeddings
    blocks.{i}.resid_mid  [batch, seq, d_model]   after layer i's attention
    blocks.{i}.resid_post [batch, seq, d_model]   after layer i's MLP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from iit.errors import NamingError
from tasks.compiled.programs import ProgramSpec

__all__ = ["CompiledTransformer", "CompiledModel", "compile_program", "conversion_mismatches"]


def _t(x: Any) -> Tensor:
    return torch.tensor(np.asarray(x), dtype=torch.float32)


class _Attention(nn.Module):
    def __init__(self, p: dict[str, Any], heads: int, key_size: int) -> None:
        super().__init__()
        self.heads, self.key_size = heads, key_size
        for name in ("query", "key", "value", "linear"):
            lin = nn.Linear(*np.asarray(p[name]["w"]).shape)
            with torch.no_grad():
                lin.weight.copy_(_t(p[name]["w"]).T)
                lin.bias.copy_(_t(p[name]["b"]))
            setattr(self, name, lin)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        b, t, _ = x.shape
        q = self.query(x).view(b, t, self.heads, self.key_size)
        k = self.key(x).view(b, t, self.heads, self.key_size)
        v = self.value(x).view(b, t, self.heads, self.key_size)
        logits = torch.einsum("bthd,bThd->bhtT", q, k) / math.sqrt(self.key_size)  # [B, H, T, T]
        logits = torch.where(keep[:, None, None, :], logits, torch.full_like(logits, -1e30))
        weights = torch.softmax(logits, dim=-1)
        out = torch.einsum("bhtT,bThd->bthd", weights, v).reshape(b, t, self.heads * self.key_size)
        return self.linear(out)


class _Block(nn.Module):
    def __init__(self, p: dict[str, Any], prefix: str, heads: int, key_size: int) -> None:
        super().__init__()
        self.attn = _Attention({n: p[f"{prefix}/attn/{n}"] for n in ("query", "key", "value", "linear")}, heads, key_size)
        w1, w2 = p[f"{prefix}/mlp/linear_1"], p[f"{prefix}/mlp/linear_2"]
        self.mlp = nn.Sequential(nn.Linear(*np.asarray(w1["w"]).shape), nn.ReLU(), nn.Linear(*np.asarray(w2["w"]).shape))
        with torch.no_grad():
            self.mlp[0].weight.copy_(_t(w1["w"]).T)
            self.mlp[0].bias.copy_(_t(w1["b"]))
            self.mlp[2].weight.copy_(_t(w2["w"]).T)
            self.mlp[2].bias.copy_(_t(w2["b"]))
        self.resid_mid, self.resid_post = nn.Identity(), nn.Identity()

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        x = self.resid_mid(x + self.attn(x, keep))
        return self.resid_post(x + self.mlp(x))


class CompiledTransformer(nn.Module):
    """tracr's compiled transformer in PyTorch.

    Args:
        params: tracr's haiku parameters (``{module: {"w", "b"} | {"embeddings"}}``).
        num_layers, num_heads, key_size: from tracr's model config.
        output_dims: residual dims of the output variable, in tracr's output-space order.
        pad_id: the pad token's id (keys with it are masked).

    ``forward(tokens [batch, seq])`` returns ``[batch, seq, len(output_dims)]``: the residual
    projected onto the output dims (logits-like scores for a categorical output, the value for a
    numerical one).
    """

    def __init__(
        self, params: dict[str, Any], num_layers: int, num_heads: int, key_size: int, output_dims: list[int], pad_id: int
    ) -> None:
        super().__init__()
        self.token_embed = nn.Embedding.from_pretrained(_t(params["token_embed"]["embeddings"]), freeze=True)
        self.pos_embed = nn.Embedding.from_pretrained(_t(params["pos_embed"]["embeddings"]), freeze=True)
        self.embed = nn.Identity()
        self.blocks = nn.ModuleList(
            _Block(params, f"transformer/layer_{i}", num_heads, key_size) for i in range(num_layers)
        )
        self.register_buffer("output_dims", torch.tensor(output_dims, dtype=torch.long))
        self.pad_id = pad_id

    @property
    def d_model(self) -> int:
        return int(self.token_embed.weight.shape[1])

    def forward(self, tokens: Tensor) -> Tensor:
        keep = tokens != self.pad_id  # [B, T]
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embed(self.token_embed(tokens) + self.pos_embed(positions)[None])
        for block in self.blocks:
            x = block(x, keep)
        return x[..., self.output_dims]


@dataclass
class CompiledModel:
    """A compiled program: tracr's model, the PyTorch module and the residual labels.

    Attributes:
        spec: the program.
        program: its output SOp.
        tracr_model: tracr's ``AssembledTransformerModel``.
        module: the `CompiledTransformer`.
        residual_labels: ``"<variable>:<value>"`` (categorical) or ``"<variable>"`` (numerical)
            per residual dim.
        token_ids: input token -> id (``"BOS"`` included).
        output_values: the output value of each output dim (categorical).
    """

    spec: ProgramSpec
    program: Any
    tracr_model: Any
    module: CompiledTransformer
    residual_labels: list[str]
    token_ids: dict[Any, int]
    output_values: list[Any]

    def variable_dims(self, label: str) -> list[int]:
        """Residual dims holding variable ``label`` (a RASP label such as ``"reverse"``)."""
        dims = [i for i, name in enumerate(self.residual_labels) if name.split(":")[0] == label]
        if not dims:
            known = sorted({n.split(":")[0] for n in self.residual_labels})
            raise NamingError(f"no residual dims labelled {label!r}; labels: {known}")
        return dims

    def variables(self) -> list[str]:
        """Every program variable with residual dims, except the embeddings' ``tokens`` and
        ``indices`` (and the compiler's hidden dims, e.g. a selector width's attention output)."""
        stack, labels = [self.program], set()
        while stack:
            expr = stack.pop()
            if expr.label not in labels:
                labels.add(expr.label)
                stack.extend(expr.children)
        names = []
        for name in self.residual_labels:
            head = name.split(":")[0]
            if head in labels and head not in ("tokens", "indices") and head not in names:
                names.append(head)
        return names

    def encode(self, sequences: list[list[Any]]) -> Tensor:
        """Token ids ``[batch, 1 + max_seq_len]``: BOS, the tokens, then pad tokens."""
        width = self.spec.max_seq_len
        pad = self.token_ids["compiler_pad"]
        return torch.tensor(
            [[self.token_ids["BOS"]] + [self.token_ids[t] for t in seq] + [pad] * (width - len(seq)) for seq in sequences]
        )

    def decode(self, output: Tensor, lengths: list[int] | None = None) -> list[list[Any]]:
        """Program outputs per row (BOS and pad positions dropped): argmax values, or the numbers."""
        lengths = lengths or [output.shape[1] - 1] * output.shape[0]
        if self.spec.categorical:
            idx = output[:, 1:].argmax(-1)
            return [[self.output_values[int(i)] for i in row[:n]] for row, n in zip(idx, lengths)]
        return [row[:n] for row, n in zip(output[:, 1:, 0].tolist(), lengths)]


def compile_program(spec: ProgramSpec) -> CompiledModel:
    """Compile ``spec`` with tracr (``compiler_bos="BOS"``) and convert it.

    Raises:
        ImportError: tracr is not installed (``pip install 'iit[tracr]'``).
    """
    try:
        from tracr.compiler import compiling
    except ImportError as err:
        raise ImportError("compiled programs need tracr: pip install 'iit[tracr]'") from err
    program = spec.build()
    model = compiling.compile_rasp_to_model(program, set(spec.vocab), spec.max_seq_len, compiler_bos="BOS")
    labels = [str(x) for x in model.residual_labels]
    cfg = model.model_config
    token_ids = dict(model.input_encoder.encoding_map)
    if spec.categorical:
        encoding = model.output_encoder.encoding_map  # output value -> index
        output_values = sorted(encoding, key=encoding.__getitem__)
        by_label = {name: i for i, name in enumerate(labels)}
        output_dims = [by_label[f"{program.label}:{v}"] for v in output_values]
    else:
        output_values = []
        output_dims = [labels.index(program.label)]
    module = CompiledTransformer(
        {k: dict(v) for k, v in model.params.items()}, cfg.num_layers, cfg.num_heads, cfg.key_size, output_dims,
        token_ids["compiler_pad"],
    ).eval()
    return CompiledModel(spec, program, model, module, labels, token_ids, output_values)


def conversion_mismatches(compiled: CompiledModel, atol: float = 1e-4) -> int:
    """Inputs (every valid sequence of every length, padded) on which the PyTorch module's output
    differs from tracr's forward pass on the same token ids: the argmax of a categorical output,
    the value (within ``atol``) of a numerical one, at every non-pad position after BOS."""
    import itertools

    import jax.numpy as jnp

    spec = compiled.spec
    valid = spec.valid or (lambda seq: True)
    seqs = [
        list(s) for n in range(1, spec.max_seq_len + 1) for s in itertools.product(spec.vocab, repeat=n) if valid(list(s))
    ]
    tokens = compiled.encode(seqs)
    with torch.no_grad():
        ours = compiled.module(tokens)
    ref = compiled.tracr_model.forward(compiled.tracr_model.params, jnp.asarray(tokens.numpy()))
    theirs = torch.tensor(np.asarray(ref.unembedded_output))  # [B, T]: argmax ids or values
    bad = 0
    for i, seq in enumerate(seqs):
        positions = slice(1, 1 + len(seq))
        if spec.categorical:
            bad += not torch.equal(ours[i, positions].argmax(-1), theirs[i, positions].long())
        else:
            bad += not torch.allclose(ours[i, positions, 0], theirs[i, positions].float(), atol=atol)
    return bad
