"""``leuk info``: text and JSON output, one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from leukcore.cli import main
from leukcore.io import WriteOptions, write_slide
from leukcore.testing.slides import sample_field


@pytest.fixture(scope="module")
def slide_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("info") / "s.ome.tif"
    write_slide(
        p,
        np.tile(sample_field(0, "bccd"), (2, 2, 1)),
        mpp=0.25,
        tile=256,
        options=WriteOptions(attribution="MIT shenggan"),
    )
    return p


def test_info_text(slide_file, capsys):
    assert main(["info", str(slide_file)]) == 0
    out = capsys.readouterr().out
    assert "ome-tiff" in out and "1280 x 960" in out
    assert "0.25 um/px (source: metadata)" in out
    assert "256 x 256" in out  # stored tile
    assert "MIT shenggan" in out


def test_info_json(slide_file, capsys):
    assert main(["info", str(slide_file), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "ome-tiff" and info["mpp"] == 0.25 and info["mpp_source"] == "metadata"
    assert [lv["downsample"] for lv in info["levels"]] == [1.0, 2.0, 4.0, 8.0]
    assert info["levels"][1]["shape"] == [480, 640, 3]
    assert info["levels"][0]["native_chunks"] == [256, 256]
    assert info["file_size"] == slide_file.stat().st_size


def test_info_mpp_override(slide_file, capsys):
    assert main(["info", str(slide_file), "--json", "--mpp", "0.5"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mpp"] == 0.5 and info["mpp_source"] == "user"


def test_info_unknown_mpp(tmp_path, capsys):
    from PIL import Image

    p = tmp_path / "f.png"
    Image.fromarray(sample_field(1, "bccd")).save(p)
    assert main(["info", str(p)]) == 0
    assert "unknown" in capsys.readouterr().out


@pytest.mark.parametrize(
    "make,problem",
    [
        (lambda d: d / "missing.svs", "no such file"),
        (lambda d: (d / "junk.tif").write_text("junk") and d / "junk.tif", "unknown image format"),
        (lambda d: d, "is a directory"),
    ],
)
def test_info_errors_one_line_exit_2(tmp_path, make, problem):
    p = make(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "leukcore.cli", "info", str(p)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"leuk info: error: {p}: ") and problem in lines[0]
    assert "Traceback" not in r.stderr
