"""The documentation site's build code (``docs/hooks.py``, ``docs/execute_notebooks.py``), loaded
once for the tests: they are scripts of the site, not modules of a package. ``PUBLIC_PACKAGES``
of the hooks is the one list of public packages the docs tests check."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load(name: str, path: Path) -> types.ModuleType:
    """Import the file at ``path`` as module ``name`` (registered in ``sys.modules`` first, as
    dataclasses look their module up while the file runs)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


hooks = load("iit_docs_hooks", ROOT / "docs" / "hooks.py")
executor = load("iit_docs_execute", ROOT / "docs" / "execute_notebooks.py")
