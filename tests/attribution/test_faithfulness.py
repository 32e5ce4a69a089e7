"""AUPC on a hand-built model where one token decides the class."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from iit.attribution import AUPCConfig, aupc_table, deletion_counts, perturbation_curve
from iit.attribution.faithfulness import AUPCTable

CLS, SEP, KEY = 1, 2, 7


class KeyTokenModel(nn.Module):
    """Class 1 (logit 4) iff token KEY occurs, else class 0: one token decides."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        present = (ids == KEY).any(-1).float()
        return torch.stack([torch.zeros_like(present), 8 * present - 4], -1)


def _sequence(n_content: int, key_at: int) -> torch.Tensor:
    content = torch.arange(10, 10 + n_content)
    content[key_at] = KEY
    return torch.cat([torch.tensor([CLS]), content, torch.tensor([SEP])])


def oracle(ids: torch.Tensor, label: int) -> torch.Tensor:
    return (ids == KEY).float()


def anti_oracle(ids: torch.Tensor, label: int) -> torch.Tensor:
    return -(ids == KEY).float()


def test_deletion_schedules() -> None:
    config = AUPCConfig(max_skip=4)
    assert deletion_counts(20, "bins", config) == [0, 1, 1, 2, 4, 10]
    assert deletion_counts(3, "one_by_one", config) == [0, 1, 2, 3]
    assert deletion_counts(10, "one_by_one", config) == [0, 1, 2, 3, 4]


def test_ideal_attribution_drops_at_the_first_deletion() -> None:
    model, ids = KeyTokenModel(), _sequence(8, key_at=5)
    p_high = torch.sigmoid(torch.tensor(4.0)).item()
    config = AUPCConfig(max_skip=4)
    comp = perturbation_curve(
        model, ids, oracle(ids, 1), 1, "comprehensiveness", "one_by_one", config
    )
    assert comp[0] == pytest.approx(p_high) and all(
        p == pytest.approx(1 - p_high, abs=1e-6) for p in comp[1:]
    )
    suff = perturbation_curve(model, ids, oracle(ids, 1), 1, "sufficiency", "one_by_one", config)
    assert suff[0] == pytest.approx(1 - p_high, abs=1e-6) and all(
        p == pytest.approx(p_high) for p in suff[1:]
    )
    # the worst ranking deletes the key token last: the curve stays high, then is forced monotone
    worst = perturbation_curve(
        model, ids, anti_oracle(ids, 1), 1, "comprehensiveness", "bins", config
    )
    assert worst == pytest.approx([p_high] * 5 + [p_high])  # 50 % of 8 = 4 tokens, key is last


def test_table_ranks_the_oracle_first_and_matches_hand_computation() -> None:
    model = KeyTokenModel()
    dataset = [_sequence(8, 3), _sequence(5, 0), torch.tensor([CLS, 11, 12, SEP])]
    config = AUPCConfig(schedules=("one_by_one",), max_skip=3)
    table = aupc_table(model, dataset, {"oracle": oracle, "anti": anti_oracle}, config=config)
    rows = {r.method: r for r in table.rows}
    assert rows["oracle"].comprehensiveness > rows["anti"].comprehensiveness
    assert rows["oracle"].sufficiency < rows["anti"].sufficiency
    p = torch.sigmoid(torch.tensor(4.0)).item()
    gap = p - (1 - p)
    # sequences with the key: comp points (k=0..3) = [0, gap, gap, gap]; third sequence (class 0,
    # no key): deleting never changes the prediction -> 0; k runs to min(2, 3) there.
    expected_comp = (3 * gap / 4 + 3 * gap / 4 + 0.0) / 3
    assert rows["oracle"].comprehensiveness == pytest.approx(expected_comp, abs=1e-6)
    assert rows["oracle"].n_sequences == 3
    assert "oracle" in str(table) and "comp" in str(table)
    assert list(table.to_pandas()["method"]) == ["oracle", "anti"]


def test_long_sequences_skipped_and_errors() -> None:
    model = KeyTokenModel()
    table = aupc_table(model, [_sequence(8, 0)], {"o": oracle}, config=AUPCConfig(max_len=5))
    assert table.rows[0].n_sequences == 0
    with pytest.raises(ValueError, match="methods is empty"):
        aupc_table(model, [], {})
    with pytest.raises(ValueError, match="unknown schedule"):
        AUPCConfig(schedules=("bin",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected \\(1, 10\\)"):
        aupc_table(model, [_sequence(8, 0)], {"bad": lambda ids, label: ids[0].float()})
    assert isinstance(AUPCTable().rows, list)
