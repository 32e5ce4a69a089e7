"""Placement check: the same interventions, attributions and generations on a model placed in
different ways, compared with the model on the CPU (max abs difference and pass / fail).

Run::

    python benchmarks/gpu_check.py            # everything this machine can run
    python benchmarks/gpu_check.py --cpu-only # skip the CUDA parts even when a GPU is present
    python benchmarks/gpu_check.py --gpu-device cpu  # run the GPU section's code on the CPU (smoke test)

Placements (rows of the table):

* CPU (always): accelerate ``dispatch_model`` with cpu + disk offload, ``cpu_offload``, at every
  dtype; quantized models (optimum-quanto qint8, torchao int8 weight-only, bitsandbytes LLM.int8
  where installed) against their dequantized float twins.
* CUDA (when ``torch.cuda.is_available()``): the whole model on ``cuda:0``; a split with blocks on
  ``cuda:0`` and blocks on the CPU (``main_device="cpu"``: those blocks execute on the CPU); blocks
  on ``cuda:0`` with others cpu- and disk-offloaded (executed on ``cuda:0``); bfloat16 / float16 on
  the GPU; quantized models on the GPU (also bitsandbytes NF4). Cached source activations always
  come from the CPU reference run, so every intervention moves values across devices.

Features per placement: ``collect`` (block output, attention probabilities), ``intervene`` with a
live source and with cached CPU activations, zero and mean ablations, a DAS rotation (output and
rotation gradient), greedy generation with an interchange, and on a BERT classifier Saliency,
integrated gradients, LRP, attention rollout and ALTI.

Exit status 1 if any comparison fails.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transformers as tf  # noqa: E402

from iit import Interchange, MeanAblation, RotatedInterchange, Rotation, ZeroAblation  # noqa: E402
from iit.generation import generate  # noqa: E402
from iit.transformers import Tokens, TransformerCoordinate, TransformerInterventionable  # noqa: E402

VOCAB, WIDTH = 64, 32
Outputs = dict[str, Tensor]


@dataclass
class Row:
    placement: str
    dtype: str
    feature: str
    diff: float
    tol: float

    @property
    def ok(self) -> bool:
        return self.diff <= self.tol


def tiny_llama(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    config = tf.LlamaConfig(
        num_hidden_layers=4, hidden_size=WIDTH, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=64,
    )
    return tf.LlamaForCausalLM(config).eval().to(dtype)


def tiny_bert(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    config = tf.BertConfig(
        num_hidden_layers=4, hidden_size=WIDTH, num_attention_heads=4, intermediate_size=64,
        vocab_size=VOCAB, max_position_embeddings=64, num_labels=3,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return tf.BertForSequenceClassification(config).eval().to(dtype)


def inputs(seed: int, device: str = "cpu") -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (3, 7), generator=g)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


BLOCK = TransformerCoordinate(1, "block_output", position=Tokens.last())
PROBS = TransformerCoordinate(2, "attention_probs", head=1)
MLP = TransformerCoordinate(3, "mlp_output", position=(1, 4))


def lm_features(model: nn.Module, device: str, cached: dict[str, object]) -> Outputs:
    """Every intervention feature of one causal-LM placement, as CPU float64 tensors."""
    net = TransformerInterventionable(model)
    base, source = inputs(1, device), inputs(2, device)
    out: Outputs = {}
    got = net.collect(base, [BLOCK, PROBS])
    out["collect block_output"], out["collect attention_probs"] = got[BLOCK], got[PROBS]
    out["intervene live source"] = net.intervene(base, [Interchange(BLOCK)], [source]).logits
    out["intervene cached CPU source"] = net.intervene(base, [Interchange(BLOCK)], [cached["source"]]).logits
    out["zero ablation"] = net.intervene(base, [ZeroAblation(MLP)]).logits
    out["mean ablation"] = net.intervene(base, [MeanAblation.fit(net, [base, source], MLP)]).logits
    rotation = Rotation(WIDTH, generator=torch.Generator().manual_seed(0))
    das = RotatedInterchange(BLOCK, rotation, (0, WIDTH // 2))
    logits = net.intervene(base, [das], [source]).logits
    logits[:, -1].float().logsumexp(-1).sum().backward()
    out["DAS output"] = logits.detach()
    out["DAS rotation gradient"] = rotation.parametrizations.weight.original.grad
    out["generate (interchange)"] = generate(net, base, [Interchange(BLOCK)], [source], max_new_tokens=3)
    return {k: v.detach().cpu().double() for k, v in out.items()}


def attribution_features(model: nn.Module, device: str) -> Outputs:
    from iit.attribution import ALTI, LRP, AttentionRollout, IntegratedGradients, Saliency

    ids = inputs(3, device)["input_ids"]
    out = {f"attribution {m.__name__}": m(model).attribute(ids, 1) for m in (Saliency, IntegratedGradients, LRP)}
    out.update({f"attribution {m.__name__}": m(model).attribute(ids, 1) for m in (AttentionRollout, ALTI)})
    return {k: v.detach().cpu().double() for k, v in out.items()}


def compare(placement: str, dtype: torch.dtype, ours: Outputs, ref: Outputs, tol: float) -> list[Row]:
    name = str(dtype).split(".")[-1]
    rows = []
    for key, value in ref.items():
        scale = max(1.0, float(value.abs().max()))
        rows.append(Row(placement, name, key, float((ours[key] - value).abs().max()) / scale, tol))
    return rows


def cached_source(model: nn.Module) -> dict[str, object]:
    return {"source": TransformerInterventionable(model).collect(inputs(2), [BLOCK])}


# Relative tolerances: placements on the CPU are exact; across devices kernels round differently.
EXACT = 0.0
CROSS_DEVICE = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}


def cpu_rows() -> list[Row]:
    from accelerate import cpu_offload, dispatch_model

    rows: list[Row] = []
    device_map = {
        "model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
        "model.layers.1": "disk", "model.layers.2": "cpu", "model.layers.3": "disk",
        "model.norm": "disk", "lm_head": "cpu",
    }
    bert_map = {
        "bert.embeddings": "cpu", "bert.encoder.layer.0": "disk", "bert.encoder.layer.1": "cpu",
        "bert.encoder.layer.2": "disk", "bert.encoder.layer.3": "cpu", "bert.pooler": "disk",
        "dropout": "cpu", "classifier": "cpu",
    }
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        model = tiny_llama(dtype)
        ref = lm_features(model, "cpu", cached_source(model))
        with tempfile.TemporaryDirectory() as tmp:
            placed = dispatch_model(copy.deepcopy(model), device_map, main_device="cpu", offload_dir=tmp)
            rows += compare("cpu + disk offload", dtype, lm_features(placed, "cpu", cached_source(model)), ref, EXACT)
        placed = cpu_offload(copy.deepcopy(model), execution_device=torch.device("cpu"))
        rows += compare("cpu_offload", dtype, lm_features(placed, "cpu", cached_source(model)), ref, EXACT)
        if dtype in (torch.float64, torch.float32):
            bert = tiny_bert(dtype)
            with tempfile.TemporaryDirectory() as tmp:
                placed = dispatch_model(copy.deepcopy(bert), bert_map, main_device="cpu", offload_dir=tmp)
                rows += compare("cpu + disk offload", dtype, attribution_features(placed, "cpu"),
                                attribution_features(bert, "cpu"), EXACT)
    rows += quantized_rows("cpu")
    return rows


def quantizers(device: str) -> dict[str, Callable[[nn.Module, Path], nn.Module]]:
    """Backends that import here: name -> (float model, tmp dir) -> quantized model on device."""
    found: dict[str, Callable[[nn.Module, Path], nn.Module]] = {}
    try:
        from optimum import quanto

        def by_quanto(model: nn.Module, tmp: Path) -> nn.Module:
            quanto.quantize(model, weights=quanto.qint8)
            quanto.freeze(model)
            return model

        found["quanto qint8"] = by_quanto
    except ImportError as error:
        print(f"optimum-quanto unavailable: {error}")
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        def by_torchao(model: nn.Module, tmp: Path) -> nn.Module:
            quantize_(model, Int8WeightOnlyConfig())
            return model

        found["torchao int8"] = by_torchao
    except ImportError as error:
        print(f"torchao unavailable: {error}")
    try:
        import bitsandbytes  # noqa: F401

        kinds = {"bnb int8": tf.BitsAndBytesConfig(load_in_8bit=True)}
        if device != "cpu":  # the CPU NF4 path fails on tiny shapes (see tests/iit/test_quantized.py)
            kinds["bnb nf4"] = tf.BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
            )
        for name, config in kinds.items():
            def by_bnb(model: nn.Module, tmp: Path, config=config) -> nn.Module:
                model.save_pretrained(tmp / "float")
                return tf.AutoModelForCausalLM.from_pretrained(
                    tmp / "float", quantization_config=config, device_map={"": device}, dtype=torch.float32
                ).eval()

            found[name] = by_bnb
    except ImportError as error:
        print(f"bitsandbytes unavailable: {error}")
    return found


def dequantize(weight: Tensor) -> Tensor | None:
    """The float weight behind a quantized one (``None`` for a plain float weight)."""
    kind = type(weight).__name__
    if kind in ("Int8Params", "Params4bit"):
        import bitsandbytes as bnb

        if kind == "Int8Params":
            return bnb.functional.int8_vectorwise_dequant(weight.data, weight.SCB)
        return bnb.functional.dequantize_4bit(weight.data, weight.quant_state)
    if type(weight.data) not in (Tensor, nn.Parameter):  # quanto / torchao tensor subclasses
        return weight.dequantize()
    return None


def dequantized_twin(model: nn.Module, quantized: nn.Module) -> nn.Module:
    """A float copy of ``model`` carrying ``quantized``'s dequantized weights."""
    twin = copy.deepcopy(model)
    table = dict(twin.named_modules())
    for name, module in quantized.named_modules():
        weight = getattr(module, "weight", None)
        value = dequantize(weight) if isinstance(weight, Tensor) else None
        if value is not None:
            target = table[name].weight
            target.data = value.to(target.device, target.dtype).reshape(target.shape)
    return twin


def quantized_rows(device: str) -> list[Row]:
    rows: list[Row] = []
    tol = {"quanto qint8": 1e-4, "torchao int8": 1e-3, "bnb int8": 5e-2, "bnb nf4": 1e-3}
    for name, quantize in quantizers(device).items():
        model = tiny_llama(torch.float32)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                quantized = quantize(copy.deepcopy(model).to(device), Path(tmp)).requires_grad_(False)
                twin = dequantized_twin(model.to(device), quantized).requires_grad_(False)
                cached = cached_source(tiny_llama(torch.float32))
                ours = lm_features(quantized, device, cached)
                ref = lm_features(twin, device, cached)
            except Exception as error:  # a backend that imports but cannot run here: say so
                print(f"{name} on {device}: could not run ({type(error).__name__}: {error})")
                rows.append(Row(f"{name} on {device} (did not run)", "float32", "all", float("inf"), 0.0))
                continue
        rows += compare(f"{name} on {device} vs dequantized", torch.float32, ours, ref, tol[name])
    return rows


def place(kind: str, model: nn.Module, gpu: str, tmp: str) -> tuple[nn.Module, str]:
    """A copy of ``model`` placed as ``kind``; returns it and the device its inputs go to."""
    from accelerate import dispatch_model

    if kind == "all on GPU":
        return copy.deepcopy(model).to(gpu), gpu
    blocks = [f"model.layers.{i}" for i in range(4)]
    if kind == "GPU + cpu split (mixed execution)":
        # main_device="cpu": the "cpu" blocks execute on the CPU, the others on the GPU
        device_map = {"model.embed_tokens": gpu, "model.rotary_emb": gpu, "model.norm": gpu, "lm_head": "cpu"}
        device_map.update(dict(zip(blocks, [gpu, "cpu", gpu, "cpu"])))
        return dispatch_model(copy.deepcopy(model), device_map, main_device="cpu"), "cpu"
    # main device = GPU: "cpu" and "disk" blocks are offloaded and executed on the GPU
    device_map = {"model.embed_tokens": gpu, "model.rotary_emb": gpu, "model.norm": "cpu", "lm_head": gpu}
    device_map.update(dict(zip(blocks, [gpu, "cpu", "disk", gpu])))
    return dispatch_model(copy.deepcopy(model), device_map, main_device=gpu, offload_dir=tmp), "cpu"


def gpu_rows(gpu: str) -> list[Row]:
    from accelerate import dispatch_model

    if gpu.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    rows: list[Row] = []
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        model = tiny_llama(dtype)
        ref = lm_features(model, "cpu", cached_source(model))
        for kind in ("all on GPU", "GPU + cpu split (mixed execution)", "GPU + cpu/disk offload"):
            with tempfile.TemporaryDirectory() as tmp:
                placed, device = place(kind, model, gpu, tmp)
                ours = lm_features(placed, device, cached_source(model))
            rows += compare(kind.replace("GPU", gpu), dtype, ours, ref, CROSS_DEVICE[dtype])
        if dtype in (torch.float32, torch.float64):
            bert = tiny_bert(dtype)
            ref = attribution_features(bert, "cpu")
            ours = attribution_features(copy.deepcopy(bert).to(gpu), gpu)
            rows += compare(f"all on {gpu}", dtype, ours, ref, CROSS_DEVICE[dtype])
            blocks = [f"bert.encoder.layer.{i}" for i in range(4)]
            device_map = {"bert.embeddings": gpu, "bert.pooler": gpu, "dropout": gpu, "classifier": "cpu"}
            device_map.update(dict(zip(blocks, [gpu, "cpu", gpu, "cpu"])))
            placed = dispatch_model(copy.deepcopy(bert), device_map, main_device="cpu")
            rows += compare(f"{gpu} + cpu split (mixed execution)", dtype, attribution_features(placed, "cpu"),
                            ref, CROSS_DEVICE[dtype])
    rows += quantized_rows(gpu)
    return rows


def print_table(rows: list[Row]) -> None:
    widths = [max(len(r.placement) for r in rows), 8, max(len(r.feature) for r in rows)]
    header = f"{'placement':<{widths[0]}}  {'dtype':<{widths[1]}}  {'feature':<{widths[2]}}  {'max |diff|':>11}  {'tol':>8}  result"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.placement:<{widths[0]}}  {r.dtype:<{widths[1]}}  {r.feature:<{widths[2]}}  "
              f"{r.diff:>11.3g}  {r.tol:>8.1g}  {'pass' if r.ok else 'FAIL'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-only", action="store_true", help="skip the CUDA parts")
    parser.add_argument(
        "--gpu-device", default="cuda:0",
        help="device of the GPU parts (default cuda:0; 'cpu' runs the GPU section's code on the CPU, "
        "a smoke test of this script on a machine without a GPU)",
    )
    args = parser.parse_args()
    print(f"torch {torch.__version__}, transformers {tf.__version__}, CUDA available: {torch.cuda.is_available()}")
    print("max |diff| is relative to max(1, max |reference|); reference: the model on the CPU "
          "(quantized rows: the dequantized float twin on the same device)\n")
    rows = cpu_rows()
    gpu = (torch.cuda.is_available() or args.gpu_device == "cpu") and not args.cpu_only
    if gpu:
        rows += gpu_rows(args.gpu_device)
    print_table(rows)
    failed = [r for r in rows if not r.ok]
    print(f"\n{len(rows) - len(failed)} / {len(rows)} comparisons pass")
    if gpu and args.gpu_device == "cpu":
        print("GPU section ran with --gpu-device cpu (smoke test of its code): no GPU was used")
    elif not gpu:
        reason = "--cpu-only" if args.cpu_only else "CUDA is not available on this machine"
        print(f"GPU parts SKIPPED ({reason}): cuda:0 placement, cuda/cpu splits, cuda dtypes, "
              "quantized models on cuda (incl. bitsandbytes NF4)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
