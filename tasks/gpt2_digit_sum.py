"""Digit sum on a small GPT-2 trained with IIT so that ``S = x + y`` sits at a known (layer,
position): a search target whose answer is known.

Tokens ``[x, y, z, READ]``; ``O = S + z`` is read at ``READ`` from the language-model logits (the
first ``3 * max_digit + 1`` of them). GPT-2's attention is causal, so at position 1 (the ``y``
token) block 0 can see ``x`` and ``y`` but not ``z``. IIT aligns ``S`` to block 0's output at
position 1 (all ``d_model`` dims): interchanging it there must change the answer as ``S`` would,
so block 1 has to move ``S`` from position 1 to ``READ`` with attention and add ``z``. A search
over layer x position (`iit.search.transformer_places`) should then peak at ``(0, 1)``.

The alignment is written as a `iit.transformers.TransformerCoordinate` and resolved to the
generic coordinate the trainer hooks (`GPT2DigitSum.s_coordinate`).

    python -m tasks.gpt2_digit_sum [--out runs/gpt2_digit_sum]   # IIT, then the layer x position search
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from causal_models import CausalModel, standard
from iit.alignment import AlignedTo
from iit.coordinates import Coordinate
from iit.errors import ArgumentError
from iit.training import IITTask
from iit.transformers import TransformerCoordinate, TransformerInterventionable

__all__ = ["GPT2DigitSum", "main"]


class GPT2DigitSum(IITTask):
    """``x, y, z -> S = x + y -> O = S + z`` on a 2-block GPT-2 (``GPT2LMHeadModel`` from a
    config; no download).

    Args:
        max_digit: digits ``0 .. max_digit``; ``READ`` is token ``3 * max_digit + 1``.
        d_model, n_heads: GPT-2 width and heads.
        s_layer, s_position: where ``S`` is aligned (block output).

    Raises:
        ArgumentError: ``s_layer`` not followed by another block, or ``s_position`` outside
            ``{1, 2}`` (``S`` needs ``y``, and position 3 is the read-out).
    """

    name = "gpt2_digit_sum"

    def __init__(self, max_digit: int = 3, d_model: int = 32, n_heads: int = 2, s_layer: int = 0, s_position: int = 1) -> None:
        if s_layer != 0:
            raise ArgumentError(f"s_layer must be 0 (the model has 2 blocks and block 1 must move S), got {s_layer}")
        if s_position not in (1, 2):
            raise ArgumentError(f"s_position must be 1 or 2 (S needs x and y; 3 is the read-out), got {s_position}")
        self.max_digit, self.d_model, self.n_heads = max_digit, d_model, n_heads
        self.s_layer, self.s_position = s_layer, s_position

    @property
    def n_classes(self) -> int:
        """Values of ``O``: ``0 .. 3 * max_digit``."""
        return 3 * self.max_digit + 1

    @property
    def read_token(self) -> int:
        return self.n_classes

    def causal_model(self) -> CausalModel:
        return standard.digit_sum(self.max_digit)

    def build_network(self) -> nn.Module:
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(
            vocab_size=self.n_classes + 1, n_positions=4, n_embd=self.d_model, n_layer=2, n_head=self.n_heads,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
        )
        return GPT2LMHeadModel(config)

    def s_coordinate(self, network: nn.Module, position: int | None = None) -> Coordinate:
        """``S``'s place as the generic coordinate the trainer hooks: block ``s_layer``'s output at
        ``position`` (default ``s_position``), resolved on ``network`` for 4-token inputs."""
        place = TransformerCoordinate(self.s_layer, "block_output", position=position or self.s_position)
        example = torch.zeros(1, 4, dtype=torch.long)
        return TransformerInterventionable(network).resolve(place, example)

    def alignments(self) -> Mapping[str, Mapping[str, AlignedTo]]:
        """``default``: ``S`` at block 0's output, position ``s_position``; ``S_at_read``: at the
        read-out position (3) instead."""
        network = self.build_network()
        return {
            "default": {"S": self.s_coordinate(network)},
            "S_at_read": {"S": self.s_coordinate(network, 3)},
        }

    def encode_inputs(self, values: Mapping[str, Tensor]) -> Tensor:
        """Tokens ``[batch, 4]``: ``x, y, z, READ``."""
        digits = torch.stack([values["x"], values["y"], values["z"]], dim=1)
        return torch.cat([digits, torch.full_like(digits[:, :1], self.read_token)], dim=1)

    def decode_output(self, output: object) -> Tensor:
        """Logits of the ``O`` classes at the read-out position ``[batch, 3 * max_digit + 1]``."""
        logits = output.logits if hasattr(output, "logits") else output  # type: ignore[union-attr]
        return logits[:, -1, : self.n_classes]


def main(argv: list[str] | None = None) -> None:
    """IIT-train the GPT-2 (3 epochs of 6,000 pairs), then search ``S`` over layer x position
    with DAS (4 dims); print the table and write the heatmap to ``<out>/layer_position.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import pytorch_lightning as pl

    from iit.search import (
        DAS,
        CounterfactualSplits,
        FitSettings,
        SearchProblem,
        SearchSettings,
        plot_heatmap,
        search,
        transformer_places,
    )
    from iit.training import CounterfactualDataModule, IITConfig, IITModule
    from iit.training.cli import evaluate_alignment

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0] if main.__doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("runs/gpt2_digit_sum"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    task = GPT2DigitSum()
    pl.seed_everything(0, verbose=False)
    module = IITModule(task, IITConfig(lr=3e-3))
    data = CounterfactualDataModule(task, 6_000, 500, 64, seed=0)
    start = time.perf_counter()
    pl.Trainer(
        max_epochs=3, logger=False, enable_checkpointing=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0,
    ).fit(module, data)
    trained = evaluate_alignment(module, data)
    print(f"IIT in {time.perf_counter() - start:.1f} s: task acc {trained['task_acc']:.3f}, IIA of S {trained['iia/S']:.3f}")
    causal = task.causal_model()
    problem = SearchProblem(
        TransformerInterventionable(module.network.model.eval()), causal, "S", task.encode_inputs, task.decode_output
    )
    splits = CounterfactualSplits.generate(causal, "S", (1024, 256, 1024), seed=0)
    settings = SearchSettings(fit=FitSettings(epochs=6, batch_size=64, lr=0.05), seed=0)
    result = search(problem, splits, transformer_places([0, 1], positions=[0, 1, 2, 3]), [DAS()], [4], settings)
    columns = ["place", "iia_test", "iia_test_low", "iia_test_high", "control_random", "control_untrained"]
    print(result.table[columns].round(3).to_string(index=False))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "layer_position.png"
    plot_heatmap(result, "layer", "position", featurizer="das", path=path, title="S on GPT-2: DAS (4 dims) test IIA")
    print(f"heatmap: {path}")


if __name__ == "__main__":
    main()
