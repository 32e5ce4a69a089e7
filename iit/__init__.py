"""iit: causal interventions, interchange intervention training and attribution for PyTorch.

Public names are re-exported here; see each module for details.
"""

from iit.alignment import AlignedRun, Alignment
from iit.coordinates import Coordinate, Index
from iit.errors import (
    AlignmentError,
    CoordinateError,
    HookFiringError,
    IITError,
    InterventionError,
    InterventionShapeError,
    TargetError,
)
from iit.interventionable import Activations, Interventionable
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

__all__ = [
    "Activations",
    "AlignedRun",
    "Alignment",
    "Addition",
    "AlignmentError",
    "BoundIntervention",
    "ConstantAblation",
    "Coordinate",
    "CoordinateError",
    "HookFiringError",
    "IITError",
    "Index",
    "Interchange",
    "Intervention",
    "InterventionError",
    "InterventionShapeError",
    "Interventionable",
    "MeanAblation",
    "ResampleAblation",
    "TargetError",
    "ZeroAblation",
]
