"""Unit tests of the integrity pieces behind the hostile-input suite: the skip policy and its records,
the summary fields, the value-range rule, pixel-size plausibility and the letterbox (no max(H, W)^2)."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest

from leukcore.io import MissingTileError, NonFinitePixelsError, WriteOptions, open_slide, write_slide
from leukcore.io.convert import to_rgb8, value_range_rule
from leukcore.io.integrity import apply_missing_policy, integrity_summary, verify_pixels
from leukcore.io.mppcheck import check_user_mpp
from leukcore.testing.hostile import patch_tiff_tag, tiff_with_tiles
from leukcore.testing.slides import sample_field


@pytest.fixture(scope="module")
def rgb():
    return np.ascontiguousarray(sample_field(0, "bccd")[:256, :256])


def test_zarr_missing_chunk_skip_policy_records_box(tmp_path, rgb):
    p = tmp_path / "s.ome.zarr"
    write_slide(
        p,
        np.tile(rgb, (2, 2, 1)),
        mpp=0.25,
        tile=128,
        format="ome-zarr",
        ngff_version="0.5",
        options=WriteOptions(min_level_size=128),
    )
    chunk = sorted(f for f in (p / "0").rglob("*") if f.is_file() and f.name != "zarr.json")[5]
    os.unlink(chunk)
    s = open_slide(p)
    assert s.damaged and s.missing[0]["reason"].startswith("chunk file")
    m = s.missing[0]
    with pytest.raises(MissingTileError) as e:
        s.read_region(0, m["box"][0], m["box"][1], 8, 8)
    assert e.value.box == m["box"] and e.value.level == 0 and str(p) in str(e.value)
    with pytest.raises(MissingTileError):
        apply_missing_policy(s, False)
    k = apply_missing_policy(s, True)
    y0, x0, y1, x1 = m["box"]
    a = k.read_region(0, y0 - 4, x0 - 4, y1 - y0 + 8, x1 - x0 + 8)
    assert (a[4:-4, 4:-4] == 255).all() and not (a[:4] == 255).all()
    assert k.thumbnail(64).shape[2] == 3  # dask path (levels rebuilt) works under the policy too
    summ = integrity_summary(k, True)
    assert summ["missing"]["count"] == 1 and summ["missing"]["skipped"] is True
    assert summ["missing"]["boxes"][0]["box"] == m["box"]
    assert any("no pixel data" in w for w in summ["warnings"])
    # the original slide still raises: the policy lives on the copy
    with pytest.raises(MissingTileError):
        s.read_region(0, y0, x0, 8, 8)


def test_nan_pixels_skip_policy_records_bad_pixels_box(tmp_path, rgb):
    import tifffile

    a = rgb.astype(np.float32) / 255
    a[10:20, 30:35] = np.nan
    p = tmp_path / "nan.tif"
    tifffile.imwrite(p, a, photometric="rgb", tile=(128, 128))
    s = open_slide(p)
    assert not s.damaged  # found only when read
    with pytest.raises(NonFinitePixelsError) as e:
        verify_pixels(s)
    assert e.value.box == [10, 30, 20, 35]
    k = s.with_missing_policy("skip")
    out = k.read_region(0, 0, 0, 64, 64)
    assert (out[10:20, 30:35] == 255).all()
    assert k.skipped_regions() == [{"level": 0, "box": [10, 30, 20, 35], "reason": "NaN / infinite pixels"}]


def test_bytecount_zero_index_check_reads_no_pixels(tmp_path, rgb):
    from leukcore.testing.slides import n_reads

    p = tiff_with_tiles(tmp_path / "t.tif", rgb)
    patch_tiff_tag(p, "TileByteCounts", 1, 0)
    s = open_slide(p)
    assert n_reads(s) == 0 and s.missing[0]["tile"] == [0, 1] and s.missing[0]["box"] == [0, 128, 128, 256]
    assert s.info()["integrity"] == {"ok": False, "missing_tiles": 1, "missing": [s.missing[0]]}


@pytest.mark.parametrize(
    "dtype, vmax, scale, word",
    [
        ("uint16", 4095, 4095.0, "12-bit"),
        ("uint16", 4096, None, None),
        ("uint16", 0, None, None),
        ("float32", 1.0, None, None),
        ("float32", 200.0, 255.0, "0..255"),
        ("float32", 60000.0, 65535.0, "0..65535"),
        ("uint8", 100, None, None),
    ],
)
def test_value_range_rule(dtype, vmax, scale, word):
    s, w = value_range_rule(dtype, vmax)
    assert s == scale
    assert (w is None) if word is None else (word in w)


def test_twelve_bit_scaling_maps_4095_to_255():
    a = np.array([[[0, 2048, 4095]]], np.uint16)
    assert to_rgb8(a, scale_max=4095.0).tolist() == [[[0, 128, 255]]]
    assert to_rgb8(np.array([[[0.0, 127.5, 255.0]]], np.float32), scale_max=255.0).tolist() == [[[0, 128, 255]]]


@pytest.mark.parametrize("v", [0.04, 11, 40, float("nan"), -1, "abc"])
def test_user_mpp_outside_plausible_range_is_refused(v, tmp_path, rgb):
    with pytest.raises(ValueError):
        check_user_mpp(v)
    from PIL import Image

    p = tmp_path / "f.png"
    Image.fromarray(rgb).save(p)
    with pytest.raises(ValueError):
        open_slide(p, mpp=v)


def test_letterbox_never_allocates_the_long_side_squared():
    from leukcore.field import letterbox

    img = np.full((1, 60_000, 3), 120, np.uint8)
    tracemalloc.start()
    out = letterbox(img, 224)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.shape == (224, 224, 3)
    assert peak < 50e6  # max(H, W)^2 x 3 would be 10.8 GB


def test_fifo_is_refused_without_blocking(tmp_path):
    from leukcore.io import UnsupportedFormatError

    f = tmp_path / "pipe.svs"
    os.mkfifo(f)
    with pytest.raises(UnsupportedFormatError) as e:
        open_slide(f)
    assert "FIFO" in str(e.value) and str(f) in str(e.value)
