#!/usr/bin/env python3
"""Project entry points that work on a fresh machine with only Python 3.11 and pip.

    python3 dev.py run     # train the default task with IIT and behaviour-only; print IIA table
    python3 dev.py test    # ruff + the notebooks + the documentation site (strict) + every test and doctest
    python3 dev.py fast    # ruff + the tests without the ones marked slow (no notebooks, no site)
    python3 dev.py docs    # execute the notebooks and build the site into site/ (strict)

The first call creates ``.venv`` and installs the CPU build ``torch==2.13.0`` first, then this
project with its ``dev`` extra under ``constraints.txt`` (so nothing replaces that torch).
The environment is reinstalled when ``setup.cfg``, ``pyproject.toml`` or ``constraints.txt``
change.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".installed"
TORCH = "torch==2.13.0"
MKDOCS_BUILD = ("-m", "mkdocs", "build", "--strict")  # no --quiet: it would hide the warnings --strict counts


def _fingerprint() -> str:
    digest = hashlib.sha256(TORCH.encode())
    for name in ("setup.cfg", "pyproject.toml", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def _sh(*args: str | Path) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True, cwd=ROOT)


def ensure_env() -> None:
    """Create / refresh the virtual environment if its inputs changed."""
    if STAMP.exists() and STAMP.read_text() == _fingerprint():
        return
    if not PY.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    _sh(PY, "-m", "pip", "install", "-q", "--upgrade", "pip")
    _sh(PY, "-m", "pip", "install", "-q", TORCH)
    _sh(PY, "-m", "pip", "install", "-q", "-c", "constraints.txt", "-e", ".[dev]")
    STAMP.write_text(_fingerprint())


def build_docs(env: dict[str, str]) -> int:
    """Execute the notebooks (unchanged ones are kept) and build the site into ``site/``, strictly:
    a warning (broken link, missing page, public name without docs) fails the build."""
    for cmd in ([str(PY), "docs/execute_notebooks.py"], [str(PY), *MKDOCS_BUILD]):
        print("+", " ".join(cmd), flush=True)
        code = subprocess.run(cmd, cwd=ROOT, env=env).returncode
        if code:
            return code
    print(f"Documentation built: open {ROOT / 'site' / 'index.html'}, or serve it with "
          f"`{PY} -m http.server -d site 8000` and open http://localhost:8000", flush=True)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("run", "test", "fast", "docs"):
        print(__doc__)
        return 2
    ensure_env()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg", NO_MKDOCS_2_WARNING="1")
    if argv[0] == "run":
        cmd = [str(PY), "-m", "tasks.main"]
    elif argv[0] == "docs":
        return build_docs(env)
    else:
        subprocess.run([str(BIN / "ruff"), "check", "."], check=True, cwd=ROOT)
        cmd = [str(PY), "-m", "pytest", "-q", "--durations=15", "tests"]
        if argv[0] == "fast":
            cmd += ["-m", "not slow and not site"]
        else:
            code = build_docs(env)  # also the notebooks' test: a failing cell stops here
            if code:
                return code
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
