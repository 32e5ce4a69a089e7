"""iit: causal interventions, interchange intervention training and attribution for PyTorch.

Public names are re-exported here; see each module for details. The Hugging Face transformer
names (``TransformerInterventionable``, ``TransformerCoordinate``, ``Tokens``,
``position_ids_from_mask``, ``generate``) and ``save_interventions`` / ``load_interventions``
are imported on first use, so ``import iit`` does not
import ``transformers``.
"""

from typing import Any

from iit.activations import Activations
from iit.alignment import AlignedRun, Alignment
from iit.coordinates import Coordinate, Index
from iit.das import DASBatch, DASConfig, SourceCache, das_step, train_das
from iit.errors import (
    AlignmentError,
    ArgumentError,
    ArgumentTypeError,
    CoordinateError,
    DamagedFileError,
    HookFiringError,
    IITError,
    InterventionError,
    InterventionShapeError,
    MissingFileError,
    NamingError,
    OutOfRangeError,
    TargetError,
)
from iit.interventionable import Interventionable
from iit.interventions import (
    Addition,
    BoundIntervention,
    ConstantAblation,
    Interchange,
    Intervention,
    MeanAblation,
    ResampleAblation,
    ZeroAblation,
)
from iit.learned import (
    BoundlessRotatedInterchange,
    LowRankRotatedInterchange,
    RotatedInterchange,
    Rotation,
    TemperatureSchedule,
)

__all__ = [
    "Activations",
    "Addition",
    "AlignedRun",
    "Alignment",
    "AlignmentError",
    "ArgumentError",
    "ArgumentTypeError",
    "BoundIntervention",
    "BoundlessRotatedInterchange",
    "ConstantAblation",
    "Coordinate",
    "CoordinateError",
    "DASBatch",
    "DASConfig",
    "DamagedFileError",
    "HookFiringError",
    "IITError",
    "Index",
    "Interchange",
    "Intervention",
    "InterventionError",
    "InterventionShapeError",
    "Interventionable",
    "LowRankRotatedInterchange",
    "MeanAblation",
    "MissingFileError",
    "NamingError",
    "OutOfRangeError",
    "ResampleAblation",
    "RotatedInterchange",
    "Rotation",
    "SourceCache",
    "TargetError",
    "TemperatureSchedule",
    "Tokens",
    "TransformerCoordinate",
    "TransformerInterventionable",
    "ZeroAblation",
    "das_step",
    "generate",
    "load_interventions",
    "position_ids_from_mask",
    "save_interventions",
    "train_das",
]

_LAZY = {
    "TransformerInterventionable": "iit.transformers",
    "TransformerCoordinate": "iit.transformers",
    "Tokens": "iit.transformers",
    "position_ids_from_mask": "iit.transformers",
    "generate": "iit.generation",
    "save_interventions": "iit.serialization",
    "load_interventions": "iit.serialization",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'iit' has no attribute {name!r}")
