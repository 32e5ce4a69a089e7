"""Generate notebooks/causal_models.ipynb (no stored outputs). Run:
``.venv/bin/python notebooks/_make_causal_models_nb.py``."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    (
        "md",
        "# Causal models with `causal_models`\n\n"
        "Build, draw and intervene on the digit-sum and hierarchical-equality models, then generate "
        "a counterfactual dataset for interchange intervention training (IIT).",
    ),
    (
        "code",
        "import matplotlib.pyplot as plt\n"
        "import torch\n"
        "from torch.utils.data import DataLoader\n\n"
        "import causal_models as cm\n"
        "from causal_models import standard",
    ),
    ("md", "## Digit sum: `x, y, z -> S = x + y -> O = S + z`"),
    (
        "code",
        "ds = standard.digit_sum(max_digit=9)\n"
        "print(ds.describe())\n"
        "cm.draw(ds, show_domains=True)\n"
        "plt.show()",
    ),
    (
        "code",
        "base = {'x': torch.tensor([1, 2, 3]), 'y': torch.tensor([4, 5, 6]), 'z': torch.tensor([0, 1, 2])}\n"
        "source = {'x': torch.tensor([9, 9, 9]), 'y': torch.tensor([9, 9, 9]), 'z': torch.tensor([7, 7, 7])}\n"
        "print('run      ', ds.run(base)['O'].tolist())\n"
        "print('do(S=0)  ', ds.do(base, {'S': torch.zeros(3, dtype=torch.long)})['O'].tolist())\n"
        "print('S<-source', ds.interchange(base, [source], {'S': 0})['O'].tolist())\n"
        "# per-row: only rows 0 and 2 take S from the source\n"
        "rows = {'S': torch.tensor([True, False, True])}\n"
        "print('masked   ', ds.interchange(base, [source], {'S': 0}, rows=rows)['O'].tolist())\n"
        "# two sources: S from source 0, z from source 1\n"
        "print('2 sources', ds.interchange(base, [source, base], {'S': 0, 'z': 1})['O'].tolist())",
    ),
    (
        "md",
        "Nested interventions: an intervened `S` overrides what the intervened inputs would give.",
    ),
    (
        "code",
        "print(ds.interchange(base, [source], {'x': 0, 'S': 0})['S'].tolist(), "
        "'== source S', ds.run(source)['S'].tolist())",
    ),
    ("md", "## Hierarchical equality over entity vectors"),
    (
        "code",
        "eq = standard.hierarchical_equality(emb_dim=2)\n"
        "train_pool, test_pool = standard.make_entity_pools(1000, 100, emb_dim=2, seed=0)\n"
        "sampler = standard.EqualityPatternSampler(train_pool)\n"
        "g = torch.Generator().manual_seed(0)\n"
        "b, s = sampler(4, g), sampler(4, g)\n"
        "values = eq.run(b)\n"
        "print('base   WX, YZ, O:', values['WX'].tolist(), values['YZ'].tolist(), values['O'].tolist())\n"
        "cf = eq.interchange(b, [s], {'WX': 0})\n"
        "print('WX<-src  WX, O  :', cf['WX'].tolist(), cf['O'].tolist())\n"
        "cm.draw(eq, values=cf, row=0, highlight={'WX': 'tomato'})\n"
        "plt.show()",
    ),
    ("md", "## Counterfactual data for IIT"),
    (
        "code",
        "cfg = cm.CounterfactualConfig(variables=('WX', 'YZ'), selection='subset', balance='labels')\n"
        "gen = cm.CounterfactualGenerator(eq, cfg, sampler, seed=0)\n"
        "batch = gen.generate(100_000)\n"
        "print('fields:', batch.variables, batch.intervened.shape, batch.source_index.shape)\n"
        "print('cf label fraction True:', batch.counterfactual_output.float().mean().item())\n"
        "print('per-variable intervention rate:', batch.intervened.float().mean(0).tolist())\n"
        "print('impactful pairs:', batch.impactful.float().mean().item())",
    ),
    (
        "code",
        "test_ds = cm.CounterfactualDataset(\n"
        "    eq, 2048, cm.CounterfactualConfig(('WX', 'YZ')),\n"
        "    standard.EqualityPatternSampler(test_pool), seed=1)\n"
        "loader = DataLoader(test_ds, batch_size=64, shuffle=True, collate_fn=cm.CounterfactualDataset.collate)\n"
        "first = next(iter(loader))\n"
        "print(len(test_ds), first.base['W'].shape, first.counterfactual_output[:8].tolist())",
    ),
    (
        "code",
        "ds_cfg = cm.CounterfactualConfig(variables=('S', 'x', 'y', 'z'))\n"
        "digits = cm.CounterfactualDataset(ds, 10_000, ds_cfg, seed=0)\n"
        "row = digits.data.intervened_variables(0)\n"
        "print('example 0 intervenes on', row, '-> cf', digits.data.counterfactual_output[0].item(),\n"
        "      'base', digits.data.base_output[0].item())",
    ),
    ("md", "## Export and your own model"),
    ("code", "print(cm.to_dot(ds))"),
    (
        "code",
        "circuit = standard.boolean_circuit('A = a & b\\nO = A | ~c')\n"
        "print(circuit.describe())\n"
        "t = torch.tensor\n"
        "print(circuit.run({'a': t([True, False]), 'b': t([True, True]), 'c': t([True, True])})['O'])",
    ),
]


def build() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.cells = [new_markdown_cell(s) if k == "md" else new_code_cell(s) for k, s in CELLS]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


if __name__ == "__main__":
    out = Path(__file__).with_name("causal_models.ipynb")
    nbformat.write(build(), out)
    print(f"wrote {out}")
