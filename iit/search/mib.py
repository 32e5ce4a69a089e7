"""Export a search result in the submission layout of the Mechanistic Interpretability
Benchmark's causal-variable localization track (MIB; Mueller et al. 2025, arXiv 2504.13151).

Source of the format: the track's harness, ``CausalAbstraction/neural/featurizers.py``
(``Featurizer.save_modules`` / ``load_modules``) and ``verify_submission.py`` of the
MIB-causal-variable-track repository. A submission has one folder per
``{TASK}_{MODEL}_{VARIABLE}``; in it, per model unit (one per layer, e.g.
``ResidualStream(Layer-3,Token-last_token)``), three files:

``<unit>_featurizer``          ``torch.save({"model_info": ..., "state_dict": ...})`` of the map
                               ``x -> (features, error)``
``<unit>_inverse_featurizer``  the same for ``(features, error) -> x``
``<unit>_indices``             one line of JSON: the feature indices (a list) or ``null`` (all)

``model_info`` holds ``featurizer_class`` / ``inverse_featurizer_class``
(``SubspaceFeaturizerModule`` with ``additional_config = {"rotation_matrix": W [d, k],
"requires_grad": ...}``, or ``IdentityFeaturizerModule``), ``n_features`` and
``additional_config``. The harness rebuilds a subspace featurizer as an orthogonally
parametrised ``LowRankRotateLayer`` holding ``W`` (features ``x @ W``, inverse ``f @ W^T + error``).

Linear cells export exactly: a rotation (DAS) as the chosen columns of its basis, PCA as its chosen
components (the PCA mean cancels in an interchange), neurons as the identity with their indices.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from iit.errors import DamagedFileError, InterventionError, MissingFileError
from iit.featurizers import (
    FeatureInterchange,
    IdentityFeaturizer,
    PCAFeaturizer,
    RotationFeaturizer,
)
from iit.search.results import SearchResult

__all__ = ["MIBUnit", "export_mib", "read_mib", "unit_id"]


def unit_id(layer: int, position: Any, component: str | None = None) -> str:
    """The track's model-unit name: ``ResidualStream(Layer-3,Token-last_token)`` (residual
    stream, the default) or ``<Component>(Layer-3,Token-...)``.

    Args:
        layer: the block index.
        position: the token position, as the track names it (e.g. ``"last_token"``).
        component: the component (``None``, ``"block_output"`` or ``"residual"``: the
            residual stream).

    Examples:
        >>> unit_id(3, "last_token")
        'ResidualStream(Layer-3,Token-last_token)'
        >>> unit_id(0, 5, "attention_output")
        'attention_output(Layer-0,Token-5)'
    """
    kind = "ResidualStream" if component in (None, "block_output", "residual") else str(component)
    return f"{kind}(Layer-{layer},Token-{position})"


@dataclass(frozen=True)
class MIBUnit:
    """One exported unit: ``basis`` ``[d, k]`` (``None`` for the identity) and ``indices``.

    Attributes:
        unit: the track's unit name (see `unit_id`).
        basis: orthonormal columns ``[d, k]``, or ``None`` for the neurons themselves.
        indices: the basis columns (or neurons) interchanged (``None``: all).

    Raises:
        TypeError: a missing or unknown field.

    Examples:
        >>> import torch
        >>> unit = MIBUnit("ResidualStream(Layer-0,Token-0)", basis=None, indices=[1])
        >>> unit.interchange(torch.zeros(1, 3), torch.ones(1, 3))
        tensor([[0., 1., 0.]])
    """

    unit: str
    basis: Tensor | None
    indices: list[int] | None

    def interchange(self, base: Tensor, source: Tensor) -> Tensor:
        """The unit's interchange intervention ``[..., d] x [..., d] -> [..., d]``, as the
        track's harness applies it (features of the source at ``indices``).

        Args:
            base: base values ``[..., d]``.
            source: source values, shaped like ``base``.
        """
        if self.basis is None:
            out = base.clone()
            idx = self.indices if self.indices is not None else list(range(base.shape[-1]))
            out[..., idx] = source[..., idx]
            return out
        w = self.basis if self.indices is None else self.basis[:, self.indices]
        return base + ((source - base) @ w) @ w.T


def _basis(iv: FeatureInterchange) -> tuple[Tensor | None, list[int]]:
    f = iv.featurizer
    chosen = list(iv.features)
    if isinstance(f, IdentityFeaturizer):
        return None, chosen
    if isinstance(f, RotationFeaturizer):
        return f.rotation.matrix().detach()[:, chosen].clone(), list(range(len(chosen)))
    if isinstance(f, PCAFeaturizer):
        return f.components.detach()[:, chosen].clone(), list(range(len(chosen)))
    raise InterventionError(
        f"MIB export supports rotation (DAS), PCA and neuron cells; got a {type(f).__name__} cell "
        "(the track's harness has no loader for it)"
    )


def export_mib(
    result: SearchResult,
    directory: str | Path,
    task: str,
    model: str,
    *,
    featurizer: str | None = None,
    position: Any = "all",
) -> Path:
    """Write the best cell of every layer (by validation IIA) for the result's variable.

    Args:
        result: a search result with its interventions (one variable).
        directory: the submission root; the folder ``{task}_{model}_{variable}`` is made in it.
        task: the track's task name, e.g. ``"4_answer_MCQA"``.
        model: the track's model name, e.g. ``"GPT2LMHeadModel"``.
        featurizer: export cells of this featurizer only (default: the best of any per layer).
        position: the token position named in unit ids when the place has none.

    Returns:
        The folder written.

    Raises:
        InterventionError: several variables, a layer without a stored intervention, or a cell
            whose featurizer the track cannot load (SAE, learned masks).
    """
    table = result.table if featurizer is None else result.table[result.table["featurizer"] == featurizer]
    variables = sorted(table["variable"].unique())
    if len(variables) != 1:
        raise InterventionError(f"export one variable at a time; the table has {variables}")
    folder = Path(directory) / f"{task}_{model}_{variables[0]}"
    folder.mkdir(parents=True, exist_ok=True)
    for layer, rows in table.groupby("layer", sort=True):
        row = rows.sort_values(["iia_val", "size"], ascending=[False, True], kind="stable").iloc[0]
        key = f"{row['variable']}__{row['place']}__{row['featurizer']}__k{row['size']}"
        iv = result.interventions.get(key)
        if not isinstance(iv, FeatureInterchange):
            raise InterventionError(f"layer {layer}: no exportable intervention stored for cell {key}")
        basis, indices = _basis(iv)
        pos = row["position"] if row["position"] is not None and row["position"] == row["position"] else position
        unit = unit_id(int(layer), pos, row["component"] if row["component"] in ("block_output",) else None)
        if basis is None:
            info = {"featurizer_class": "IdentityFeaturizerModule", "inverse_featurizer_class": "IdentityInverseFeaturizerModule",
                    "n_features": int(row["d"]), "additional_config": {}}
            states: tuple[dict, dict] = ({}, {})
        else:
            info = {"featurizer_class": "SubspaceFeaturizerModule", "inverse_featurizer_class": "SubspaceInverseFeaturizerModule",
                    "n_features": int(basis.shape[1]), "additional_config": {"rotation_matrix": basis, "requires_grad": False}}
            states = ({"rotate.weight": basis}, {"rotate.weight": basis})
        torch.save({"model_info": info, "state_dict": states[0]}, folder / f"{unit}_featurizer")
        torch.save({"model_info": info, "state_dict": states[1]}, folder / f"{unit}_inverse_featurizer")
        (folder / f"{unit}_indices").write_text(json.dumps(indices) + "\n")
    return folder


def read_mib(folder: str | Path) -> list[MIBUnit]:
    """Read the units of one ``{TASK}_{MODEL}_{VARIABLE}`` folder (sorted by name).

    Raises:
        MissingFileError: the folder does not exist, holds no unit, or a unit lacks a file.
        DamagedFileError: a file that is truncated, not a MIB file or unsafe to load (the
            original error chained).
        InterventionError: an unknown featurizer class.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"MIB folder {str(folder)!r} does not exist (export one with export_mib)")
    units = sorted(p.name[: -len("_featurizer")] for p in folder.glob("*_featurizer") if not p.name.endswith("_inverse_featurizer"))
    if not units:
        raise MissingFileError(f"MIB folder {str(folder)!r} holds no '<unit>_featurizer' file")
    out = []
    for unit in units:
        paths = [folder / f"{unit}{suffix}" for suffix in ("_featurizer", "_inverse_featurizer", "_indices")]
        missing = [p.name for p in paths if not p.exists()]
        if missing:
            raise MissingFileError(f"unit {unit!r} in {str(folder)!r} lacks {missing}")
        try:
            data = torch.load(paths[0], weights_only=True)
            info = data["model_info"]
            kind = info["featurizer_class"]
            indices = json.loads(paths[2].read_text().splitlines()[0])
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, KeyError, TypeError, IndexError, ValueError) as exc:
            raise DamagedFileError(
                f"MIB unit {unit!r} in {str(folder)!r} is damaged or unsafe and was not loaded "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        if kind == "IdentityFeaturizerModule":
            out.append(MIBUnit(unit, None, indices))
        elif kind == "SubspaceFeaturizerModule":
            out.append(MIBUnit(unit, info["additional_config"]["rotation_matrix"], indices))
        else:
            raise InterventionError(f"unit {unit!r}: unknown featurizer class {info['featurizer_class']!r}")
    return out


def units_by_layer(units: Sequence[MIBUnit]) -> dict[int, MIBUnit]:
    """``{layer: unit}`` parsed from the unit names."""
    return {int(u.unit.split("Layer-")[1].split(",")[0]): u for u in units}
