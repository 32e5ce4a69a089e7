"""Generate notebooks/semiring_and_txray.ipynb (no stored outputs): python notebooks/_make_semiring_and_txray_nb.py"""
import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))
code = lambda s: cells.append(nbf.v4.new_code_cell(s))
md("""# Semiring backpropagation and TX-Ray

1. Train a tiny BERT on **FirstTokenRepeatedOnce** (is the first token repeated later?).
2. **Top gradient path** (max-product semiring, scalar granularity) from each input token's embedding to the gold logit, drawn over tokens and layers.
3. **Gradient-graph entropy** (expectation semiring): per token, and vs MLP width on FFOOM.
4. **TX-Ray**: neuron → token distributions of an FFN layer before vs after training; Hellinger distance, length shift, activation mass, top/least-k neurons (plotly HTML in a temp dir).""")
code("""import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from IPython.display import Image, display

from iit.semiring import SemiringConfig, semiring_backward, top_path
from iit.attribution.txray import (TXRayConfig, compare, plot_activation_mass, plot_hellinger_vs_length,
                                   plot_length_shift, plot_neuron_details, record_distributions)
from tasks.semiring.common import TrainConfig, accuracy, tiny_bert_classifier, train_classifier
from tasks.semiring.data import first_token_repeated_once, split

torch.set_num_threads(2)
OUT = Path(tempfile.mkdtemp(prefix="semiring_txray_"))
data = first_token_repeated_once(num_points=1200)
train, _, test = split(1200)
model = tiny_bert_classifier(vocab_size=20)
forward = lambda ids: model(input_ids=ids).logits""")
md("## TX-Ray recording before training, then training")
code("""layer = "bert.encoder.layer.1.intermediate"
batches = [{"input_ids": data.ids[test][i:i + 100]} for i in range(0, 200, 100)]
tx_config = TXRayConfig(place=layer, num_features=20, mode="max1")
before = record_distributions(model, batches, tx_config)
model.train()
train_classifier(forward, list(model.parameters()), data.ids[train], data.labels[train], TrainConfig(epochs=4, lr=3e-3))
model.eval()
after = record_distributions(model, batches, tx_config)
print("test accuracy", accuracy(forward, data.ids[test], data.labels[test]))""")
md("## Top gradient path over tokens and layers")
code("""SRC = "bert.embeddings.word_embeddings"
example = test[data.labels[test] == 1][:1]
ids, repeat = data.ids[example], int(data.meta[example, 0])
res = semiring_backward(model.double(), {"input_ids": ids}, torch.tensor([1]),
                        SemiringConfig("max_product", sources=(SRC,), num_heads=2))
fig, ax = plt.subplots(figsize=(9, 4))
for tok in range(ids.shape[1]):
    d = int(res.values[SRC][0, tok].abs().argmax())
    path = top_path(res, SRC, (0, tok, d))
    steps = [(i, s.token) for i, s in enumerate(path.steps) if s.token is not None]
    style = "-" if tok in (0, repeat) else ":"
    ax.plot([i for i, _ in steps], [t for _, t in steps], style, marker=".",
            label=f"token {tok} |value|={abs(path.value):.2e}")
ax.set_xlabel("step along the path (embedding -> layers -> pooler)")
ax.set_ylabel("token position of the path node")
ax.set_title(f"top gradient paths (first token 0, repeat at {repeat})")
ax.legend(fontsize=6, ncol=2)
fig.savefig(OUT / "paths.png", dpi=80)
display(Image(filename=str(OUT / "paths.png")))
best = top_path(res, SRC, (0, 0, int(res.values[SRC][0, 0].abs().argmax())))
print("modules on the first token's path:", best.modules())""")
md("## Gradient-graph entropy: per token, and vs model size (FFOOM)")
code("""ent = semiring_backward(model, {"input_ids": ids}, torch.tensor([1]), SemiringConfig("entropy", sources=(SRC,)))
per_token = ent.values[SRC][0].mean(-1)
print("mean entropy per token (nats):", [round(float(h), 2) for h in per_token])
from tasks.semiring.ffoom import run as ffoom_run
rows = ffoom_run(hidden=(4, 16, 64), points=300, epochs=3)
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot([r.hidden for r in rows], [r.entropy_relevant for r in rows], marker="o", label="H(x0)")
ax.plot([r.hidden for r in rows], [r.max_entropy for r in rows], "--", label="log(h^2) bound")
ax.set_xscale("log"); ax.set_xlabel("MLP width h"); ax.set_ylabel("entropy (nats)"); ax.legend()
fig.savefig(OUT / "entropy.png", dpi=80)
display(Image(filename=str(OUT / "entropy.png")))""")
md("## TX-Ray: before vs after training")
code("""comp = compare(before, after)
print("shared neurons:", int(comp.shared.sum()), "of", before.num_neurons)
figs = {
    "overview_hellinger_vs_length": plot_hellinger_vs_length(comp),
    "length_shift": plot_length_shift(comp),
    "activation_mass": plot_activation_mass({"before": before, "after": after}),
    "top10": plot_neuron_details(before, after, comp, k=10, which="top"),
    "least10": plot_neuron_details(before, after, comp, k=10, which="least"),
}
for name, f in figs.items():
    f.write_html(OUT / f"{name}.html", include_plotlyjs="cdn")
print(sorted(p.name for p in OUT.iterdir()))
figs["overview_hellinger_vs_length"]""")
nb = nbf.v4.new_notebook(cells=cells)
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, str(__import__("pathlib").Path(__file__).with_name("semiring_and_txray.ipynb")))
