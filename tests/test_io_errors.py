"""Bad input raises a SlideError subclass naming the file and the problem — never a bare traceback or a hang."""

from __future__ import annotations

import os
import struct
import time
import zlib

import numpy as np
import pytest
import tifffile

from leukcore.io import (
    CorruptSlideError,
    EmptySlideError,
    SlideError,
    SlideNotFoundError,
    SlideTooLargeError,
    UnsupportedFormatError,
    UnsupportedLayoutError,
    open_slide,
    write_slide,
)
from leukcore.testing.slides import sample_field, sample_fields


def _assert_names(err, path, *words):
    msg = str(err.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg.lower(), msg
    assert isinstance(err.value, SlideError)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.svs"
    with pytest.raises(SlideNotFoundError) as e:
        open_slide(p)
    _assert_names(e, p, "no such file")
    assert isinstance(e.value, FileNotFoundError)


def test_plain_directory(tmp_path):
    with pytest.raises(SlideNotFoundError) as e:
        open_slide(tmp_path)
    _assert_names(e, tmp_path, "directory")


def test_zarr_group_without_multiscales(tmp_path):
    import zarr

    p = tmp_path / "g.zarr"
    zarr.open_group(str(p), mode="w")
    with pytest.raises(UnsupportedFormatError) as e:
        open_slide(p)
    _assert_names(e, p, "multiscales")


def test_unknown_format(tmp_path):
    p = tmp_path / "notes.tif"  # suffix lies; content decides
    p.write_text("this is not an image at all\n" * 10)
    with pytest.raises(UnsupportedFormatError) as e:
        open_slide(p)
    _assert_names(e, p, "unknown image format")


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(EmptySlideError) as e:
        open_slide(p)
    _assert_names(e, p, "empty")


def test_zero_sized_zarr_image(tmp_path):
    import zarr

    p = tmp_path / "z.zarr"
    a = zarr.open_array(str(p), mode="w", shape=(0, 10, 3), dtype="uint8", chunks=(8, 8, 3))
    assert a.shape[0] == 0
    with pytest.raises(EmptySlideError) as e:
        open_slide(p)
    _assert_names(e, p, "zero-sized")


def _tiled(tmp_path, name="t.ome.tif"):
    p = tmp_path / name
    write_slide(p, np.tile(sample_field(0, "bccd"), (2, 2, 1)), mpp=0.25, tile=256, compression="zlib")
    return p


def test_truncated_tiff_is_damaged_at_open_and_refused_at_read(tmp_path):
    from leukcore.io import MissingTileError

    p = _tiled(tmp_path)
    data = p.read_bytes()
    q = tmp_path / "trunc.ome.tif"
    q.write_bytes(data[: len(data) // 3])
    s = open_slide(q)  # the index is readable: opening records the damage (cheaply, no pixel read)
    assert s.damaged and s.missing and any("missing" in w or "no pixel data" in w for w in s.warnings)
    assert "past the end of the file" in s.missing[0]["reason"] or "table" in s.missing[0]["reason"]
    assert s.info()["integrity"]["ok"] is False
    with pytest.raises(MissingTileError) as e:
        s.levels[0].compute()
    _assert_names(e, q, "no pixel data", "level")
    assert isinstance(e.value, CorruptSlideError) and len(e.value.box) == 4
    with pytest.raises(MissingTileError):
        s.check_missing()
    # skip policy: missing tiles read as background and are recorded
    k = s.with_missing_policy("skip")
    a = k.levels[0].compute()
    m = s.missing[0]
    y0, x0, y1, x1 = m["box"]
    assert (a[y0:y1, x0:x1] == 255).all()
    assert len(k.skipped_regions()) == len(s.missing)
    s.close()


@pytest.mark.timeout(60)
def test_corrupt_tile_raises_at_read_time(tmp_path):
    p = _tiled(tmp_path)
    with tifffile.TiffFile(p) as tif:
        page = tif.pages[0]
        off, cnt = page.dataoffsets[5], page.databytecounts[5]
    raw = bytearray(p.read_bytes())
    raw[off : off + cnt] = os.urandom(cnt)  # garbage inside one tile, file length intact
    p.write_bytes(bytes(raw))
    s = open_slide(p)  # metadata is fine: opening works
    ty, tx = divmod(5, -(-s.shape[1] // 256))
    with pytest.raises(CorruptSlideError) as e:
        s.read_region(0, ty * 256, tx * 256, 64, 64)
    _assert_names(e, p, "cannot read pixels", "level 0")
    with pytest.raises(CorruptSlideError):
        s.levels[0].compute()
    # regions whose dask chunk does not hold the bad tile still read fine
    assert s.levels[0].chunks[1][0] == 1024 and s.shape[1] > 1100
    assert s.read_region(0, 0, 1100, 32, 32).shape == (32, 32, 3)
    s.close()


@pytest.mark.timeout(60)
def test_truncated_jpeg_raises_at_read_time(tmp_path):
    src = sample_fields("bccd")[0]
    q = tmp_path / "cut.jpg"
    data = open(src, "rb").read()
    q.write_bytes(data[: len(data) // 2])
    s = open_slide(q)  # header intact
    assert s.shape == (480, 640)
    with pytest.raises(CorruptSlideError) as e:
        s.read_region(0, 0, 0, 100, 100)
    _assert_names(e, q, "decode")


def _png_header_only(path, w, h):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")
    )


def test_decompression_bomb_png_refused_before_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    _png_header_only(p, 100_000, 100_000)  # declares 1e10 px in ~60 bytes
    t = time.perf_counter()
    with pytest.raises(SlideTooLargeError) as e:
        open_slide(p)
    assert time.perf_counter() - t < 2.0
    _assert_names(e, p, "exceeds the limit")


def test_pixel_limit_argument_and_env(tmp_path, monkeypatch):
    p = _tiled(tmp_path)
    with pytest.raises(SlideTooLargeError) as e:
        open_slide(p, max_pixels=1000)
    _assert_names(e, p, "max_pixels")
    monkeypatch.setenv("LEUK_MAX_PIXELS", "5000")
    with pytest.raises(SlideTooLargeError):
        open_slide(p)
    monkeypatch.setenv("LEUK_MAX_PIXELS", "1e12")
    open_slide(p).close()
    monkeypatch.setenv("LEUK_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="LEUK_MAX_PIXELS"):
        open_slide(p)


def test_decode_limit_applies_to_single_strip(tmp_path, monkeypatch):
    p = tmp_path / "onestrip.tif"
    tifffile.imwrite(p, sample_field(0, "bccd"), photometric="rgb", rowsperstrip=480, compression="zlib")
    with pytest.raises(SlideTooLargeError) as e:
        open_slide(p, max_decode_pixels=100_000)  # the single strip holds 307k px
    _assert_names(e, p, "decode limit")
    open_slide(p, max_decode_pixels=400_000).close()


def test_five_channels_unsupported(tmp_path):
    p = tmp_path / "five.tif"
    tifffile.imwrite(
        p,
        np.zeros((32, 32, 5), np.uint8),
        photometric="minisblack",
        planarconfig="contig",
        extrasamples=[0, 0, 0, 0],
        metadata=None,
    )
    with pytest.raises(UnsupportedLayoutError) as e:
        open_slide(p)
    _assert_names(e, p, "5 channels")


def test_stack_without_rgb_unsupported(tmp_path):
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, np.zeros((4, 6, 32, 32), np.uint8))
    with pytest.raises(UnsupportedLayoutError) as e:
        open_slide(p)
    _assert_names(e, p, "unsupported sample layout")


def test_zarr_z_stack_unsupported(tmp_path):
    import zarr

    p = tmp_path / "zs.zarr"
    g = zarr.open_group(str(p), mode="w", zarr_format=2)
    g.create_array("0", shape=(5, 3, 16, 16), dtype="uint8", chunks=(1, 3, 16, 16))
    g.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [
                {"name": "z", "type": "space"},
                {"name": "c", "type": "channel"},
                {"name": "y", "type": "space"},
                {"name": "x", "type": "space"},
            ],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1, 1]}]}],
        }
    ]
    with pytest.raises(UnsupportedLayoutError) as e:
        open_slide(p)
    _assert_names(e, p, "'z' has length 5")


def test_bad_mpp_argument(tmp_path):
    p = _tiled(tmp_path)
    for bad in (0, -1, float("nan"), "abc"):
        with pytest.raises(ValueError):
            open_slide(p, mpp=bad)


def test_errors_are_subclasses_with_path_and_problem():
    e = CorruptSlideError("/x/y.svs", "bad tile")
    assert e.path == "/x/y.svs" and e.problem == "bad tile" and str(e) == "/x/y.svs: bad tile"


@pytest.mark.parametrize("content", [b"II*\x00\x08\x00\x00\x00garbagegarbage", b"II*\x00", b"MM\x00+\x00\x08"])
def test_tiff_magic_with_garbage_is_corrupt(tmp_path, content):
    p = tmp_path / "bad.tif"
    p.write_bytes(content)
    with pytest.raises(CorruptSlideError) as e:
        open_slide(p)
    _assert_names(e, p, "tiff")


def test_png_with_corrupt_data_raises_at_read(tmp_path):
    p = tmp_path / "c.png"
    _png_header_only(p, 64, 64)  # valid header, IDAT far too short
    s = open_slide(p)
    assert s.shape == (64, 64)
    with pytest.raises(CorruptSlideError) as e:
        s.read_region(0, 0, 0, 8, 8)
    _assert_names(e, p)
