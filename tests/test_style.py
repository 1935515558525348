"""The style tools pass: ``ruff check`` and ``ruff format --check`` on the whole tree.

Configured in ``pyproject.toml`` (``[tool.ruff]``); ``.pre-commit-config.yaml`` runs the same before a commit.
``python tests/test_style.py`` formats them (the same as ``ruff format`` from the repository root).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINTED = ["src", "tests", "benchmarks", "tools", "docs"]
#: what ``ruff format --check`` holds: the whole linted tree (formatted at once, 2026-12-01)
FORMATTED = LINTED


def _ruff() -> str:
    exe = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(exe).exists():
        pytest.skip("ruff not installed (pip install -e '.[dev]')")
    return exe


def test_ruff_check_passes():
    r = subprocess.run([_ruff(), "check", *LINTED], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_formatted_files_stay_formatted():
    r = subprocess.run(
        [_ruff(), "format", "--check", *FORMATTED], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


if __name__ == "__main__":
    sys.exit(subprocess.run([_ruff(), "format", *FORMATTED], cwd=ROOT).returncode)
