"""Save and load interventions with their coordinates (safetensors + JSON metadata).

The file holds every intervention's ``state_dict`` tensors (keys ``<name>.<param>``) and, in
the safetensors metadata, a JSON description: the class, its constructor arguments and its
coordinate(s). Rotations shared between interventions are stored once and shared again on
load. Loading checks that every coordinate still resolves on the model it is loaded for.

Supported: `iit.Interchange`, `iit.ZeroAblation`, `iit.ConstantAblation`,
`iit.MeanAblation`, `iit.Addition` and the learned interventions of
`iit.learned`; coordinates: `TransformerCoordinate` (positions ``None``, ints,
``Tokens``) and `iit.Coordinate` with an index built by ``Index.all / dims / positions``
(static) or ``Index.slices``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from iit.alignment_checks import check_parameter_ranges
from iit.coordinates import Coordinate, Index
from iit.errors import (
    ArgumentTypeError,
    CoordinateError,
    DamagedFileError,
    IITError,
    InterventionError,
    MissingFileError,
    NamingError,
    unknown_name,
)
from iit.interventionable import Interventionable
from iit.interventions import (
    Addition,
    ConstantAblation,
    Interchange,
    Intervention,
    MeanAblation,
    ZeroAblation,
)
from iit.learned import (
    BoundlessRotatedInterchange,
    LowRankRotatedInterchange,
    RotatedInterchange,
    Rotation,
)
from iit.transformers.coordinates import TransformerCoordinate
from iit.transformers.positions import Tokens

__all__ = ["save_interventions", "load_interventions", "coordinate_to_json", "coordinate_from_json"]

FORMAT = "iit.interventions/1"


# ---------------------------------------------------------------------------- coordinates
def coordinate_to_json(coord: Any) -> dict[str, Any]:
    """A JSON-able description of a coordinate.

    Raises:
        InterventionError: per-row positions / masks (they belong to one batch) or an unknown
            coordinate type.
    """
    if isinstance(coord, TransformerCoordinate):
        pos = coord.position
        if isinstance(pos, Tensor):
            raise InterventionError(
                f"{coord.describe()}: per-row tensor positions belong to one batch and are not saved; "
                "use Tokens positions"
            )
        position: Any = {"tokens": list(pos.indices)} if isinstance(pos, Tokens) else (
            list(pos) if isinstance(pos, tuple) else pos
        )
        return {
            "kind": "transformer", "layer": coord.layer, "component": coord.component,
            "position": position, "head": list(coord.heads) if coord.heads is not None else None,
            "dims": list(coord.dims) if coord.dims is not None else None, "label": coord.label,
        }
    if isinstance(coord, Coordinate):
        key = coord.index._key
        if coord.index.per_row or not key or key[0] not in ("all", "dims", "pos", "slices"):
            raise InterventionError(
                f"{coord.describe()}: only Index.all / dims / static positions / slices can be saved"
            )
        return {
            "kind": "generic", "module": coord.module, "io": coord.io, "output": coord.output,
            "index": _jsonable(key), "label": coord.label,
        }
    raise InterventionError(f"cannot save a coordinate of type {type(coord).__name__}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def _index_from_key(key: list) -> Index:
    kind = key[0]
    if kind not in ("all", "dims", "pos", "slices"):
        raise DamagedFileError(unknown_name(kind, ["all", "dims", "pos", "slices"], "index kind"))
    if kind == "all":
        return Index.all()
    if kind == "dims":
        return Index.dims(key[1], key[2])
    if kind == "pos":
        dims = tuple(key[3][1:]) if len(key) > 3 else None
        return Index.positions(list(key[1]), axis=key[2], dims=dims)  # type: ignore[arg-type]
    per_axis: list[Any] = []
    for axis_key in key[1:]:
        if axis_key is None:
            per_axis.append(None)
        elif axis_key[0] == "slice":
            per_axis.append(slice(axis_key[1], axis_key[2]))
        else:
            per_axis.append(list(axis_key[1]))
    return Index.slices(*per_axis)


def coordinate_from_json(data: Mapping[str, Any]) -> Any:
    """The coordinate described by `coordinate_to_json`.

    Args:
        data: the JSON-able description.

    Returns:
        A `iit.Coordinate` or `iit.transformers.TransformerCoordinate`.

    Raises:
        KeyError: a field the description lacks.
        DamagedFileError: an unknown index kind.
        CoordinateError: field values that do not make a valid coordinate.

    Examples:
        >>> from iit import Coordinate, Index
        >>> data = coordinate_to_json(Coordinate("layers.0", Index.dims(0, 4)))
        >>> data
        {'kind': 'generic', 'module': 'layers.0', 'io': 'output', 'output': None, 'index': ['dims', 0, 4], 'label': None}
        >>> coordinate_from_json(data) == Coordinate("layers.0", Index.dims(0, 4))
        True
    """
    if data["kind"] == "transformer":
        pos = data["position"]
        position = Tokens(tuple(pos["tokens"])) if isinstance(pos, dict) else (
            tuple(pos) if isinstance(pos, list) else pos
        )
        head = data["head"]
        return TransformerCoordinate(
            data["layer"], data["component"], position=position,
            head=(head[0] if len(head) == 1 else tuple(head)) if head is not None else None,
            dims=tuple(data["dims"]) if data["dims"] is not None else None,  # type: ignore[arg-type]
            label=data["label"],
        )
    return Coordinate(
        data["module"], _index_from_key(data["index"]), output=data["output"], io=data["io"], label=data["label"]
    )


# ---------------------------------------------------------------------------- interventions
_CLASSES: dict[str, type[Intervention]] = {
    cls.__name__: cls
    for cls in (
        Interchange, ZeroAblation, ConstantAblation, MeanAblation, Addition,
        RotatedInterchange, LowRankRotatedInterchange, BoundlessRotatedInterchange,
    )
}


def _describe(name: str, iv: Intervention, rotations: dict[int, str]) -> dict[str, Any]:
    from iit.featurizers.saving import FEATURIZED_CLASSES, describe_featurized

    cls = type(iv).__name__
    if cls in FEATURIZED_CLASSES:  # featurizer interventions (iit.featurizers)
        entry = {"class": cls, "coordinate": coordinate_to_json(iv.coordinate), "source": iv.source}
        if iv.source_coordinate is not iv.coordinate:
            entry["source_coordinate"] = coordinate_to_json(iv.source_coordinate)
        return {**entry, **describe_featurized(iv)}
    if cls not in _CLASSES:
        raise InterventionError(
            f"{name}: cannot save a {cls}; supported: {sorted([*_CLASSES, *FEATURIZED_CLASSES])}"
        )
    entry: dict[str, Any] = {"class": cls, "coordinate": coordinate_to_json(iv.coordinate)}
    if iv.needs_source:
        entry["source"] = iv.source
        if iv.source_coordinate is not iv.coordinate:
            entry["source_coordinate"] = coordinate_to_json(iv.source_coordinate)
    if isinstance(iv, Addition):
        entry["scale"] = iv.scale
        entry["trainable"] = isinstance(iv.vector, torch.nn.Parameter)
    rotation = getattr(iv, "rotation", None)
    if isinstance(rotation, Rotation):
        owner = rotations.setdefault(id(rotation), name)
        entry["rotation"] = {"d": rotation.d, "k": rotation.k, "dtype": str(rotation.weight.dtype), "owner": owner}
    if isinstance(iv, RotatedInterchange):
        entry["dims"] = list(iv.dims)
    return entry


def save_interventions(path: str | Path, interventions: Mapping[str, Intervention]) -> None:
    """Write ``interventions`` (name -> intervention) to a safetensors file.

    Raises:
        ArgumentTypeError: ``interventions`` is not a mapping of names to interventions.
        NamingError: a name containing ``'.'`` (it separates names from parameter keys).
        InterventionError: an unsupported intervention or coordinate (see the module docstring).
        MissingFileError: the folder to write into does not exist (nothing is written).
    """
    if not isinstance(interventions, Mapping):
        raise ArgumentTypeError(
            f"save_interventions needs a mapping {{name: intervention}}, got {type(interventions).__name__}; "
            "e.g. save_interventions(path, {'wx': intervention})"
        )
    folder = Path(path).parent
    if not folder.is_dir():
        raise MissingFileError(
            f"cannot save interventions to {str(path)!r}: the folder {str(folder)!r} does not exist; "
            "create it first (Path(folder).mkdir(parents=True))"
        )
    rotations: dict[int, str] = {}
    meta: dict[str, Any] = {}
    tensors: dict[str, Tensor] = {}
    for name, iv in interventions.items():
        if not isinstance(name, str) or not name or "." in name:
            raise NamingError(f"intervention names must be non-empty strings without '.', got {name!r}")
        if not isinstance(iv, Intervention):
            raise ArgumentTypeError(f"{name!r}: expected an iit.Intervention, got {type(iv).__name__}")
        entry = _describe(name, iv, rotations)
        meta[name] = entry
        shared = "rotation" in entry and entry["rotation"]["owner"] != name
        for key, value in iv.state_dict().items():
            if shared and key.startswith("rotation."):
                continue
            tensors[f"{name}.{key}"] = value.detach().contiguous().clone()
    save_file(tensors, str(path), metadata={"format": FORMAT, "interventions": json.dumps(meta)})


def _build(entry: Mapping[str, Any], tensors: Mapping[str, Tensor], name: str, shared: dict[str, Rotation]) -> Intervention:
    from iit.featurizers.saving import FEATURIZED_CLASSES, build_featurized

    known = sorted({*_CLASSES, *FEATURIZED_CLASSES})
    if entry.get("class") not in known:
        raise DamagedFileError(unknown_name(entry.get("class"), known, "intervention class"))
    coord = coordinate_from_json(entry["coordinate"])
    src_coord = coordinate_from_json(entry["source_coordinate"]) if "source_coordinate" in entry else None
    if entry["class"] in FEATURIZED_CLASSES:
        return build_featurized(dict(entry), coord, src_coord)
    cls = _CLASSES[entry["class"]]
    if "rotation" in entry:
        spec = entry["rotation"]
        owner = spec["owner"]
        if owner not in shared:
            dtype = getattr(torch, str(spec["dtype"]).split(".")[-1], None)
            if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
                raise DamagedFileError(f"rotation dtype {spec['dtype']!r} is not a floating-point torch dtype")
            stored = tensors.get(f"{owner}.rotation.parametrizations.weight.original")
            if stored is None or tuple(stored.shape) != (spec["d"], spec["k"]):
                raise DamagedFileError(
                    f"the metadata gives a {spec['d']} x {spec['k']} rotation but the file stores "
                    f"{None if stored is None else tuple(stored.shape)}"
                )
            shared[owner] = Rotation(spec["d"], spec["k"], dtype=dtype)
        rotation = shared[owner]
        if cls is RotatedInterchange:
            return RotatedInterchange(coord, rotation, tuple(entry["dims"]), source=entry["source"], source_coordinate=src_coord)  # type: ignore[arg-type]
        if cls is LowRankRotatedInterchange:
            return LowRankRotatedInterchange(coord, rotation, source=entry["source"], source_coordinate=src_coord)
        return BoundlessRotatedInterchange(coord, rotation, source=entry["source"], source_coordinate=src_coord)
    if cls is Interchange:
        return Interchange(coord, source=entry["source"], source_coordinate=src_coord)
    if cls is ZeroAblation:
        return ZeroAblation(coord)
    if cls in (ConstantAblation, MeanAblation):
        return cls(coord, tensors[f"{name}.value"])  # type: ignore[call-arg]
    vector = tensors[f"{name}.vector"]
    return Addition(coord, torch.nn.Parameter(vector.clone()) if entry["trainable"] else vector, scale=entry["scale"])


def load_interventions(path: str | Path, model: Interventionable) -> dict[str, Intervention]:
    """Read interventions saved by `save_interventions` and check that their
    coordinates resolve on ``model``.

    The file is untrusted input: safetensors holds no code, and everything read from its JSON
    metadata is checked (known classes, well-formed coordinates, every tensor present with the
    expected shape) before any intervention is returned.

    Args:
        path: the safetensors file.
        model: the wrapped model the interventions will run on (a
            `iit.transformers.TransformerInterventionable` for transformer coordinates).

    Returns:
        ``{name: intervention}`` with the saved parameters and buffers loaded.

    Raises:
        MissingFileError: ``path`` does not exist.
        DamagedFileError: not a safetensors file (truncated, random bytes), not an iit
            interventions file, or tampered metadata (unknown class, malformed JSON or
            coordinate, missing or misshapen tensor); one line, the cause chained.
        CoordinateError: a coordinate that no longer resolves on ``model`` (names the
            intervention, and what is out of range or missing).
    """
    if not Path(path).is_file():
        raise MissingFileError(f"no interventions file {str(path)!r}")
    try:
        tensors = load_file(str(path))
        with open(path, "rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_len))
    except Exception as err:  # safetensors' own errors are not public classes
        raise DamagedFileError(
            f"{str(path)!r} is not a readable safetensors file (damaged or truncated) and was not "
            f"loaded: {_first_line(err)}"
        ) from err
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise DamagedFileError(
            f"{str(path)!r} is not an iit interventions file (format {meta.get('format')!r}, expected "
            f"{FORMAT!r}) and was not loaded; write it with iit.save_interventions"
        )
    try:
        entries = json.loads(meta["interventions"])
        if not isinstance(entries, dict):
            raise DamagedFileError(f"the interventions metadata is a {type(entries).__name__}, not an object")
    except (KeyError, ValueError) as err:  # JSONDecodeError is a ValueError; DamagedFileError too
        raise DamagedFileError(
            f"{str(path)!r} has damaged or tampered metadata and was not loaded: {_first_line(err)}"
        ) from err
    shared: dict[str, Rotation] = {}
    loaded: dict[str, Intervention] = {}
    for name, entry in entries.items():
        try:
            iv = _build(entry, tensors, name, shared)
            own = {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(name + ".")}
            owner = entry.get("rotation", {}).get("owner", name)
            if owner != name:
                own.update({k[len(owner) + 1 :]: v for k, v in tensors.items() if k.startswith(owner + ".rotation.")})
            _check_state(iv, own, name)
            iv.load_state_dict(own)
            check_parameter_ranges(iv, f"saved intervention {name!r}")
        except IITError as err:
            raise DamagedFileError(
                f"{str(path)!r}: saved intervention {name!r} is damaged or tampered and nothing was "
                f"loaded: {_first_line(err)}"
            ) from err
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as err:
            raise DamagedFileError(
                f"{str(path)!r}: saved intervention {name!r} is damaged or tampered (unknown class, "
                f"bad metadata or a missing tensor) and nothing was loaded: {type(err).__name__}: "
                f"{_first_line(err)}"
            ) from err
        for coord in (iv.coordinate, iv.source_coordinate):
            if coord is None:
                continue
            try:
                _validate(model, coord)
            except CoordinateError as err:
                raise CoordinateError(
                    f"saved intervention {name!r} ({entry['class']}) does not fit this model: {err}"
                ) from None
        loaded[name] = iv
    return loaded


def _check_state(iv: Intervention, own: Mapping[str, Tensor], name: str) -> None:
    """Raise ``ValueError`` naming the first missing, extra or misshapen tensor."""
    expected = iv.state_dict()
    for key, value in expected.items():
        if key not in own:
            raise DamagedFileError(f"missing tensor {name}.{key}")
        if own[key].shape != value.shape:
            raise DamagedFileError(
                f"tensor {name}.{key} has shape {tuple(own[key].shape)}, expected {tuple(value.shape)}"
            )
    extra = sorted(set(own) - set(expected))
    if extra:
        raise DamagedFileError(f"unexpected tensors {[f'{name}.{k}' for k in extra]}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _validate(model: Interventionable, coord: Any) -> None:
    validate = getattr(model, "validate", None)
    if validate is not None:
        validate(coord)
        return
    if isinstance(coord, TransformerCoordinate):
        raise CoordinateError(
            f"{coord.describe()} is a transformer coordinate; load it onto a TransformerInterventionable"
        )
    model.check_coordinate(coord, None)  # type: ignore[arg-type]
