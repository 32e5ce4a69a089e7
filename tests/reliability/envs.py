"""Environments of the catalogue: tiny models with their wrappers, inputs and a next correct
call checked against an independent reference (a plain forward or a hand computation)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from causal_models import standard
from iit import Coordinate, Index, Interventionable, ZeroAblation
from iit.attribution import Saliency
from tests.attribution.conftest import mlp64, tiny_bert
from tests.conftest import ToyMLP
from tests.iit.transformers._models import tiny_model
from tests.reliability.harness import Env


def mlp_env() -> Env:
    """ToyMLP (4 -> 8 -> 8 -> 3) wrapped; good: zero-ablating layers.0 equals the hand-built
    forward with a zero hidden state."""
    torch.manual_seed(0)
    model = ToyMLP()
    net = Interventionable(model)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))

    def good() -> tuple[Tensor, Tensor]:
        got = net.intervene(x, [ZeroAblation(Coordinate("layers.0"))])
        with torch.no_grad():
            want = model.head(model.layers[1](torch.zeros(3, 8)))
        return got.detach(), want

    return Env(model, net, x, good)


def seq_env() -> Env:
    """nn.Sequential(Linear 8->8, ReLU, Linear 8->8, Linear 8->2) wrapped; good: collecting
    module 2's output equals the hand-computed hidden state."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 2))
    net = Interventionable(model)
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(2))
    coord = Coordinate("2", Index.dims(0, 4))

    def good() -> tuple[Tensor, Tensor]:
        got = net.collect(x, [coord])[coord]
        with torch.no_grad():
            want = model[2](model[1](model[0](x)))[:, :4]
        return got.detach(), want

    return Env(model, net, x, good, {"cm": standard.hierarchical_equality(emb_dim=2)})


def frozen_env() -> Env:
    """seq_env with a frozen model (DAS trains interventions only)."""
    env = seq_env()
    env.model.requires_grad_(False)
    return env


def gpt2_env() -> Env:
    """A 3-layer, 16-wide GPT-2 wrapped; good: block 0's output at the last token equals the
    model's own ``hidden_states[1]``."""
    from iit.transformers import Tokens, TransformerCoordinate, TransformerInterventionable

    model = tiny_model("gpt2")
    net = TransformerInterventionable(model)
    ids = torch.randint(2, 60, (2, 5), generator=torch.Generator().manual_seed(3))
    x = {"input_ids": ids, "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    coord = TransformerCoordinate(0, "block_output", position=Tokens.last())

    def good() -> tuple[Tensor, Tensor]:
        got = net.collect(x, [coord])[coord]
        with torch.no_grad():
            want = model(**x, output_hidden_states=True).hidden_states[1][:, -1:]
        return got.detach(), want

    return Env(model, net, x, good)


def gpt2lm_env() -> Env:
    """A tiny GPT-2 causal LM wrapped (generation); good: greedy generation of 2 tokens without
    an effective intervention equals a hand-written greedy loop."""
    from iit import generate
    from iit.transformers import TransformerCoordinate, TransformerInterventionable

    model = tiny_model("gpt2", head=True)
    net = TransformerInterventionable(model)
    ids = torch.randint(2, 60, (2, 4), generator=torch.Generator().manual_seed(4))
    x = {"input_ids": ids, "attention_mask": torch.ones(2, 4, dtype=torch.long)}
    coord = TransformerCoordinate(0, "block_output", position=0)

    def good() -> tuple[Tensor, Tensor]:
        from iit import Interchange

        got = generate(net, x, [Interchange(coord)], [x], max_new_tokens=2)  # source == base: no effect
        seq = ids
        with torch.no_grad():
            for _ in range(2):
                seq = torch.cat([seq, model(input_ids=seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
        return got, seq[:, 4:]

    return Env(model, net, x, good)


def none_env() -> Env:
    """No model: causal models, configs; good: digit_sum runs to the hand-computed sums."""
    cm = standard.digit_sum(4)
    inputs = {"x": torch.tensor([1, 2]), "y": torch.tensor([3, 0]), "z": torch.tensor([4, 4])}

    def good() -> tuple[Tensor, Tensor]:
        return cm.run(inputs)["O"], torch.tensor([8, 6])

    return Env(None, cm, inputs, good)


def bert_env() -> Env:
    """A tiny BERT classifier; good: Saliency of the embeddings equals the autograd gradient."""
    model = tiny_bert()
    ids = torch.randint(2, 40, (1, 4), generator=torch.Generator().manual_seed(5))

    def good() -> tuple[Tensor, Tensor]:
        emb_layer = "bert.embeddings.word_embeddings"
        got = Saliency(model, layer=emb_layer, abs=False).attribute(ids, 0)
        emb = model.bert.embeddings.word_embeddings(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=emb).logits
        (grad,) = torch.autograd.grad(logits[:, 0].sum(), emb)
        return got.detach(), grad

    return Env(model, None, ids, good)


def mlp64_env() -> Env:
    """The float64 5 -> 8 -> 6 -> 3 MLP (semiring); good: the real-semiring backward equals the
    input gradient."""
    from iit.attribution.semiring import SemiringConfig, semiring_backward

    model = mlp64()
    x = torch.randn(1, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(6))

    def good() -> tuple[Tensor, Tensor]:
        result = semiring_backward(model, x, 0, SemiringConfig(semiring="real"))
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(xg)[:, 0].sum(), xg)
        return next(iter(result.values.values())).detach(), grad

    return Env(model, None, x, good)


class Lookup(nn.Module):
    """TX-Ray toy: token t's activation at the 3 neurons is row t of a fixed table."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(4, 3)
        with torch.no_grad():
            self.emb.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.2, -0.5], [0.1, 0.3, 0.8], [0.4, 0.7, 0.6]]))
        self.head = nn.Linear(3, 2)

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.head(self.emb(input_ids).mean(1))


TXRAY_BATCHES = [{"input_ids": torch.tensor([[1, 2, 3], [1, 1, 0]])}]


def txray_env() -> Env:
    """TX-Ray on the Lookup model; good: token 1's max1 mass at neuron 0 is 0.9 per occurrence
    (three occurrences: 2.7)."""
    from iit.attribution.txray import TXRayConfig, record_distributions

    model = Lookup()

    def good() -> tuple[Tensor, Tensor]:
        rec = record_distributions(model, TXRAY_BATCHES, TXRayConfig(module="emb", num_features=4))
        return rec.mass[0, 1].float(), torch.tensor(2.7)

    return Env(model, None, TXRAY_BATCHES, good)


ENVS: dict[str, Callable[[], Env]] = {
    "mlp": mlp_env,
    "seq": seq_env,
    "frozen": frozen_env,
    "gpt2": gpt2_env,
    "gpt2lm": gpt2lm_env,
    "none": none_env,
    "bert": bert_env,
    "mlp64": mlp64_env,
    "txray": txray_env,
}
