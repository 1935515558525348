"""The style tools pass: ``ruff check`` on the whole tree, ``ruff format --check`` on the formatted files.

Configured in ``pyproject.toml`` (``[tool.ruff]``); ``.pre-commit-config.yaml`` runs the same before a commit.
``python tests/test_style.py`` formats the files of :data:`FORMATTED` (the pre-commit hook runs it).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINTED = ["src", "tests", "benchmarks", "tools", "docs"]
#: files kept in ``ruff format`` style; extend this list as files are formatted (the goal: the whole tree)
FORMATTED = [
    "src/leukcore/__init__.pyi",
    "src/leukcore/batch.py",
    "src/leukcore/corrections/__init__.py",
    "src/leukcore/corrections/files.py",
    "src/leukcore/corrections/folders.py",
    "src/leukcore/corrections/state.py",
    "src/leukcore/detect/colour.py",
    "src/leukcore/detect/corpus.py",
    "src/leukcore/detect/data.py",
    "src/leukcore/detect/images.py",
    "src/leukcore/detect/inputs.py",
    "src/leukcore/detect/masks.py",
    "src/leukcore/detect/plan.py",
    "src/leukcore/detect/public_sets.py",
    "src/leukcore/detect/train.py",
    "src/leukcore/detect/train_data.py",
    "src/leukcore/detect/tuning.py",
    "src/leukcore/export/folder.py",
    "src/leukcore/hashing.py",
    "src/leukcore/io/__init__.py",
    "src/leukcore/io/find.py",
    "src/leukcore/io/pyramid.py",
    "src/leukcore/io/tiff_mpp.py",
    "src/leukcore/io/write.py",
    "src/leukcore/loader.py",
    "src/leukcore/models/__init__.py",
    "src/leukcore/models/card.py",
    "src/leukcore/mpp_sources.py",
    "src/leukcore/pipeline.py",
    "src/leukcore/report/__init__.py",
    "src/leukcore/report/facts.py",
    "src/leukcore/report/signoff.py",
    "src/leukcore/serve/__init__.py",
    "src/leukcore/serve/app.py",
    "src/leukcore/serve/guards.py",
    "src/leukcore/serve/images.py",
    "src/leukcore/serve/page.py",
    "src/leukcore/serve/server.py",
    "src/leukcore/settings.py",
    "src/leukcore/stages.py",
    "src/leukcore/testing/bigslide.py",
    "src/leukcore/testing/hostile.py",
    "src/leukcore/testing/hostile_damaged.py",
    "src/leukcore/testing/hostile_files.py",
    "src/leukcore/testing/hostile_readable.py",
    "src/leukcore/testing/slides.py",
    "src/leukcore/train/crosssource.py",
    "src/leukcore/train/ddp.py",
    "src/napari_leuk/_counts_table.py",
    "src/napari_leuk/_gallery_review.py",
    "src/napari_leuk/_widget_actions.py",
    "src/napari_leuk/_worker.py",
    "tests/test_code_limits.py",
    "tests/test_iter_analyze.py",
    "tests/test_one_owner.py",
    "tests/test_settings.py",
    "tests/test_style.py",
]


def _ruff() -> str:
    exe = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(exe).exists():
        pytest.skip("ruff not installed (pip install -e '.[dev]')")
    return exe


def test_ruff_check_passes():
    r = subprocess.run([_ruff(), "check", *LINTED], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_formatted_files_stay_formatted():
    missing = [f for f in FORMATTED if not (ROOT / f).is_file()]
    assert not missing, missing
    r = subprocess.run(
        [_ruff(), "format", "--check", *FORMATTED], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


if __name__ == "__main__":
    sys.exit(subprocess.run([_ruff(), "format", *FORMATTED], cwd=ROOT).returncode)
