"""Hostile cases a reader must refuse or report: missing pixels, non-finite floats, broken OME-Zarr
structure, unsupported layouts and formats, the file system (see :mod:`leukcore.testing.hostile`).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..io import errors as E
from .hostile_files import (
    ZARR_BASE,
    bare_zarr,
    chunk_files,
    classic_tiff_header,
    patch_tiff_tag,
    png_bytes_with_bad_crc,
    png_header_only,
    tiff_with_tiles,
    write_png,
    write_tiff,
    zarr_slide,
)

if TYPE_CHECKING:
    from .hostile import Cases


def missing_pixels(c: Cases) -> None:
    """Missing pixels (tiff)."""
    import tifffile

    from ..io import write_slide

    root, rgb, pyr = c.root, c.rgb, c.pyr
    add = c.add
    p = tiff_with_tiles(root / "bytecount0.tif", rgb)
    patch_tiff_tag(p, "TileByteCounts", 2, 0)
    add(
        "tiff_tile_bytecount0",
        p,
        "read",
        E.MissingTileError,
        ("byte count 0",),
        note="read as zeros and analysed before",
    )
    p = tiff_with_tiles(root / "offset_past_eof.tif", rgb, compression=None)
    patch_tiff_tag(p, "TileOffsets", 2, os.path.getsize(p) + 4096)
    add("tiff_tile_offset_past_eof", p, "read", E.MissingTileError, ("past the end",))
    p = tiff_with_tiles(root / "offset0.tif", rgb)
    patch_tiff_tag(p, "TileOffsets", 0, 0)
    add("tiff_tile_offset0", p, "read", E.MissingTileError, ("offset 0",))
    p = write_tiff(root / "strip_bytecount0.tif", rgb, rowsperstrip=32)
    patch_tiff_tag(p, "StripByteCounts", 3, 0)
    add("tiff_strip_bytecount0", p, "read", E.MissingTileError, ("byte count 0",))
    src = (
        write_slide(root / "_pyr_src.ome.tif", pyr, mpp=0.25, tile=128, compression="none") or root / "_pyr_src.ome.tif"
    )
    data = Path(src).read_bytes()
    os.unlink(src)
    (root / "truncated_half.ome.tif").write_bytes(data[: len(data) // 2])
    add("tiff_truncated_half", root / "truncated_half.ome.tif", "read", E.MissingTileError, ("no pixel data",))
    (root / "truncated_90.ome.tif").write_bytes(data[: int(len(data) * 0.9)])
    add("tiff_truncated_90pct", root / "truncated_90.ome.tif", "read", E.MissingTileError, ())
    (root / "truncated_header.tif").write_bytes(data[:40])
    add("tiff_truncated_in_header", root / "truncated_header.tif", "open", E.CorruptSlideError, ())
    big = classic_tiff_header(60_000, 60_000, tile=512, offsets_value=10_000, count_value=100)
    cut = 8 + 2 + 11 * 12 + 4 + 6 + 4 * 118 * 118 // 2  # inside the tile-offset table
    (root / "cut_offset_table_60k.tif").write_bytes(big[:cut])
    add(
        "tiff_60k_cut_in_offset_table",
        root / "cut_offset_table_60k.tif",
        "open",
        E.CorruptSlideError,
        ("no tile of level 0",),
        note="`leuk info` said valid and reads were zeros before",
    )
    p = root / "pyr_missing_l1.ome.tif"
    p.write_bytes((root / "pyramid.ome.tif").read_bytes())
    with tifffile.TiffFile(p) as tif:
        sub = tif.series[0].levels[1].pages[0]
        t = sub.tags["TileByteCounts"]
        pos, bo = t.valueoffset, tif.byteorder
        size = {3: 2, 4: 4, 16: 8}[int(t.dtype)]
    with open(p, "r+b") as f:
        f.seek(pos + size)
        f.write(struct.pack(bo + {2: "H", 4: "I", 8: "Q"}[size], 0))
    add("tiff_pyramid_level1_tile_missing", p, "read", E.MissingTileError, ("level 1",))


def non_finite(c: Cases) -> None:
    """Non-finite floats."""
    root, rgb = c.root, c.rgb
    add = c.add
    a = rgb.astype(np.float32) / 255
    a[100:110, 50:60] = np.nan
    add("tiff_float_nan", write_tiff(root / "nan.tif", a, photometric="rgb"), "read", E.NonFinitePixelsError, ("nan",))
    a = rgb.astype(np.float32) / 255
    a[0, 0, 1] = np.inf
    add("tiff_float_inf", write_tiff(root / "inf.tif", a, photometric="rgb"), "read", E.NonFinitePixelsError, ("nan",))
    a = rgb.astype(np.float32) / 255
    a[:] = np.nan
    add("tiff_float_all_nan", write_tiff(root / "all_nan.tif", a, photometric="rgb"), "read", E.NonFinitePixelsError)
    a = rgb.astype(np.float32) / 255
    a[5:9, 5:9] = np.nan
    add("zarr_float_nan", bare_zarr(root / "nan.zarr", a, (128, 128, 3)), "read", E.NonFinitePixelsError, ("nan",))


def zarr_structure(c: Cases) -> None:
    """Ome-zarr structure."""
    root, pyr = c.root, c.pyr
    add = c.add
    z = zarr_slide(root / "missing_chunk.ome.zarr", pyr, "0.4")
    os.unlink(chunk_files(z / "0")[3])
    add("zarr_missing_chunk_v2", z, "read", E.MissingTileError, ("chunk file",), note="read as the fill value before")
    z = zarr_slide(root / "missing_chunk_v3.ome.zarr", pyr, "0.5")
    os.unlink(chunk_files(z / "1")[0])
    add("zarr_missing_chunk_v3_level1", z, "read", E.MissingTileError, ("level 1",))
    z = zarr_slide(root / "all_chunks_missing.ome.zarr", pyr, "0.4")
    for f in chunk_files(z / "0"):
        os.unlink(f)
    add("zarr_all_chunks_missing", z, "open", E.CorruptSlideError, ("no chunk",))
    z = zarr_slide(root / "bad_scale.ome.zarr", pyr, "0.4")
    at = json.loads((z / ".zattrs").read_text())
    at["multiscales"][0]["datasets"][1]["coordinateTransformations"][0]["scale"] = [1.0, 1.0, 1.0]
    (z / ".zattrs").write_text(json.dumps(at))
    add("zarr_scale_disagrees_with_shape", z, "open", E.CorruptSlideError, ("inconsistent",))
    z = zarr_slide(root / "missing_level.ome.zarr", pyr, "0.4")
    shutil.rmtree(z / "1")
    add("zarr_missing_level", z, "open", E.CorruptSlideError, ("missing",))
    z = zarr_slide(root / "no_zattrs.ome.zarr", pyr, "0.4")
    os.unlink(z / ".zattrs")
    add("zarr_missing_zattrs", z, "open", E.UnsupportedFormatError, ("multiscales",))
    z = zarr_slide(root / "garbage_zattrs.ome.zarr", pyr, "0.4")
    (z / ".zattrs").write_text("{ this is not json")
    add("zarr_garbage_zattrs", z, "open", E.CorruptSlideError, ())
    z = zarr_slide(root / "garbage_zarr_json.ome.zarr", pyr, "0.5")
    (z / "zarr.json").write_text(
        '{"zarr_format": 3, "node_type": "group", "attributes": {"ome": {"version": "0.5", "multiscales": "nonsense"}}}'
    )
    add("zarr_multiscales_not_a_list", z, "open", E.UnsupportedFormatError, ("multiscales",))
    d = root / "empty_group.zarr"
    d.mkdir()
    (d / ".zgroup").write_text('{"zarr_format": 2}')
    add("zarr_empty_group", d, "open", E.UnsupportedFormatError, ("multiscales",))
    d = root / "zarr_4d.zarr"
    bare_zarr(d, np.zeros((2, 3, 64, 64), np.uint8), (1, 1, 64, 64))
    add("zarr_4d", d, "open", E.UnsupportedLayoutError, ("layout",))


def unsupported(c: Cases) -> None:
    """Unsupported layouts / formats."""
    root, rgb = c.root, c.rgb
    add = c.add
    add(
        "tiff_cmyk",
        write_tiff(root / "cmyk.tif", np.dstack([rgb, rgb[..., :1]]), photometric="separated"),
        "open",
        E.UnsupportedLayoutError,
        ("cmyk",),
    )
    add(
        "tiff_5_channels",
        write_tiff(root / "c5.tif", np.zeros((5, 64, 64), np.uint8), photometric="minisblack", planarconfig="separate"),
        "open",
        E.UnsupportedLayoutError,
        ("channels",),
    )
    for b in list(ZARR_BASE.values()):
        shutil.rmtree(b, ignore_errors=True)
    add(
        "tiff_4d_stack",
        write_tiff(
            root / "stack4d.tif",
            np.zeros((2, 3, 64, 64), np.uint8),
            photometric="minisblack",
            metadata={"axes": "TZYX"},
        ),
        "open",
        E.UnsupportedLayoutError,
        ("layout",),
    )
    (root / "text.tif").write_text("this is a text file, not a TIFF\n" * 20)
    add("text_named_tif", root / "text.tif", "open", E.UnsupportedFormatError, ("unknown image format",))
    (root / "text.png").write_text("not a png\n")
    add("text_named_png", root / "text.png", "open", E.UnsupportedFormatError, ())
    (root / "magic_garbage.tif").write_bytes(b"II*\x00" + os.urandom(200))
    add("tiff_magic_then_garbage", root / "magic_garbage.tif", "open", E.CorruptSlideError, ())
    (root / "zero.png").write_bytes(b"")
    add("zero_byte_png", root / "zero.png", "open", E.EmptySlideError, ("empty",))
    (root / "zero.ome.tif").write_bytes(b"")
    add("zero_byte_tif", root / "zero.ome.tif", "open", E.EmptySlideError, ("empty",))
    (root / "bad_crc.png").write_bytes(png_bytes_with_bad_crc(rgb))
    add("png_bad_crc", root / "bad_crc.png", "read", E.CorruptSlideError, ())
    full = (root / "field.png").read_bytes()
    (root / "truncated.png").write_bytes(full[: len(full) // 2])
    add("png_truncated", root / "truncated.png", "read", E.CorruptSlideError, ())
    full = (root / "field.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(full[: len(full) // 3])
    add("jpeg_truncated", root / "truncated.jpg", "read", E.CorruptSlideError, ())
    (root / "png_header_only.png").write_bytes(png_header_only(64, 64)[:-12])
    add("png_header_only", root / "png_header_only.png", "read", E.CorruptSlideError, ())


def file_system(c: Cases) -> None:
    """The file system."""
    root, rgb = c.root, c.rgb
    add = c.add
    d = root / "plain_directory"
    d.mkdir()
    (d / "readme.txt").write_text("x")
    add("plain_directory", d, "open", E.SlideNotFoundError, ("directory",))
    add("missing_file", root / "does_not_exist.svs", "open", E.SlideNotFoundError, ("no such file",))
    if c.include_special:
        loop = root / "loop.tif"
        os.symlink(loop, loop)
        add("symlink_loop", loop, "open", E.SlideNotFoundError, ("loop",))
        dang = root / "dangling.tif"
        os.symlink(root / "nowhere.tif", dang)
        add("symlink_dangling", dang, "open", E.SlideNotFoundError, ("dangling",))
        good = root / "link_to_field.png"
        os.symlink(root / "field.png", good)
        add("symlink_valid", good, "ok")
        fifo = root / "fifo.tif"
        os.mkfifo(fifo)
        add("fifo", fifo, "open", E.UnsupportedFormatError, ("fifo",), note="hung `leuk info` before")
        add("char_device", Path(os.devnull), "open", E.UnsupportedFormatError, ("device",))
        if os.geteuid() != 0:
            p = write_png(root / "unreadable.png", rgb)
            os.chmod(p, 0)
            add("unreadable_permissions", p, "open", E.SlideNotFoundError, ("permission",))
