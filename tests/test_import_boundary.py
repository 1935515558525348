"""``import leukcore`` stays light: no GUI toolkit ever, no torch on plain import, and it is fast."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

GUI = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt")


def _run(code: str) -> dict:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("@@")][-1]
    return json.loads(line[2:])


def test_plain_import_is_fast_and_light():
    best = None
    for _ in range(3):  # best of three: the machine is shared
        out = _run(
            "import json, sys, time\n"
            "t = time.perf_counter(); import leukcore; dt = time.perf_counter() - t\n"
            "print('@@' + json.dumps({'dt': dt, 'mods': sorted(sys.modules)}))"
        )
        best = out if best is None or out["dt"] < best["dt"] else best
    mods = set(best["mods"])
    assert "torch" not in mods and "dask" not in mods and "tifffile" not in mods
    assert not any(m.split(".")[0] in GUI for m in mods)
    assert best["dt"] < 1.0, best["dt"]


@pytest.mark.slow
def test_no_submodule_imports_a_gui_toolkit():
    out = _run(
        "import json, pkgutil, importlib, sys, leukcore\n"
        "failed = {}\n"
        "names = [m.name for m in pkgutil.walk_packages(leukcore.__path__, 'leukcore.')]\n"
        "for n in names:\n"
        "    if n.startswith('leukcore.testing') or n.endswith('__main__'):\n"
        "        continue  # test helpers import pytest (imported below); __main__ runs the CLI\n"
        "    try:\n"
        "        importlib.import_module(n)\n"
        "    except Exception as e:\n"
        "        failed[n] = repr(e)\n"
        "import leukcore.testing.slides\n"
        "gui = sorted(m for m in sys.modules if m.split('.')[0] in %r)\n"
        "print('@@' + json.dumps({'names': names, 'failed': failed, 'gui': gui}))" % (GUI,)
    )
    assert len(out["names"]) > 10
    assert out["failed"] == {}, out["failed"]
    assert out["gui"] == [], out["gui"]


def test_io_import_does_not_pull_models():
    out = _run(
        "import json, sys\n"
        "from leukcore.io import open_slide, write_slide\n"
        "import leukcore.sample\n"
        "print('@@' + json.dumps({'torch': 'torch' in sys.modules, 'timm': 'timm' in sys.modules,"
        " 'models': 'leukcore.models' in sys.modules}))"
    )
    assert out == {"torch": False, "timm": False, "models": False}


@pytest.mark.slow
def test_lint_imports_contracts_kept():
    import os
    import shutil

    exe = shutil.which("lint-imports") or os.path.join(os.path.dirname(sys.executable), "lint-imports")
    if not os.path.exists(exe):
        pytest.skip("import-linter not installed")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([exe], cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "broken" not in r.stdout.split("Contracts:")[-1] or " 0 broken" in r.stdout


def test_type_stub_names_what_the_package_loads_lazily():
    """``leukcore/__init__.pyi`` (what IDEs see) names exactly the lazily loaded public names."""
    import ast
    from pathlib import Path

    import leukcore

    stub = Path(leukcore.__file__).with_suffix(".pyi")
    names = {a.asname for n in ast.parse(stub.read_text()).body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert names == set(leukcore.__all__)
