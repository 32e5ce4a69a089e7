"""Generate notebooks/alignment_search.ipynb (no stored outputs). Run:
``.venv/bin/python notebooks/_make_alignment_search_nb.py``."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    (
        "md",
        "# Alignment search\n\n"
        "Where does a network keep `S = x + y`? Sweep layer x featurizer x size with `iit.search` on a "
        "network whose answer is known (`tasks.rotated_sum.RotatedSum`: `S` lies along one *rotated* "
        "direction of `l0`, and in neuron 0 of `l1`), read the heatmap and the matched controls, compare "
        "two alignment hypotheses on the pairs that tell them apart, export the result for the MIB "
        "causal-variable track, and recover a compiled program's true alignment (tracr). Small settings: "
        "about a minute on a CPU.",
    ),
    (
        "code",
        "import tempfile\n"
        "import time\n"
        "from pathlib import Path\n\n"
        "import matplotlib.pyplot as plt\n"
        "import torch\n\n"
        "from causal_models import CausalModel, standard\n"
        "from causal_models.domains import IntegerRange\n"
        "from iit import Interventionable\n"
        "from iit.search import (DAS, PCA, CounterfactualSplits, FitSettings, Hypothesis, SearchProblem,\n"
        "                        SearchSettings, compare_hypotheses, module_places, neurons, plot_heatmap,\n"
        "                        search)\n"
        "from iit.search.mib import export_mib, read_mib\n"
        "from tasks.rotated_sum import RotatedSum, encode_digits\n\n"
        "torch.set_num_threads(1)\n"
        "out = Path(tempfile.mkdtemp())",
    ),
    (
        "md",
        "## The search\n\nPlaces: the outputs of `l0` and `l1`; featurizers: DAS (rank-k rotation), PCA "
        "and a learned neuron mask; sizes 1, 2, 4. Each cell is fitted on the train pairs, its best epoch "
        "picked on validation, and scored on held-out test pairs beside a random subspace of the same size "
        "and the untrained featurizer. Finished cells are kept in `out/search` (a rerun skips them).",
    ),
    (
        "code",
        "causal = standard.digit_sum(3)  # x, y, z -> S = x + y -> O = S + z\n"
        "problem = SearchProblem(Interventionable(RotatedSum(3)), causal, 'S', encode_digits)\n"
        "splits = CounterfactualSplits.generate(causal, 'S', (1024, 256, 1024), seed=0)\n"
        "settings = SearchSettings(fit=FitSettings(epochs=6, batch_size=64, lr=0.05), seed=0)\n"
        "start = time.perf_counter()\n"
        "result = search(problem, splits, module_places(['l0', 'l1']), [DAS(), PCA(), neurons()], [1, 2, 4],\n"
        "                settings, out_dir=out / 'search')\n"
        "print(f'{len(result.table)} cells in {time.perf_counter() - start:.1f} s')\n"
        "result.table[['place', 'featurizer', 'size', 'iia_val', 'iia_test', 'iia_test_low', 'iia_test_high',\n"
        "              'iia_test_impactful', 'control_random', 'control_untrained']].round(3)",
    ),
    ("md", "## Heatmaps (layer x size) per featurizer"),
    (
        "code",
        "fig, axes = plt.subplots(1, 3, figsize=(13, 2.8))\n"
        "for ax, name in zip(axes, ['das', 'pca', 'neurons']):\n"
        "    plot_heatmap(result, 'layer', 'size', featurizer=name, ax=ax, title=f'S: {name} test IIA')\n"
        "plt.show()\n"
        "das = result.table[result.table['featurizer'] == 'das']\n"
        "at_l0 = das[(das['layer'] == 0) & (das['size'] == 1)].iloc[0]\n"
        "print('DAS, l0, 1 dim:', round(at_l0['iia_test'], 3), 'random 1-dim subspace:', round(at_l0['control_random'], 3),\n"
        "      'untrained rotation:', round(at_l0['control_untrained'], 3))\n"
        "neuron_l0 = result.table.query(\"featurizer == 'neurons' and layer == 0 and size == 1\").iloc[0]\n"
        "print('best single neuron of l0:', round(neuron_l0['iia_test'], 3))\n"
        "print('smallest DAS size within 0.02 of the best:', result.smallest_size(0.02, 'das')['size'])\n"
        "assert at_l0['iia_test'] > 0.95 and at_l0['control_random'] < 0.8 and neuron_l0['iia_test'] < 0.8",
    ),
    (
        "md",
        "## Two hypotheses on the same subspace\n\nIs the DAS direction at `l0` `S = x + y`, or `S' = x + z`? "
        "Both causal models predict the same counterfactual on some pairs; only the pairs where they differ "
        "tell them apart.",
    ),
    (
        "code",
        "d = IntegerRange(0, 4)\n"
        "other = CausalModel.from_mapping({\n"
        "    'x': ((), None, d), 'y': ((), None, d), 'z': ((), None, d),\n"
        "    'S': (('x', 'z'), lambda a, b: a + b, IntegerRange(0, 7)),\n"
        "    'O': (('S', 'y'), lambda a, b: a + b, IntegerRange(0, 10)),\n"
        "}, outputs=['O'], name=\"S' = x + z\")\n"
        "comparison = compare_hypotheses(problem, result.interventions['S__l0__das__k1'], splits.test,\n"
        "                                Hypothesis('S = x + y', causal, 'S'), Hypothesis(\"S' = x + z\", other, 'S'))\n"
        "print(comparison)\n"
        "print('preferred:', comparison.preferred)\n"
        "assert comparison.preferred == 'S = x + y'",
    ),
    ("md", "## Export for the MIB causal-variable track (best DAS cell per layer)"),
    (
        "code",
        "folder = export_mib(result, out / 'mib', 'digit_sum', 'RotatedSum', featurizer='das')\n"
        "print(sorted(p.name for p in folder.iterdir()))\n"
        "for unit in read_mib(folder):\n"
        "    print(unit.unit, 'basis', tuple(unit.basis.shape), 'indices', unit.indices)",
    ),
    (
        "md",
        "## Ground truth from a compiled program\n\ntracr compiles the RASP program `hist` (how often each "
        "token occurs) into transformer weights whose residual dims are labelled by variable; converted "
        "to PyTorch, its true alignment has IIA 1.0, and the same dims before they are written do not.",
    ),
    (
        "code",
        "from tasks.compiled import PROGRAMS, compile_program\n"
        "from tasks.compiled.alignment import interchange_iia, residual_points, true_alignment\n"
        "from tasks.compiled.convert import conversion_mismatches\n\n"
        "hist = compile_program(PROGRAMS['hist'])\n"
        "print('conversion mismatches vs tracr:', conversion_mismatches(hist))\n"
        "for variable in hist.variables():\n"
        "    true = true_alignment(hist, variable)\n"
        "    points = residual_points(hist)\n"
        "    here = interchange_iia(hist, true)\n"
        "    before = interchange_iia(hist, true, point=points[points.index(true.point) - 1])\n"
        "    print(f'{variable}: dims {true.dims} at {true.point}: IIA {here.iia:.3f}; one point earlier {before.iia:.3f}')\n"
        "    assert here.iia == 1.0 and before.iia < 1.0",
    ),
]

def main() -> None:
    nb = new_notebook()
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = Path(__file__).with_name("alignment_search.ipynb")
    nbformat.write(nb, path)
    print(path)


if __name__ == "__main__":
    main()
