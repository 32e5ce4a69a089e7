"""Generate notebooks/large_models.ipynb (no stored outputs). Run:
``.venv/bin/python notebooks/_make_large_models_nb.py``."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    (
        "md",
        "# Interventions where large models run: offload, bfloat16, gradient checkpointing\n\n"
        "Small Llama-architecture models stand in for large ones (this notebook runs in CI in under a "
        "minute); the same calls work at 1B parameters (`python benchmarks/large_models.py --config 1b`).\n\n"
        "1. a model dispatched with accelerate, part of its layers offloaded to CPU and part to disk: an "
        "interchange gives the same logits as on the undispatched model;\n"
        "2. a DAS fit in bfloat16: a low-rank rotation learns where a token's identity lives;\n"
        "3. gradient checkpointing on and off: the memory of a DAS step.",
    ),
    (
        "code",
        "import copy\n"
        "import importlib.util\n"
        "import sys\n"
        "import tempfile\n"
        "from pathlib import Path\n\n"
        "import matplotlib.pyplot as plt\n"
        "import torch\n"
        "import transformers as tf\n"
        "from accelerate import dispatch_model\n"
        "from torch import nn\n\n"
        "# the benchmark's memory measurement (benchmarks/large_models.py), imported by path\n"
        "root = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / 'benchmarks' / 'large_models.py').exists())\n"
        "spec = importlib.util.spec_from_file_location('large_models', root / 'benchmarks' / 'large_models.py')\n"
        "bench = sys.modules['large_models'] = importlib.util.module_from_spec(spec)  # dataclasses look it up\n"
        "spec.loader.exec_module(bench)\n\n"
        "from iit import DASBatch, DASConfig, Interchange, LowRankRotatedInterchange, Rotation, das_step, train_das\n"
        "from iit.transformers import TransformerCoordinate, TransformerInterventionable\n\n"
        "torch.set_num_threads(1)\n\n"
        "def llama(dtype=torch.float32, seed=0, **shape):\n"
        "    config = dict(hidden_size=64, num_hidden_layers=4, intermediate_size=128, num_attention_heads=4,\n"
        "                  num_key_value_heads=2, vocab_size=128, use_cache=False)\n"
        "    torch.manual_seed(seed)\n"
        "    previous = torch.get_default_dtype()\n"
        "    torch.set_default_dtype(dtype)  # weights are created in this dtype\n"
        "    try:\n"
        "        return tf.LlamaForCausalLM(tf.LlamaConfig(**{**config, **shape})).eval()\n"
        "    finally:\n"
        "        torch.set_default_dtype(previous)",
    ),
    (
        "md",
        "## 1. A model dispatched with CPU and disk offload\n\n"
        "`dispatch_model` moves the weights of the layers mapped to `\"cpu\"` / `\"disk\"` off the model "
        "(they are on the `meta` device between calls) and loads them in a hook around each module's "
        "forward. Interventions hook the same modules; the values they read and write are the same as "
        "on the plain model.",
    ),
    (
        "code",
        "model = llama()\n"
        "reference = copy.deepcopy(model)\n"
        "device_map = {'model.embed_tokens': 'cpu', 'model.rotary_emb': 'cpu', 'model.layers.0': 'cpu',\n"
        "              'model.layers.1': 'disk', 'model.layers.2': 'disk', 'model.layers.3': 'cpu',\n"
        "              'model.norm': 'cpu', 'lm_head': 'cpu'}\n"
        "offload_dir = tempfile.mkdtemp()\n"
        "dispatched = dispatch_model(model, device_map=device_map, offload_dir=offload_dir)\n"
        "print('layer 1 weights between calls:', dispatched.model.layers[1].mlp.up_proj.weight.device,\n"
        "      '| files in the offload folder:', len(list(Path(offload_dir).iterdir())))\n\n"
        "g = torch.Generator().manual_seed(1)\n"
        "base, source = torch.randint(0, 128, (4, 8), generator=g), torch.randint(0, 128, (4, 8), generator=g)\n"
        "interchange = Interchange(TransformerCoordinate(2, 'block_output', position=7))  # a disk-offloaded layer\n"
        "ours = TransformerInterventionable(dispatched).intervene(base, [interchange], [source]).logits\n"
        "plain = TransformerInterventionable(reference).intervene(base, [interchange], [source]).logits\n"
        "effect = (plain - reference(base).logits).abs().max()\n"
        "print(f'max |dispatched - undispatched| = {(ours - plain).abs().max():.1e} (the interchange changes logits by up to {effect:.2f})')\n"
        "assert torch.equal(ours, plain) and effect > 0.1",
    ),
    (
        "md",
        "## 2. A DAS fit in bfloat16\n\n"
        "The causal variable: which of 8 candidate tokens stands at position 1. Its counterfactual "
        "effect is what the model outputs when the token at position 1 is replaced by the source's "
        "(a forward on the edited input gives the target distribution). A rank-8 rotation at the "
        "input of layer 0, position 1 is trained to carry the variable: the model is bfloat16 and "
        "frozen, the rotation float32 (it computes in float32 and casts back). IIA: the intervened "
        "model's top token equals the counterfactual's.",
    ),
    (
        "code",
        "vocab, seq, pos, k = 64, 6, 1, 8\n"
        "lm = llama(torch.bfloat16, num_hidden_layers=2, vocab_size=vocab, initializer_range=0.05).requires_grad_(False)\n"
        "net = TransformerInterventionable(lm)\n"
        "candidates = torch.arange(8, 8 + k)\n\n"
        "def pairs(n, seed):\n"
        "    g = torch.Generator().manual_seed(seed)\n"
        "    base, source = torch.randint(16, vocab, (2, n, seq), generator=g)\n"
        "    base[:, pos] = candidates[torch.randint(0, k, (n,), generator=g)]\n"
        "    source[:, pos] = candidates[torch.randint(0, k, (n,), generator=g)]\n"
        "    edited = base.clone()\n"
        "    edited[:, pos] = source[:, pos]\n"
        "    with torch.no_grad():\n"
        "        target = lm(edited).logits[:, -1].float().log_softmax(-1)  # [n, vocab]\n"
        "    return DASBatch(base, [source], target)\n\n"
        "def kl(output, target):\n"
        "    return nn.functional.kl_div(output.logits[:, -1].float().log_softmax(-1), target, log_target=True,\n"
        "                                reduction='batchmean')\n\n"
        "def iia(intervention, batch):\n"
        "    with torch.no_grad():\n"
        "        out = net.intervene(batch.base, [intervention], batch.sources).logits[:, -1]\n"
        "    return (out.argmax(-1) == batch.labels.argmax(-1)).float().mean().item()\n\n"
        "rotation = LowRankRotatedInterchange(TransformerCoordinate(0, 'block_input', position=pos),\n"
        "                                     Rotation(64, k, generator=torch.Generator().manual_seed(0)))\n"
        "test = pairs(256, seed=123)\n"
        "before = iia(rotation, test)\n"
        "losses = train_das(net, [rotation], [pairs(64, seed) for seed in range(40)], kl, DASConfig(lr=0.05))\n"
        "after = iia(rotation, test)\n"
        "print(f'model dtype {next(lm.parameters()).dtype}, rotation dtype {rotation.rotation.matrix().dtype}')\n"
        "print(f'IIA on held-out pairs: {before:.3f} before, {after:.3f} after {len(losses)} steps')\n"
        "plt.figure(figsize=(5, 2.5)); plt.semilogy(losses); plt.xlabel('step'); plt.ylabel('KL to counterfactual')\n"
        "plt.title('DAS in bfloat16'); plt.show()\n"
        "assert after > before + 0.2 and losses[-1] < losses[0] / 10",
    ),
    (
        "md",
        "## 3. Gradient checkpointing on and off: memory of a DAS step\n\n"
        "A bfloat16 Llama (8 layers, width 256) on 4 x 256 tokens, frozen, a rank-16 rotation at layer "
        "4's output. With Hugging Face checkpointing each layer keeps only its input for the backward "
        "pass and recomputes the rest there. Measured with the benchmark's functions: the bytes autograd "
        "saves for backward (`SavedActivations`, deterministic) and the peak increase of the process's "
        "resident memory during the step (`peak_rss_increase`; in-process here, so allocator noise of a "
        "few MiB is possible; the benchmark uses a fresh process per configuration).",
    ),
    (
        "code",
        "def das_memory(checkpointing):\n"
        "    model = llama(torch.bfloat16, hidden_size=256, num_hidden_layers=8, intermediate_size=688, num_attention_heads=8,\n"
        "                  vocab_size=1000).requires_grad_(False)\n"
        "    if checkpointing:\n"
        "        # activation_checkpointing_enable: transformers >= 5.25's name of gradient_checkpointing_enable\n"
        "        getattr(model, 'activation_checkpointing_enable', model.gradient_checkpointing_enable)({'use_reentrant': False})\n"
        "        model.disable_input_require_grads()  # frozen model: gradients start at the intervention\n"
        "    model.train()\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    last = torch.tensor([255])  # logits of the last position only (an index: see benchmarks/large_models.py)\n"
        "    batch = DASBatch({'input_ids': torch.randint(0, 1000, (4, 256), generator=g), 'logits_to_keep': last},\n"
        "                     [{'input_ids': torch.randint(0, 1000, (4, 256), generator=g), 'logits_to_keep': last}],\n"
        "                     torch.randint(0, 1000, (4,), generator=g))\n"
        "    iv = LowRankRotatedInterchange(TransformerCoordinate(4, 'block_output'), Rotation(256, 16))\n"
        "    net, opt = TransformerInterventionable(model), torch.optim.Adam(iv.parameters(), lr=1e-3)\n"
        "    loss_fn = lambda out, y: nn.functional.cross_entropy(out.logits[:, -1].float(), y)  # noqa: E731\n"
        "    with bench.SavedActivations([model, iv]) as saved:\n"
        "        loss = das_step(net, [iv], batch, loss_fn, opt)  # also the warm-up\n"
        "    _, peak, seconds, _ = bench.peak_rss_increase(lambda: das_step(net, [iv], batch, loss_fn, opt))\n"
        "    return {'saved MiB': saved.total / 2**20, 'peak RSS increase MiB': peak / 2**20, 'loss': loss}\n\n"
        "runs = {'off': das_memory(False), 'on': das_memory(True)}\n"
        "for name, run in runs.items():\n"
        "    print(f\"checkpointing {name:>3}: saved activations {run['saved MiB']:6.1f} MiB, \"\n"
        "          f\"peak RSS increase {run['peak RSS increase MiB']:6.1f} MiB, loss {run['loss']:.5f}\")\n"
        "fig, axes = plt.subplots(1, 2, figsize=(8, 3))\n"
        "for ax, key in zip(axes, ['saved MiB', 'peak RSS increase MiB']):\n"
        "    ax.bar(['checkpointing off', 'checkpointing on'], [runs['off'][key], runs['on'][key]], color=['C0', 'C1'])\n"
        "    ax.set_title(key.replace('MiB', '(MiB)'))\n"
        "plt.suptitle('one DAS step, bfloat16 Llama 8 x 256, 4 x 256 tokens'); plt.tight_layout(); plt.show()\n"
        "assert runs['on']['loss'] == runs['off']['loss']\n"
        "assert runs['on']['saved MiB'] < 0.5 * runs['off']['saved MiB']",
    ),
]


def main() -> None:
    nb = new_notebook()
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = Path(__file__).with_name("large_models.ipynb")
    nbformat.write(nb, path)
    print(path)


if __name__ == "__main__":
    main()
