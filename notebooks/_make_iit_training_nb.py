"""Generate notebooks/iit_training.ipynb (no stored outputs). Run:
``.venv/bin/python notebooks/_make_iit_training_nb.py``."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    (
        "md",
        "# Interchange intervention training (IIT)\n\n"
        "Train an MLP on digit sums so that the causal model `x, y, z -> S = x + y -> O = S + z` is an "
        "abstraction of it, compare with behaviour-only training, plot IIA over epochs and compare "
        "alignment hypotheses on the trained network.",
    ),
    (
        "code",
        "import tempfile\n"
        "from pathlib import Path\n\n"
        "import matplotlib.pyplot as plt\n"
        "import pytorch_lightning as pl\n"
        "import torch\n\n"
        "from iit.drawing import draw_alignment\n"
        "from iit.training import CounterfactualDataModule, IITConfig, IITModule\n"
        "from iit.training.cli import evaluate_alignment, format_table\n"
        "from iit.training.report import plot_history\n"
        "from tasks.digit_sum import DigitSumMLP\n\n"
        "torch.set_num_threads(1)\n"
        "out = Path(tempfile.mkdtemp())",
    ),
    ("md", "## The task and its alignment\n\n`S` is aligned to the first 32 units of `layers.1`; the inputs to their embedding slices."),
    (
        "code",
        "task = DigitSumMLP()\n"
        "causal = task.causal_model()\n"
        "alignment = task.alignment(causal)\n"
        "print(alignment.describe())\n"
        "picture = draw_alignment(alignment, task.build_network(), out / 'alignment.png')\n"
        "plt.imshow(plt.imread(picture)); plt.axis('off'); plt.show()",
    ),
    ("md", "## Train with IIT and with behaviour only (same data, same seed)"),
    (
        "code",
        "def train(config, name, epochs=4):\n"
        "    pl.seed_everything(0, verbose=False)\n"
        "    module = IITModule(task, config)\n"
        "    data = CounterfactualDataModule(task, train_size=8000, val_size=1000, batch_size=64)\n"
        "    logger = pl.loggers.CSVLogger(str(out), name=name, version='')\n"
        "    trainer = pl.Trainer(max_epochs=epochs, logger=logger, enable_checkpointing=False,\n"
        "                         enable_model_summary=False, enable_progress_bar=False)\n"
        "    trainer.fit(module, data)\n"
        "    return module, data\n\n"
        "iit_module, data = train(IITConfig(lr=2e-3), 'iit')\n"
        "behaviour_module, _ = train(IITConfig(lr=2e-3, iit_weight=0.0), 'behaviour')",
    ),
    ("md", "## IIA over epochs"),
    (
        "code",
        "figure = plot_history({'IIT': out / 'iit' / 'metrics.csv', 'behaviour only': out / 'behaviour' / 'metrics.csv'},\n"
        "                      out / 'iia.png')\n"
        "plt.figure(figsize=(14, 3)); plt.imshow(plt.imread(figure)); plt.axis('off'); plt.show()",
    ),
    (
        "md",
        "## Compare alignment hypotheses\n\n"
        "The IIT-trained network realises `S` where it was trained to; other places (other units of "
        "`layers.1`, or `layers.0`) do not carry it. IIA on *impactful* pairs (where the intervention "
        "changes the causal output) is reported beside IIA on all pairs.",
    ),
    (
        "code",
        "rows = {}\n"
        "for name in ['S_only', 'S_elsewhere', 'S_first_layer']:\n"
        "    rows[f'IIT net, {name}'] = evaluate_alignment(iit_module, data, name)\n"
        "    rows[f'behaviour net, {name}'] = evaluate_alignment(behaviour_module, data, name)\n"
        "print(format_table(rows, ['task_acc', 'iia/S', 'iia/S/impactful']))\n"
        "assert rows['IIT net, S_only']['iia/S'] > rows['IIT net, S_elsewhere']['iia/S']",
    ),
]


def main() -> None:
    nb = new_notebook()
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = Path(__file__).with_name("iit_training.ipynb")
    nbformat.write(nb, path)
    print(path)


if __name__ == "__main__":
    main()
