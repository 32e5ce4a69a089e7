"""Catalogue, part 2: transformer coordinates, generation, DAS, alignments and training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from iit import (
    Alignment,
    AlignmentError,
    ArgumentError,
    ArgumentTypeError,
    BoundlessRotatedInterchange,
    Coordinate,
    CoordinateError,
    DASBatch,
    DASConfig,
    Index,
    Interchange,
    Interventionable,
    InterventionError,
    InterventionShapeError,
    LowRankRotatedInterchange,
    RotatedInterchange,
    Rotation,
    SourceCache,
    TemperatureSchedule,
    ZeroAblation,
    das_step,
    generate,
    train_das,
)
from iit.transformers import Tokens, TransformerCoordinate, TransformerInterventionable
from tests.conftest import ToyMLP
from tests.iit.training.tiny import TinyDigitSum, TinyNet
from tests.iit.transformers._models import tiny_model
from tests.reliability.envs import ENVS
from tests.reliability.harness import Case, Env, run_case

B0 = TransformerCoordinate(0, "block_output")


def _tc(env: Env, coord: object) -> object:
    return env.net.collect(env.x, [coord])


def _meta_tokens(env: Env) -> object:
    with torch.device("meta"):
        meta = TransformerInterventionable(tiny_model("gpt2"))
    inputs = {k: v.to("meta") for k, v in env.x.items()}
    return meta.collect(inputs, [TransformerCoordinate(0, "block_output", position=Tokens.last())])


def _short_source(env: Env) -> object:
    source = {k: v[:, :3] for k, v in env.x.items()}
    return env.net.intervene(env.x, [Interchange(B0)], [source])


def _bad_boundary(env: Env) -> object:
    iv = BoundlessRotatedInterchange(Coordinate("2"), 8)
    with torch.no_grad():
        iv.boundary.fill_(3.0)
    return iv


def _das_step_out_of_range(env: Env) -> object:
    iv = _bad_boundary(env)
    batch = DASBatch(env.x, [env.x], torch.zeros(4, dtype=torch.long))
    return das_step(env.net, [iv], batch, nn.functional.cross_entropy, torch.optim.SGD(iv.parameters(), lr=0.1))


def _batch(env: Env) -> DASBatch:
    return DASBatch(env.x, [env.x.flip(0)], torch.zeros(4, dtype=torch.long))


def _train(env: Env, interventions: object, batches: object = None) -> object:
    batches = [_batch(env)] if batches is None else batches
    return train_das(env.net, interventions, batches, nn.functional.cross_entropy)


def _align(env: Env, mapping: dict, **kw: object) -> Alignment:
    return Alignment(env.extra["cm"], mapping, **kw)


def _check(env: Env, mapping: dict, **kw: object) -> None:
    _align(env, mapping, **kw).check(env.net, env.x)


def _interchange_with(env: Env, encode: object) -> object:
    from causal_models import CounterfactualConfig, CounterfactualGenerator, standard
    from causal_models.data import IndependentSampler

    cm = standard.digit_sum(4)
    batch = CounterfactualGenerator(cm, CounterfactualConfig(variables=("S",)), IndependentSampler(cm), seed=0).generate(3)
    alignment = Alignment(cm, {"S": Coordinate("layers.0", Index.dims(0, 4))})
    return alignment.interchange(env.net, batch, encode)


def _tiny_env() -> Env:
    """TinyNet with a layers.0 only 8 wide (the task aligns dims 0:8 and 8:16 there)."""
    net = TinyNet()
    net.layers[0] = nn.Sequential(nn.Linear(15, 8), nn.Tanh())
    net.layers[1] = nn.Sequential(nn.Linear(8, 16), nn.Tanh())
    x = torch.zeros(2, 15)

    def good() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return net(x), net.head(net.layers[1](net.layers[0](x)))

    return Env(net, None, x, good)


def _iit_module(network: nn.Module, **config: object) -> object:
    from iit.training import IITConfig, IITModule

    return IITModule(TinyDigitSum(), IITConfig(**config), network=network)


ENVS_HERE = {**ENVS, "tiny": _tiny_env}
R8 = Rotation(8, generator=torch.Generator().manual_seed(0))

CASES = [
    # ---- transformer coordinates
    Case("tc-layer-out-of-range", "gpt2", lambda e: _tc(e, TransformerCoordinate(9, "block_output")), CoordinateError,
         ("layer 9", "layers 0..2")),
    Case("tc-negative-layer", "gpt2", lambda e: TransformerCoordinate(-1, "block_output"), CoordinateError, ("-1",)),
    Case("tc-component-typo", "gpt2", lambda e: TransformerCoordinate(0, "block_outptu"), CoordinateError,
         ("'block_outptu'", "did you mean 'block_output'"), fixed=True),
    Case("tc-head-on-component-without-heads", "gpt2", lambda e: TransformerCoordinate(0, "block_output", head=1),
         CoordinateError, ("has no heads", "query")),
    Case("tc-head-out-of-range", "gpt2", lambda e: _tc(e, TransformerCoordinate(0, "query", head=9)), CoordinateError,
         ("head 9", "0..3")),
    Case("tc-negative-absolute-position", "gpt2", lambda e: TransformerCoordinate(0, "block_output", position=-1),
         CoordinateError, ("-1", "Tokens.at(-1)")),
    Case("tc-float-position", "gpt2", lambda e: TransformerCoordinate(0, "block_output", position=1.5),
         CoordinateError, ("float",)),
    Case("tc-position-list-not-tuple", "gpt2", lambda e: TransformerCoordinate(0, "block_output", position=[1, 2]),
         CoordinateError, ("list", "a tuple of ints")),
    Case("tc-position-beyond-sequence", "gpt2", lambda e: _tc(e, TransformerCoordinate(0, "block_output", position=9)),
         CoordinateError, ("position 9", "size 5"), before_forward=False),
    Case("tc-tokens-beyond-real-tokens", "gpt2",
         lambda e: _tc(e, TransformerCoordinate(0, "block_output", position=Tokens.at(7))), CoordinateError,
         ("row 0 has 5 real tokens", "[7]", "-5..4")),
    Case("tc-tokens-empty", "gpt2", lambda e: Tokens(()), CoordinateError, ("one or more",)),
    Case("tc-tokens-repeat", "gpt2", lambda e: Tokens.at(1, 1), CoordinateError, ("repeat",)),
    Case("tc-per-row-positions-wrong-rows", "gpt2",
         lambda e: _tc(e, TransformerCoordinate(0, "block_output", position=torch.tensor([[1], [2], [3]]))),
         CoordinateError, ("3 rows", "batch has 2"), before_forward=False),
    Case("tc-dims-beyond-width", "gpt2", lambda e: _tc(e, TransformerCoordinate(0, "block_output", dims=(0, 99))),
         CoordinateError, ("(0, 99)", "d_model=16")),
    Case("tc-base-source-lengths-differ", "gpt2", _short_source, InterventionShapeError,
         ("5 tokens", "source 0 has 3", "Tokens")),
    Case("tc-meta-model-tokens-positions", "gpt2", _meta_tokens, CoordinateError, ("meta tensor", "attention_mask"),
         fixed=True),
    Case("tc-collect-one-coordinate", "gpt2", lambda e: e.net.collect(e.x, B0), ArgumentTypeError,
         ("one TransformerCoordinate", "[coordinate]"), fixed=True),
    Case("tc-sources-one-dict", "gpt2", lambda e: e.net.intervene(e.x, [Interchange(B0)], e.x), ArgumentTypeError,
         ("one dict", "sources=[source]"), fixed=True),
    Case("tc-model-without-family", "gpt2", lambda e: TransformerInterventionable(ToyMLP()), CoordinateError,
         ("ToyMLP", "supports", "iit.Interventionable")),
    # ---- generation
    Case("generate-bad-apply-to", "gpt2lm", lambda e: generate(e.net, e.x, [], max_new_tokens=1, apply_to="all"),
         InterventionError, ("apply_to", "'all'")),
    Case("generate-zero-tokens", "gpt2lm", lambda e: generate(e.net, e.x, [], max_new_tokens=0), InterventionError,
         ("max_new_tokens", "0")),
    Case("generate-tokens-not-an-int", "gpt2lm", lambda e: generate(e.net, e.x, [], max_new_tokens="2"),
         ArgumentTypeError, ("max_new_tokens", "str"), fixed=True),
    Case("generate-prompt-a-tensor", "gpt2lm", lambda e: generate(e.net, e.x["input_ids"], [], max_new_tokens=1),
         ArgumentTypeError, ("prompt", "Tensor"), fixed=True),
    Case("generate-prompt-without-mask", "gpt2lm",
         lambda e: generate(e.net, {"input_ids": e.x["input_ids"]}, [], max_new_tokens=1), InterventionError,
         ("attention_mask", "['input_ids']")),
    Case("generate-sources-one-dict", "gpt2lm", lambda e: generate(e.net, e.x, [Interchange(B0)], e.x, max_new_tokens=1),
         ArgumentTypeError, ("sources=[source]",), fixed=True),
    Case("generate-model-without-logits", "gpt2", lambda e: generate(e.net, e.x, [ZeroAblation(B0)], max_new_tokens=1),
         InterventionError, ("no logits", "AutoModelForCausalLM"), before_forward=False),
    # ---- DAS: learned interventions and their training
    Case("das-rotation-k-above-d", "frozen", lambda e: Rotation(4, 5), InterventionError, ("d=4, k=5",)),
    Case("das-rotation-width-not-int", "frozen", lambda e: Rotation("8"), ArgumentTypeError, ("d", "str"), fixed=True),
    Case("das-dims-outside-rotation", "frozen", lambda e: RotatedInterchange(Coordinate("2"), 8, (5, 10)),
         InterventionError, ("(5, 10)", "d=8")),
    Case("das-dims-not-a-pair", "frozen", lambda e: RotatedInterchange(Coordinate("2"), 8, (3,)), InterventionError,
         ("pair of ints", "(3,)"), fixed=True),
    Case("das-non-square-rotation", "frozen", lambda e: RotatedInterchange(Coordinate("2"), Rotation(8, 4), (0, 2)),
         InterventionError, ("square", "k=4", "LowRankRotatedInterchange")),
    Case("das-rotation-not-a-rotation", "frozen", lambda e: RotatedInterchange(Coordinate("2"), "R", (0, 2)),
         ArgumentTypeError, ("iit.Rotation", "str"), fixed=True),
    Case("das-boundless-boundary-above-range", "frozen",
         lambda e: BoundlessRotatedInterchange(Coordinate("2"), 8, boundary=1.5), InterventionError,
         ("boundary=1.5", "[0.001, 1.0]"), fixed=True),
    Case("das-boundless-boundary-zero", "frozen", lambda e: BoundlessRotatedInterchange(Coordinate("2"), 8, boundary=0.0),
         InterventionError, ("boundary=0.0",), fixed=True),
    Case("das-boundless-temperature-zero", "frozen",
         lambda e: BoundlessRotatedInterchange(Coordinate("2"), 8, temperature=0.0), InterventionError,
         ("temperature", "> 0"), fixed=True),
    Case("das-set-temperature-negative", "frozen",
         lambda e: BoundlessRotatedInterchange(Coordinate("2"), 8).set_temperature(-1.0), InterventionError,
         ("-1.0",)),
    Case("das-low-rank-without-k", "frozen", lambda e: LowRankRotatedInterchange(Coordinate("2"), 8), InterventionError,
         ("needs k",)),
    Case("das-low-rank-k-disagrees", "frozen", lambda e: LowRankRotatedInterchange(Coordinate("2"), Rotation(8, 2), 3),
         InterventionError, ("k=3", "k=2"), fixed=True),
    Case("das-schedule-zero-steps", "frozen", lambda e: TemperatureSchedule(0), InterventionError, ("steps >= 1",)),
    Case("das-config-zero-lr", "frozen", lambda e: DASConfig(lr=0.0), InterventionError, ("lr=0.0",)),
    Case("das-config-negative-temperature", "frozen", lambda e: DASConfig(temperature=(1.0, -1.0)), InterventionError,
         ("(1.0, -1.0)",), fixed=True),
    Case("das-config-negative-penalty", "frozen", lambda e: DASConfig(boundary_penalty=-1.0), InterventionError,
         ("boundary_penalty", "-1.0"), fixed=True),
    Case("das-batch-rows-differ", "frozen", lambda e: DASBatch(e.x, [e.x[:2]], torch.zeros(4)), InterventionShapeError,
         ("'source 0': 2", "'base': 4"), fixed=True),
    Case("das-batch-labels-rows-differ", "frozen", lambda e: DASBatch(e.x, [e.x], torch.zeros(3)),
         InterventionShapeError, ("'labels': 3",), fixed=True),
    Case("das-batch-sources-one-tensor", "frozen", lambda e: DASBatch(e.x, e.x, torch.zeros(4)), ArgumentTypeError,
         ("sources=[source]",), fixed=True),
    Case("das-batch-labels-not-a-tensor", "frozen", lambda e: DASBatch(e.x, [e.x], [0, 1, 0, 1]), ArgumentTypeError,
         ("labels", "list"), fixed=True),
    Case("das-train-unfrozen-model", "seq", lambda e: _train(e, [RotatedInterchange(Coordinate("2"), 8, (0, 2))]),
         InterventionError, ("require grad", "requires_grad_(False)")),
    Case("das-source-cache-unfrozen-model", "seq", lambda e: SourceCache(e.net, []), InterventionError,
         ("require grad",)),
    Case("das-train-rotation-wider-than-layer", "frozen",
         lambda e: _train(e, [RotatedInterchange(Coordinate("2"), 16, (0, 2))]), AlignmentError,
         ("d=16", "8 units", "d=8"), before_forward=False, fixed=True),
    Case("das-train-one-batch-not-a-list", "frozen",
         lambda e: _train(e, [RotatedInterchange(Coordinate("2"), 8, (0, 2))], _batch(e)), ArgumentTypeError,
         ("list of DASBatch", "[batch]"), fixed=True),
    Case("das-train-one-intervention-not-a-list", "frozen",
         lambda e: _train(e, RotatedInterchange(Coordinate("2"), 8, (0, 2))), ArgumentTypeError,
         ("list of interventions",), fixed=True),
    Case("das-train-no-batches", "frozen", lambda e: _train(e, [RotatedInterchange(Coordinate("2"), 8, (0, 2))], []),
         InterventionError, ("at least one batch",)),
    Case("das-train-nothing-trainable", "frozen", lambda e: _train(e, [Interchange(Coordinate("2"))]),
         InterventionError, ("no trainable parameters",)),
    Case("das-step-boundary-out-of-range", "frozen", _das_step_out_of_range, InterventionError,
         ("boundary 3", "[0.001, 1.0]", "not clamped silently"), fixed=True),
    Case("das-rotation-wider-in-intervene", "frozen",
         lambda e: e.net.intervene(e.x, [RotatedInterchange(Coordinate("2"), 16, (0, 2))], [e.x]),
         InterventionShapeError, ("d=16", "(4, 8)"), before_forward=False),
    # ---- alignments
    Case("align-unknown-variable", "seq", lambda e: _align(e, {"WY": Coordinate("2")}), AlignmentError,
         ("'WY'", "did you mean")),
    Case("align-causal-model-missing", "seq", lambda e: Alignment(None, {"WX": Coordinate("2")}), ArgumentTypeError,
         ("CausalModel", "NoneType"), fixed=True),
    Case("align-mapping-a-list", "seq", lambda e: Alignment(e.extra["cm"], [("WX", Coordinate("2"))]),
         ArgumentTypeError, ("mapping", "list"), fixed=True),
    Case("align-interchange-encoded-rows-differ", "mlp", lambda e: _interchange_with(e, lambda v: torch.zeros(5, 4)),
         InterventionShapeError, ("5 rows", "batch of 3"), fixed=True),
    Case("align-empty-mapping", "seq", lambda e: _align(e, {}), AlignmentError, ("at least one variable",)),
    Case("align-string-not-a-coordinate", "seq", lambda e: _align(e, {"WX": "2"}), AlignmentError,
         ("'2' is not a coordinate", "iit.Coordinate")),
    Case("align-to-nothing", "seq", lambda e: _align(e, {"WX": []}), AlignmentError, ("aligned to nothing",)),
    Case("align-ablation-reads-no-source", "seq", lambda e: _align(e, {"WX": ZeroAblation(Coordinate("2"))}),
         AlignmentError, ("ZeroAblation reads no source",)),
    Case("align-unknown-output", "seq", lambda e: _align(e, {"WX": Coordinate("2")}, output="O2"), AlignmentError,
         ("'O2'",)),
    Case("align-overlapping-units", "seq",
         lambda e: _check(e, {"WX": Coordinate("2", Index.dims(0, 4)), "YZ": Coordinate("2", Index.dims(2, 6))}),
         AlignmentError, ("'WX'", "'YZ'", "share units", "allow_overlap=True"), before_forward=False),
    Case("align-shared-rotation-overlapping-dims", "seq",
         lambda e: _align(e, {"WX": RotatedInterchange(Coordinate("2"), R8, (0, 4)),
                              "YZ": RotatedInterchange(Coordinate("2"), R8, (3, 6))}),
         AlignmentError, ("rotated dims [3, 4)", "share one Rotation"), fixed=True),
    Case("align-shared-rotation-across-two-hook-sites", "seq",
         lambda e: _check(e, {"WX": RotatedInterchange(Coordinate("2"), R8, (0, 4)),
                              "YZ": RotatedInterchange(Coordinate("3", io="input"), R8, (2, 8))}),
         AlignmentError, ("rotated dims [2, 4)", "same tensor"), before_forward=False, fixed=True),
    Case("align-same-tensor-output-and-next-input", "seq",
         lambda e: _check(e, {"WX": Coordinate("2", Index.dims(0, 4)), "YZ": Coordinate("3", Index.dims(2, 6), io="input")}),
         AlignmentError, ("2.output[dims 0:4]", "3.input[dims 2:6]", "same tensor"), before_forward=False, fixed=True),
    Case("align-rotation-over-plain-units", "seq",
         lambda e: _check(e, {"WX": RotatedInterchange(Coordinate("2"), 8, (0, 2)), "YZ": Coordinate("2", Index.dims(6, 8))}),
         AlignmentError, ("a rotation over the whole slot",), before_forward=False, fixed=True),
    Case("align-rotation-wider-than-layer", "seq",
         lambda e: _check(e, {"WX": RotatedInterchange(Coordinate("2"), 16, (0, 4))}), AlignmentError,
         ("d=16", "8 units", "d=8"), before_forward=False, fixed=True),
    Case("align-rotation-narrower-than-layer", "seq",
         lambda e: _check(e, {"WX": RotatedInterchange(Coordinate("2"), 4, (0, 2))}), AlignmentError,
         ("d=4", "8 units"), before_forward=False, fixed=True),
    Case("align-boundary-out-of-range-in-check", "seq", lambda e: _check(e, {"WX": _bad_boundary(e)}),
         InterventionError, ("variable 'WX'", "boundary 3"), fixed=True),
    Case("align-source-slot-shape-differs", "seq",
         lambda e: _check(e, {"WX": Interchange(Coordinate("2", Index.dims(0, 4)),
                                                source_coordinate=Coordinate("2", Index.dims(0, 3)))}),
         AlignmentError, ("(4, 3)", "(4, 4)"), before_forward=False, fixed=True),
    Case("align-check-unknown-module", "seq", lambda e: _check(e, {"WX": Coordinate("5")}), CoordinateError,
         ("'5'",)),
    Case("align-check-index-out-of-range", "seq", lambda e: _check(e, {"WX": Coordinate("2", Index.dims(4, 12))}),
         CoordinateError, ("variable 'WX'", "[4, 12)", "size 8"), before_forward=False),
    Case("align-require-aligned", "seq", lambda e: _align(e, {"WX": Coordinate("2")}).require_aligned(["WX", "YZ"]),
         AlignmentError, ("['YZ']",)),
    Case("align-interventions-of-unaligned", "seq", lambda e: _align(e, {"WX": Coordinate("2")}).interventions("YZ"),
         AlignmentError, ("'YZ'", "aligned variable")),
    # ---- training
    Case("train-config-negative-lr", "none", lambda e: _iit_module(TinyNet(), lr=-1.0), ArgumentError,
         ("IITConfig.lr", "-1.0"), fixed=True),
    Case("train-config-all-weights-zero", "none",
         lambda e: _iit_module(TinyNet(), behaviour_weight=0.0, iit_weight=0.0), ArgumentError, ("loss weights",),
         fixed=True),
    Case("train-network-too-narrow-for-alignment", "tiny", lambda e: _iit_module(e.model), CoordinateError,
         ("[8, 16)", "size 8"), before_forward=False),
    Case("train-unknown-alignment-name", "none", lambda e: _iit_module(TinyNet(), alignment="swaped"), AlignmentError,
         ("'swaped'", "'swapped'")),
    Case("train-data-zero-size", "none", lambda e: _data_module(train_size=0), ArgumentError, ("train=0",), fixed=True),
    Case("train-metric-shapes-differ", "none", lambda e: _metric().update(torch.ones(3), torch.ones(2)), ArgumentError,
         ("(3,)", "(2,)"), fixed=True),
]


def _data_module(**sizes: int) -> object:
    from iit.training import CounterfactualDataModule

    return CounterfactualDataModule(TinyDigitSum(), **sizes)


def _metric() -> object:
    from iit.training import InterchangeAccuracy

    return InterchangeAccuracy()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_catalogue(case: Case) -> None:
    run_case(case, ENVS_HERE)


def test_disjoint_dims_of_a_shared_rotation_pass_every_check() -> None:
    """The valid counterpart of the overlap cases: disjoint dims of one rotation, at one site
    and across the output/next-input pair, are accepted and interchange as DAS defines."""
    env = ENVS["frozen"]()
    cm = env.extra["cm"]
    for mapping in (
        {"WX": RotatedInterchange(Coordinate("2"), R8, (0, 4)), "YZ": RotatedInterchange(Coordinate("2"), R8, (4, 8))},
        {"WX": RotatedInterchange(Coordinate("2"), R8, (0, 4)),
         "YZ": RotatedInterchange(Coordinate("3", io="input"), R8, (4, 8))},
    ):
        Alignment(cm, mapping).check(env.net, env.x)
    iv = RotatedInterchange(Coordinate("2"), R8, (0, 4))
    source = env.x.flip(0)
    got = env.net.intervene(env.x, [iv], [source])
    with torch.no_grad():
        m = env.model
        hb, hs = m[2](m[1](m[0](env.x))), m[2](m[1](m[0](source)))
        w = R8.matrix()[:, :4]
        want = m[3](hb + ((hs - hb) @ w) @ w.T)
    torch.testing.assert_close(got, want)


def test_generate_accepts_one_intervention_like_intervene() -> None:
    env = ENVS["gpt2lm"]()
    one = generate(env.net, env.x, Interchange(TransformerCoordinate(0, "block_output", position=0)), [env.x],
                   max_new_tokens=2)
    got, want = env.good()
    torch.testing.assert_close(one, want)


class _Reuse(nn.Module):
    """Anchor ``a``'s tensor is freed before ``c``'s of the same shape is made, so the allocator
    can give ``c`` the same address; that must not be taken for "the same tensor". (Without the
    probe holding the tensors it saw, such layouts gave false overlaps in this test's loop.)"""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Identity(), nn.Identity(), nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x.clone())
        b = self.b(torch.tanh(a))
        del a
        return self.c(torch.tanh(b))


def test_freed_memory_reused_by_a_later_site_is_not_the_same_tensor() -> None:
    cm = ENVS["seq"]().extra["cm"]
    mapping = {"WX": Coordinate("a", Index.dims(0, 4)), "YZ": Coordinate("c", Index.dims(0, 4))}
    for width in (64, 256, 1024):  # the allocator's reuse depends on the size; every check must pass
        x = torch.randn(4, width)
        for _ in range(10):
            Alignment(cm, mapping).check(Interventionable(_Reuse()), x)
    same = {"WX": Coordinate("a", Index.dims(0, 4)), "YZ": Coordinate("a", Index.dims(2, 6), io="input")}
    with pytest.raises(AlignmentError, match="same tensor"):  # an Identity's input and output really are one
        Alignment(cm, same).check(Interventionable(_Reuse()), x)
