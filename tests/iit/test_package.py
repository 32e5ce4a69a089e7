"""The public namespace: every name in iit.__all__ resolves, and `import iit` stays light."""

from __future__ import annotations

import subprocess
import sys

import iit


def test_every_public_name_resolves():
    for name in iit.__all__:
        assert getattr(iit, name) is not None, name


def test_import_iit_does_not_import_transformers():
    code = "import sys, iit; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
