"""pytest_spqr.core must import with none of the heavy or pytest packages available."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("torch", "numpy", "PIL", "pytest", "_pytest", "transformers", "diffusers")

# Runs in a fresh interpreter: forget and forbid the blocked packages, then import
# pytest_spqr (its __init__ runs) and every module pkgutil finds under pytest_spqr.core.
PROBE = textwrap.dedent(
    """
    import importlib, importlib.abc, pkgutil, sys, traceback

    BLOCKED = {blocked!r}

    def blocked(name):
        return any(name == top or name.startswith(top + ".") for top in BLOCKED)

    class Forbid(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if blocked(name):
                raise ImportError(f"{{name}} is not allowed in pytest_spqr.core")
            return None

    for name in [name for name in sys.modules if blocked(name)]:
        del sys.modules[name]
    sys.meta_path.insert(0, Forbid())

    core = importlib.import_module("pytest_spqr.core")
    failures = []
    for info in pkgutil.walk_packages(core.__path__, "pytest_spqr.core."):
        try:
            importlib.import_module(info.name)
        except Exception:
            failures.append(info.name + ":\\n" + traceback.format_exc(limit=-3))
        else:
            print("imported", info.name)
    if failures:
        print("\\n".join(failures))
        sys.exit(1)
    """
).format(blocked=BLOCKED)


def test_core_imports_without_heavy_packages() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "imported pytest_spqr.core.scores" in output
    assert "imported pytest_spqr.core.thresholds" in output


def test_the_probe_really_blocks() -> None:
    probe = PROBE + "\nimport numpy\n"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "numpy is not allowed in pytest_spqr.core" in result.stderr
