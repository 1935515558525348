"""The bundled sample slide and the real-field mosaic builder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from leukcore import sample
from leukcore.io import open_slide


def test_bundled_fields_and_attribution():
    fields = sample.bundled_fields()
    assert sum(f.source == "all4class" for f in fields) == 24
    assert sum(f.source == "bccd" for f in fields) == 8
    assert {f.label for f in fields if f.source == "all4class"} == {"Benign", "Early", "Pre", "Pro"}
    assert all(f.mpp for f in fields)
    d = Path(sample.__file__).parent / "data" / "sample"
    text = (d / "ATTRIBUTION.md").read_text()
    assert "CC BY 4.0" in text and "Ghaderzadeh" in text and "MIT" in text and "shenggan" in text
    assert (d / "bccd" / "LICENSE").exists()
    total = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
    assert total < 1.5e6


def test_field_mpp_guess():
    assert sample.field_mpp_for("/x/bccd/BCCD/JPEGImages/BloodImage_00001.jpg") == ("bccd", None, sample.BCCD_MPP)
    assert sample.field_mpp_for("/d/all4class/Original/Pro/WBC-Malignant-Pro-001.jpg")[:2] == ("all4class", "Pro")
    assert sample.field_mpp_for("/tmp/whatever.png") == ("other", None, None)


def test_sample_slide_built_once_and_opens(tmp_path, monkeypatch):
    monkeypatch.setenv("LEUK_CACHE", str(tmp_path / "cache"))
    p = sample.sample_slide_path()
    assert Path(p).parent == tmp_path / "cache"
    mtime = os.path.getmtime(p)
    assert sample.sample_slide_path() == p and os.path.getmtime(p) == mtime  # cached, not rebuilt
    with open_slide(p) as s:
        assert s.format == "ome-tiff" and s.mpp == pytest.approx(sample.SAMPLE_MPP)
        assert s.mpp_source == "metadata"
        H, W = s.shape
        assert 1500 <= H <= 4000 and 3000 <= W <= 6000 and s.n_levels >= 3
        assert "CC BY 4.0" in s.metadata["ome_description"] and "shenggan" in s.metadata["ome_description"]
        layout = json.loads(Path(p + ".layout.json").read_text())
        assert len(layout["fields"]) == 32
        # every placed field lies inside the slide and is not background
        for f in layout["fields"]:
            assert 0 <= f["y0"] < f["y1"] <= H and 0 <= f["x0"] < f["x1"] <= W
        f = next(f for f in layout["fields"] if f["source"] == "bccd" and f["wbc_boxes"])
        y0, x0, y1, x1 = (int(v) for v in f["wbc_boxes"][0])
        wbc = s.read_region(0, y0, x0, y1 - y0, x1 - x0).astype(float)
        # a WBC box holds purple (blue > green) nucleus pixels
        assert ((wbc[..., 2] - wbc[..., 1]) > 40).mean() > 0.05


def test_one_physical_pixel_size(tmp_path):
    """RBCs (~7.5 um) come out the same size in px from both sources after rescaling."""
    from PIL import Image

    bccd = [f for f in sample.bundled_fields() if f.source == "bccd"][:1]
    four = [f for f in sample.bundled_fields() if f.label == "Benign"][:1]
    m = sample.build_mosaic(
        bccd + four,
        tmp_path / "m.ome.tif",
        grid=(1, 2),
        mpp=0.5,
        shuffle=None,
        options=sample.MosaicOptions(compression="zlib"),
    )
    a, b = m.fields
    assert a["scale"] == pytest.approx(sample.BCCD_MPP / 0.5)
    assert b["scale"] == pytest.approx(sample.FOURCLASS_MPP["Benign"] / 0.5)
    # physical field widths: 640 px * 0.085 um = 54 um, 224 px * 0.46 um = 103 um
    assert (a["x1"] - a["x0"]) * 0.5 == pytest.approx(640 * sample.BCCD_MPP, abs=1)
    assert (b["x1"] - b["x0"]) * 0.5 == pytest.approx(224 * sample.FOURCLASS_MPP["Benign"], abs=1)
    with open_slide(m.path) as s:
        got = s.read_region(0, a["y0"], a["x0"], a["y1"] - a["y0"], a["x1"] - a["x0"])
        with Image.open(bccd[0].path) as im:
            exp = np.asarray(im.convert("RGB").resize((got.shape[1], got.shape[0]), Image.Resampling.LANCZOS))
        assert np.abs(got.astype(int) - exp).mean() < 2


def test_mosaic_is_lazy_and_repeats_fields(tmp_path):
    fields = [f.path for f in sample.bundled_fields()[:3]]
    arr_calls = []
    orig = sample.render_field

    def counting(*a):
        arr_calls.append(a)
        return orig(*a)

    sample.render_field.cache_clear()
    import unittest.mock as um

    with um.patch.object(sample, "render_field", counting):
        placements = [(0, 0, 100, 100, fields[0], False), (5000, 5000, 100, 100, fields[1], False)]
        img = sample._lazy_mosaic((20000, 20000), placements, (240, 240, 240), chunk=512)
        assert img.shape == (20000, 20000, 3) and arr_calls == []  # building the graph renders nothing
        blk = img[:512, :512].compute()
        assert len(arr_calls) == 1 and arr_calls[0][0] == fields[0]
        assert (blk[200:, 200:] == 240).all()
    m = sample.build_mosaic(
        fields,
        tmp_path / "r.ome.tif",
        grid=(2, 3),
        field_scale=0.5,
        mpp=1.0,
        options=sample.MosaicOptions(compression="zlib"),
        shuffle=None,
    )
    assert [f["file"] for f in m.fields] == [os.path.basename(p) for p in fields] * 2
    assert json.loads(Path(str(m.path) + ".layout.json").read_text())["grid"] == [2, 3]


def test_mosaic_bad_input(tmp_path):
    with pytest.raises(ValueError):
        sample.build_mosaic([], tmp_path / "x.ome.tif")
    with pytest.raises(FileNotFoundError):
        sample.build_mosaic([tmp_path / "missing.jpg"], tmp_path / "x.ome.tif")
    from PIL import Image

    p = tmp_path / "unknown.png"
    Image.new("RGB", (10, 10)).save(p)
    with pytest.raises(ValueError, match="pixel size"):
        sample.build_mosaic([p], tmp_path / "x.ome.tif")
    sample.build_mosaic([(p, 0.5)], tmp_path / "x.ome.tif", mpp=0.5, options=sample.MosaicOptions(compression="zlib"))


def test_mosaic_from_shared_data(tmp_path):
    root = sample.data_root()
    files = (
        sorted((root / "all4class" / "Original" / "Pre").glob("*.jpg"))[:4]
        + sorted((root / "bccd" / "BCCD" / "JPEGImages").glob("*.jpg"))[:2]
    )
    if len(files) < 6:
        pytest.skip(f"real data not found under {root} (set LEUK_DATA)")
    m = sample.build_mosaic(files, tmp_path / "shared.ome.tif", grid=(3, 4), mpp=0.25)
    with open_slide(m.path) as s:
        assert s.shape == m.shape and s.mpp == 0.25
    assert sum(bool(f["wbc_boxes"]) for f in m.fields) >= 2
