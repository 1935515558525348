"""`leuk demo` (the README's main job): sample slide -> analyze -> counts and output folder."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_leuk_demo(tmp_path, capsys):
    from test_pipeline_e2e import _classifier

    _classifier()
    from leukcore.cli import main

    rc = main(["demo", "-o", str(tmp_path / "demo"), "--device", "cpu", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "sample slide:" in out and "cells:" in out and str((tmp_path / "demo").resolve()) in out
    s = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert s["complete"] and s["cells"] > 10  # the sample mosaic holds dozens of white cells
    assert s["mpp"]["value"] == pytest.approx(0.25)
    for f in ("cells.parquet", "cells.csv", "cells.geojson", "labels.ome.zarr", "overlay.png"):
        assert (tmp_path / "demo" / f).exists()
