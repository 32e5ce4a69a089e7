"""The IIT-trained GPT-2 of the alignment-search notebook: ``S`` ends up where it is aligned
(block 0, position 1), and a layer x position search finds it there and nowhere else."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from iit import Interventionable, TransformerInterventionable
from iit.errors import ArgumentError
from iit.search import (
    DAS,
    CounterfactualSplits,
    FitSettings,
    SearchProblem,
    SearchSettings,
    search,
    transformer_places,
)
from iit.training import CounterfactualDataModule, IITConfig, IITModule
from iit.training.cli import evaluate_alignment
from tasks.gpt2_digit_sum import GPT2DigitSum


def test_alignment_resolves_to_block_0_at_the_y_token() -> None:
    task = GPT2DigitSum()
    default, at_read = task.alignments()["default"]["S"], task.alignments()["S_at_read"]["S"]
    assert (default.module, default.io) == ("transformer.h.0", "output")
    network = task.build_network()
    tokens = task.encode_inputs({k: torch.tensor([1, 2]) for k in "xyz"})
    assert tokens.tolist() == [[1, 1, 1, 10], [2, 2, 2, 10]]
    with torch.no_grad():
        hidden = network(tokens, output_hidden_states=True).hidden_states[1]  # block 0's output
        acts = Interventionable(network).collect(tokens, [default, at_read])
    torch.testing.assert_close(acts[default].reshape(2, -1), hidden[:, 1])
    torch.testing.assert_close(acts[at_read].reshape(2, -1), hidden[:, 3])


def test_bad_places_are_rejected() -> None:
    with pytest.raises(ArgumentError, match="s_position"):
        GPT2DigitSum(s_position=3)
    with pytest.raises(ArgumentError, match="s_layer"):
        GPT2DigitSum(s_layer=1)


def test_iit_puts_s_at_block_0_position_1_and_the_search_finds_it() -> None:
    torch.set_num_threads(1)
    task = GPT2DigitSum()
    pl.seed_everything(0, verbose=False)
    module = IITModule(task, IITConfig(lr=3e-3))
    data = CounterfactualDataModule(task, 6_000, 500, 64, seed=0)
    pl.Trainer(
        max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    ).fit(module, data)
    trained = evaluate_alignment(module, data)
    assert trained["task_acc"] >= 0.9 and trained["iia/S"] >= 0.9, trained
    assert evaluate_alignment(module, data, "S_at_read")["iia/S"] <= 0.5

    causal = task.causal_model()
    problem = SearchProblem(TransformerInterventionable(module.network.model.eval()), causal, "S", task.encode_inputs, task.decode_output)
    splits = CounterfactualSplits.generate(causal, "S", (512, 128, 512), seed=0)
    places = transformer_places([0, 1], positions=[1, 3])
    result = search(problem, splits, places, [DAS()], [4], SearchSettings(fit=FitSettings(epochs=4, batch_size=64, lr=0.05), seed=0), progress=False)
    table = result.table.set_index("place")
    assert table.loc["L=0_c=block_output_p=1", "iia_test"] >= 0.9, table
    assert table.loc["L=0_c=block_output_p=1", "control_random"] <= 0.6, table
    others = table.drop("L=0_c=block_output_p=1")
    assert (others["iia_test"] <= 0.6).all(), table
