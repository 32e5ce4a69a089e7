"""Setup-time errors named by the issue, each raised by IITModule's construction for a tiny
task subclass that gets one thing wrong."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from torch import nn

from iit import AlignmentError, Coordinate, Index
from iit.alignment import AlignedTo
from iit.training import IITModule
from tasks.networks import TokenMLP
from tasks.pvr import PointerValueMLP


class _Small(PointerValueMLP):
    def __init__(self) -> None:
        super().__init__(d_embed=4, block=4, n_unaligned=1, unaligned_block=4)


class _MisspelledVariable(_Small):
    def alignments(self) -> Mapping[str, Mapping[str, AlignedTo]]:
        good = dict(super().alignments()["default"])
        good["TLX"] = good.pop("TL")
        return {"default": good}


class _WrongOutputSize(_Small):
    def build_network(self) -> nn.Module:
        return TokenMLP(10, 4, self.d_embed, self.hidden, 2, 9)  # 9 classes, O has 10 values


class _UnalignedIntervention(_Small):
    def alignments(self) -> Mapping[str, Mapping[str, AlignedTo]]:
        aligned = dict(super().alignments()["default"])
        del aligned["BR"]
        return {"default": aligned}

    def candidate_variables(self) -> Sequence[str]:
        return ("TL", "TR", "BL", "BR")


class _OverlappingUnits(_Small):
    def alignments(self) -> Mapping[str, Mapping[str, AlignedTo]]:
        aligned = dict(super().alignments()["default"])
        aligned["BR"] = Coordinate("layers.0", Index.dims(2, 6))  # overlaps TL [0, 4) and TR [4, 8)
        return {"default": aligned}


class _UnknownModule(_Small):
    def alignments(self) -> Mapping[str, Mapping[str, AlignedTo]]:
        aligned = dict(super().alignments()["default"])
        aligned["BR"] = Coordinate("layer.0", Index.dims(12, 16))
        return {"default": aligned}


def test_the_base_task_builds() -> None:
    IITModule(_Small())  # the subclasses below differ from it in one respect only


def test_alignment_variable_not_in_causal_model() -> None:
    with pytest.raises(AlignmentError, match=r"unknown causal variable 'TLX'.*did you mean 'TL'"):
        IITModule(_MisspelledVariable())


def test_output_domain_does_not_match_network_output() -> None:
    with pytest.raises(AlignmentError, match=r"predicts 9 classes but the causal output 'O' has 10 values"):
        IITModule(_WrongOutputSize())


def test_intervened_variable_not_aligned() -> None:
    with pytest.raises(AlignmentError, match=r"\['BR'\] are intervened on by the data but not aligned"):
        IITModule(_UnalignedIntervention())


def test_overlapping_alignment() -> None:
    with pytest.raises(AlignmentError, match="share units"):
        IITModule(_OverlappingUnits())


def test_unknown_module_lists_nearest() -> None:
    with pytest.raises(Exception, match="layers.0") as info:
        IITModule(_UnknownModule())
    assert "layer.0" in str(info.value)


def test_unknown_alignment_name_lists_valid_ones() -> None:
    task = _Small()
    with pytest.raises(AlignmentError, match=r"no alignment 'rotated'.*\['default', 'rotated_blocks'\]"):
        task.alignment(task.causal_model(), "rotated")
