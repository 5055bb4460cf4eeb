"""The import layering of pyproject.toml's import-linter contract holds, and a deliberate
violation in a scratch module breaks it (so the check really runs on this package)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(cwd))
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_layers_contract_is_kept():
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 kept, 0 broken" in out.stdout


def test_a_violation_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "jaxunlearn", tmp_path / "jaxunlearn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "jaxunlearn" / "modeling" / "_scratch.py").write_text(
        '"""Deliberate violation: modeling may not import eval."""\n\n'
        "def f():\n    import jaxunlearn.eval  # noqa: F401\n")
    out = _lint(tmp_path)
    assert out.returncode != 0, out.stdout
    assert "jaxunlearn.modeling._scratch -> jaxunlearn.eval" in out.stdout, out.stdout
