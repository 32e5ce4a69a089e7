"""What `iit.serialization` needs to save and rebuild featurizer interventions: a JSON
entry (featurizer kind + shapes, chosen features, mask kind); tensor values travel in the
intervention's ``state_dict``."""

from __future__ import annotations

from typing import Any

from iit.featurizers.base import featurizer_from_config
from iit.featurizers.interchange import FeatureInterchange
from iit.featurizers.mask import MaskedFeatureInterchange
from iit.interventions import Intervention

__all__ = ["FEATURIZED_CLASSES", "describe_featurized", "build_featurized"]

FEATURIZED_CLASSES: dict[str, type[Intervention]] = {
    "FeatureInterchange": FeatureInterchange,
    "MaskedFeatureInterchange": MaskedFeatureInterchange,
}


def describe_featurized(iv: Intervention) -> dict[str, Any]:
    """The class-specific part of a saved entry of a featurizer intervention."""
    assert isinstance(iv, (FeatureInterchange, MaskedFeatureInterchange))
    entry: dict[str, Any] = {"featurizer": {"kind": iv.featurizer.kind, "config": iv.featurizer.config()}}
    if isinstance(iv, FeatureInterchange):
        entry["features"] = list(iv.features)
        entry["interchange_error"] = iv.interchange_error
    else:
        entry["mask_kind"] = iv.kind
    return entry


def build_featurized(entry: dict[str, Any], coordinate: Any, source_coordinate: Any) -> Intervention:
    """An intervention of the saved shapes (values to be loaded with ``load_state_dict``)."""
    spec = entry["featurizer"]
    featurizer = featurizer_from_config(spec["kind"], spec["config"])
    if entry["class"] == "FeatureInterchange":
        return FeatureInterchange(
            coordinate, featurizer, entry["features"], interchange_error=entry["interchange_error"],
            source=entry["source"], source_coordinate=source_coordinate,
        )
    return MaskedFeatureInterchange(
        coordinate, featurizer, entry["mask_kind"], source=entry["source"], source_coordinate=source_coordinate
    )
