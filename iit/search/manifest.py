"""The manifest of a search folder: what its stored cells were computed from.

``search(..., out_dir=...)`` skips cells already stored in ``out_dir``; that is only correct when
the stored cells were computed from the same model weights, counterfactual splits, settings,
variable and, per place / method name, the same coordinate / method configuration. The manifest
(``out_dir/manifest.json``) records fingerprints of all of these; a rerun whose fingerprints
differ is refused (never a stale result). New place or method names extend the manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from iit.errors import DamagedFileError, ManifestMismatchError
from iit.search.cells import SearchSettings
from iit.search.methods import Method
from iit.search.problem import CounterfactualSplits, Place, SearchProblem

__all__ = ["search_manifest", "check_manifest"]

MANIFEST = "manifest.json"


def _hash_tensor(h: Any, t: Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def _tensor_tree_hash(tree: Any) -> str:
    h = hashlib.sha256()

    def walk(x: Any) -> None:
        if isinstance(x, Tensor):
            _hash_tensor(h, x)
        elif isinstance(x, dict):
            for k in sorted(x):
                h.update(f"<{k}>".encode())
                walk(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(f"[{len(x)}]".encode())
            for v in x:
                walk(v)
        else:
            h.update(repr(x).encode())

    walk(tree)
    return h.hexdigest()[:16]


def _split_fingerprint(batch: Any) -> str:
    fields = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    return _tensor_tree_hash(fields)


def _method_config(method: Method) -> str:
    parts = {k: v for k, v in sorted(vars(method).items()) if not k.startswith("_")}
    text = {k: (getattr(v, "__qualname__", None) or repr(v)) for k, v in parts.items()}
    return f"{type(method).__module__}.{type(method).__qualname__}{json.dumps(text, sort_keys=True)}"


def search_manifest(
    problem: SearchProblem, splits: CounterfactualSplits, places: Sequence[Place], methods: Sequence[Method], settings: SearchSettings
) -> dict[str, Any]:
    """The fingerprints of a search (JSON-able): variable, output, settings, model weights,
    splits, place coordinates and method configurations, so a rerun into the same ``out_dir``
    can tell whether its stored cells still apply (`check_manifest`).

    Args:
        problem: the search problem (its variable, output and wrapped model's weights).
        splits: the counterfactual splits.
        places: the places searched.
        methods: the featurizer methods.
        settings: settings shared by every cell.

    Raises:
        AttributeError: a split missing from ``splits``.
    """
    return {
        "variable": problem.variable,
        "output": problem.output,
        "settings": _tensor_tree_hash(repr(settings)),
        "settings_text": repr(settings),
        "model": _tensor_tree_hash(dict(problem.model.model.state_dict())),
        "splits": {name: _split_fingerprint(getattr(splits, name)) for name in ("train", "validation", "test")},
        "places": {p.name: repr(p.coordinate) for p in places},
        "methods": {m.name: _method_config(m) for m in methods},
    }


def check_manifest(out_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` to ``out_dir`` or check it against the one there (merging new place and
    method names into it).

    Raises:
        ManifestMismatchError: naming every entry that differs and the fix (a new ``out_dir``, or
            delete the folder to recompute).
        DamagedFileError: an unreadable manifest.
    """
    path = Path(out_dir) / MANIFEST
    cells = Path(out_dir) / "cells"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DamagedFileError(f"{path} is damaged and was not loaded; delete {out_dir} to recompute") from exc
    elif cells.exists() and any(cells.glob("*.json")):
        raise ManifestMismatchError(
            f"{out_dir} holds search cells without a manifest, so it cannot tell what they were computed "
            f"from; use a new out_dir, or delete {out_dir} to recompute"
        )
    else:
        old = None
    merged = dict(manifest)
    if old is not None:
        differ = [k for k in ("variable", "output", "settings", "model", "splits") if old.get(k) != manifest[k]]
        for group in ("places", "methods"):
            differ += [
                f"{group[:-1]} {name!r} ({old[group][name]} != {value})"
                for name, value in manifest[group].items()
                if name in old.get(group, {}) and old[group][name] != value
            ]
            merged[group] = {**old.get(group, {}), **manifest[group]}
        if differ:
            shown = [d if d != "settings" else f"settings ({old.get('settings_text')} != {manifest['settings_text']})" for d in differ]
            raise ManifestMismatchError(
                f"{out_dir} holds cells of another search: {'; '.join(shown)} differ; reusing them would give "
                f"stale results. Use a new out_dir, or delete {out_dir} to recompute"
            )
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged, sort_keys=True, indent=1))
    tmp.replace(path)
