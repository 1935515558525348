"""A generator of hostile input files: the conformance suite every reader and command must survive.

In the spirit of ``zarr.testing.store``: :func:`build_hostile_cases` writes one small file (or
directory, link, FIFO...) per case into a folder and returns :class:`HostileCase` records saying what
a correct program does with each::

    from leukcore.testing.hostile import build_hostile_cases

    for case in build_hostile_cases(tmp_path):
        case.kind      # "ok", "warn" (opens and reads, with a warning), "open" / "read" (error there)
        case.error     # the SlideError subclass expected (open / read cases)
        case.words     # lower-case words the error or warning must contain
        case.field     # as a field for `leuk classify`: "ok", "refuse" (label null + reason) or "error"

Cases cover missing pixels (zero byte counts, offsets past the end of the file, a 60,000 px slide cut
inside its tile-offset table, missing zarr chunks, NaN / inf floats, multiscale metadata that disagrees
with the arrays), bit depths (12-bit in uint16, float 0..255), degenerate images (a side of 0, 1 x 60,000
px, huge declared sizes, blank / black / white / grey / noise), broken metadata (``PhysicalSizeX="abcd"``,
mpp 40 µm/px, garbage OME-XML), unsupported layouts (CMYK, 5 channels, 4-D stacks), and the file system
(zero bytes, text named ``.tif``, wrong extension, unicode names, symlink loops, a FIFO, a device, a
directory, no read permission).  Everything is built in about a second and takes ~10 MB.

This module needs no pytest; :mod:`tests.test_hostile_inputs` runs the cases through the API and the CLI.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from dataclasses import field as _field
from pathlib import Path
from typing import Optional

import numpy as np

from ..io import errors as E

__all__ = ["HostileCase", "CASE_NAMES", "build_hostile_cases", "tiff_with_tiles", "patch_tiff_tag", "classic_tiff_header"]


@dataclass
class HostileCase:
    """One hostile input and what a correct program does with it."""

    name: str
    path: Path
    #: "ok" / "warn": opens and reads (warn: a warning containing ``words``); "open" / "read": ``error`` there
    kind: str
    error: Optional[type] = None
    words: tuple = ()
    #: as a field for ``classify_image``: "ok", "refuse" (label null with a reason), "error" (SlideError)
    field: str = "error"
    note: str = ""
    #: field error class when it differs from ``error`` (e.g. a valid slide refused as a field)
    field_error: Optional[type] = None
    tags: tuple = _field(default_factory=tuple)

    @property
    def valid(self) -> bool:
        """Whether the file opens and every pixel reads (``leuk info --check`` exits 0)."""
        return self.kind in ("ok", "warn")

    def __str__(self) -> str:  # pytest ids
        return self.name


#: every case name :func:`build_hostile_cases` can return, in order (``unreadable_permissions`` only
#: when not running as root), for parametrising tests before the files exist
CASE_NAMES = (
    'field_png', 'field_jpeg', 'field_bmp', 'field_gif_palette', 'png_palette', 'png_rgba', 'png_grey_field',
    'png_16bit_full', 'png_16bit_12bit', 'jpeg_cmyk', 'png_named_svs', 'jpeg_named_png', 'unicode_name',
    'tiff_tiled', 'tiff_stripped', 'tiff_palette', 'tiff_miniswhite', 'tiff_grey_alpha', 'tiff_uint16_full',
    'tiff_float01', 'tiff_72dpi', 'ome_tiff_pyramid', 'ome_zarr_v04', 'ome_zarr_v05', 'bare_zarr',
    'tiff_uint16_12bit', 'tiff_float_0_255', 'zarr_uint16_12bit', 'ome_physicalsize_abcd', 'ome_mpp_40',
    'ome_xml_garbage', 'philips_sparse_tile', 'ome_unit_bogus', 'png_black', 'png_white', 'png_grey', 'png_near_uniform', 'png_noise',
    'png_one_pixel', 'tiff_grey16_uniform', 'png_1x60000', 'png_60000x1', 'png_30x1000_aspect',
    'png_huge_declared', 'png_huge_field', 'tiff_width0', 'tiff_height0', 'tiff_huge_declared',
    'zarr_zero_sized', 'tiff_tile_bytecount0', 'tiff_tile_offset_past_eof', 'tiff_tile_offset0',
    'tiff_strip_bytecount0', 'tiff_truncated_half', 'tiff_truncated_90pct', 'tiff_truncated_in_header',
    'tiff_60k_cut_in_offset_table', 'tiff_pyramid_level1_tile_missing', 'tiff_float_nan', 'tiff_float_inf',
    'tiff_float_all_nan', 'zarr_float_nan', 'zarr_missing_chunk_v2', 'zarr_missing_chunk_v3_level1',
    'zarr_all_chunks_missing', 'zarr_scale_disagrees_with_shape', 'zarr_missing_level', 'zarr_missing_zattrs',
    'zarr_garbage_zattrs', 'zarr_multiscales_not_a_list', 'zarr_empty_group', 'zarr_4d', 'tiff_cmyk',
    'tiff_5_channels', 'tiff_4d_stack', 'text_named_tif', 'text_named_png', 'tiff_magic_then_garbage',
    'zero_byte_png', 'zero_byte_tif', 'png_bad_crc', 'png_truncated', 'jpeg_truncated', 'png_header_only',
    'plain_directory', 'missing_file', 'symlink_loop', 'symlink_dangling', 'symlink_valid', 'fifo',
    'char_device', 'unreadable_permissions',
)


# ------------------------------------------------------------------ helpers
def _field_rgb(size: int = 256) -> np.ndarray:
    """A real smear field crop (bundled BCCD field), ``(size, size, 3)`` uint8."""
    from .slides import sample_field

    f = sample_field(0, "bccd")
    return np.ascontiguousarray(f[:size, :size])


def _png(path, arr, **kw) -> Path:
    from PIL import Image

    Image.fromarray(arr).save(path, **kw)
    return Path(path)


def tiff_with_tiles(path, arr, tile=(128, 128), **kw) -> Path:
    """A tiled TIFF of ``arr`` (zlib) written by tifffile."""
    import tifffile

    kw.setdefault("compression", "zlib")
    if arr.ndim == 3 and arr.shape[2] == 3:
        kw.setdefault("photometric", "rgb")
    tifffile.imwrite(path, arr, tile=tile, **kw)
    return Path(path)


def patch_tiff_tag(path, tag: str, index: int, value: int, page: int = 0) -> None:
    """Overwrite entry ``index`` of array tag ``tag`` (e.g. ``TileByteCounts``) of page ``page`` in place."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        t = tif.pages[page].tags[tag]
        bo = tif.byteorder
        size = {3: 2, 4: 4, 16: 8}[int(t.dtype)]
        fmt = {2: "H", 4: "I", 8: "Q"}[size]
        pos = t.valueoffset  # file position of the values (inline or not)
    with open(path, "r+b") as f:
        f.seek(pos + index * size)
        f.write(struct.pack(bo + fmt, value))


def classic_tiff_header(width: int, height: int, tile: int = 512, spp: int = 3, n_tiles: Optional[int] = None,
                        offsets_value: int = 0, count_value: int = 0) -> bytes:
    """A classic little-endian tiled TIFF made of a header, one IFD and its offset / byte-count tables
    (no pixel data): declared sizes of any magnitude (or 0) in a few bytes.
    """
    ny = -(-height // tile) if height else 0
    nx = -(-width // tile) if width else 0
    n = n_tiles if n_tiles is not None else max(1, ny * nx)
    entries = []
    nent = 11
    ifd_off = 8
    data_off = ifd_off + 2 + nent * 12 + 4
    bps_off = data_off
    toff_off = bps_off + 2 * spp
    tcnt_off = toff_off + 4 * n
    entries = [(256, 4, 1, width), (257, 4, 1, height),
               (258, 3, spp, bps_off if spp > 2 else 8), (259, 3, 1, 1), (262, 3, 1, 2 if spp >= 3 else 1),
               (277, 3, 1, spp), (284, 3, 1, 1), (322, 3, 1, tile), (323, 3, 1, tile),
               (324, 4, n, toff_off if n > 1 else offsets_value), (325, 4, n, tcnt_off if n > 1 else count_value)]
    b = bytearray(b"II*\x00" + struct.pack("<I", ifd_off))
    b += struct.pack("<H", nent)
    for tag, typ, cnt, val in entries:
        if typ == 3 and cnt == 1:
            b += struct.pack("<HHIHH", tag, typ, cnt, val, 0)
        else:
            b += struct.pack("<HHII", tag, typ, cnt, val)
    b += struct.pack("<I", 0)
    b += struct.pack("<" + "H" * spp, *([8] * spp))
    if n > 1:
        b += struct.pack("<" + "I" * n, *([offsets_value] * n))
        b += struct.pack("<" + "I" * n, *([count_value] * n))
    return bytes(b)


def _png_bytes_with_bad_crc(arr) -> bytes:
    buf = io.BytesIO()
    from PIL import Image

    Image.fromarray(arr).save(buf, format="PNG")
    raw = bytearray(buf.getvalue())
    i = raw.find(b"IDAT")
    n = struct.unpack(">I", raw[i - 4:i])[0]
    crc_pos = i + 4 + n
    raw[crc_pos:crc_pos + 4] = bytes(4 - k for k in range(4))  # wrong CRC, data intact
    raw[i + 10] ^= 0xFF  # and a flipped byte inside the compressed data
    return bytes(raw)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def _ome_tiff(path, arr, xml_pixels_attrs: str, tile=(128, 128)) -> Path:
    """An OME-TIFF whose OME-XML ``Pixels`` element carries ``xml_pixels_attrs`` verbatim."""
    import tifffile

    H, W = arr.shape[:2]
    xml = ('<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
           f'<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" SizeX="{W}" '
           f'SizeY="{H}" SizeC="3" SizeZ="1" SizeT="1" {xml_pixels_attrs}>'
           '<Channel ID="Channel:0:0" SamplesPerPixel="3"/><TiffData/></Pixels></Image></OME>')
    tifffile.imwrite(path, arr, tile=tile, photometric="rgb", compression="zlib", description=xml,
                     metadata=None)
    return Path(path)


_ZARR_BASE: dict = {}


def _zarr_slide(path, arr, version="0.4", tile=128) -> Path:
    """An OME-Zarr of ``arr`` (written once per version and array, then copied)."""
    from ..io import write_slide

    key = (version, id(arr), tile)
    base = _ZARR_BASE.get(key)
    if base is None or not Path(base).exists():
        base = Path(path).parent / f"_base_{version.replace('.', '')}_{tile}.ome.zarr"
        write_slide(base, arr, mpp=0.25, tile=tile, format="ome-zarr", ngff_version=version, min_level_size=tile)
        _ZARR_BASE[key] = base
    shutil.copytree(base, path)
    return Path(path)


def _zarr_array_dir(root: Path, key: str) -> Path:
    return root / key


def _chunk_files(d: Path) -> list:
    return sorted(p for p in d.rglob("*") if p.is_file() and p.name not in (".zarray", ".zattrs", "zarr.json"))


def _bare_zarr(path, arr, chunks, fill_value=0) -> Path:
    import zarr

    z = zarr.create_array(str(path), shape=arr.shape, chunks=chunks, dtype=arr.dtype, fill_value=fill_value,
                          zarr_format=2, config={"write_empty_chunks": True})
    z[...] = arr
    return Path(path)


# ------------------------------------------------------------------ the cases
def build_hostile_cases(root, *, include_special: bool = True) -> list[HostileCase]:
    """Write every hostile input under ``root`` (created) and return the cases.

    ``include_special``: also the FIFO, the device, the unreadable file (skipped when running as
    root: root reads anything) and the symlinks.
    """
    import tifffile

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _ZARR_BASE.clear()
    cases: list[HostileCase] = []
    rgb = _field_rgb(256)
    rng = np.random.default_rng(18)

    def add(name, path, kind, error=None, words=(), field=None, note="", field_error=None):
        if field is None:
            field = "ok" if kind in ("ok", "warn") else "error"
        cases.append(HostileCase(name, Path(path), kind, error, tuple(words), field, note, field_error))

    # -------------------------------------------------------------- valid inputs (must keep working)
    add("field_png", _png(root / "field.png", rgb), "ok", note="a real smear field")
    add("field_jpeg", _png(root / "field.jpg", rgb, quality=90), "ok")
    add("field_bmp", _png(root / "field.bmp", rgb), "ok")
    add("field_gif_palette", _png(root / "field.gif", rgb), "ok", note="palette (GIF)")
    add("png_palette", _palette_png(root / "palette.png", rgb), "ok")
    add("png_rgba", _png(root / "rgba.png", np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])), "ok")
    add("png_grey_field", _png(root / "grey_field.png", rgb.mean(axis=2).astype(np.uint8)), "ok")
    add("png_16bit_full", _png16(root / "full16.png", (rgb.astype(np.uint16) * 257)), "ok")
    add("png_16bit_12bit", _png16(root / "twelve.png", (rgb.astype(np.uint16) * 16)), "warn", words=("12-bit",),
        note="12-bit data in a 16-bit PNG: scaled by 255/4095 with a warning (decided at first decode)")
    add("jpeg_cmyk", _cmyk_jpeg(root / "cmyk.jpg", rgb), "ok", note="CMYK JPEG: Pillow converts to RGB")
    add("png_named_svs", _png(root / "actually_png.svs", rgb, format="PNG"), "ok", note="wrong extension: content decides")
    add("jpeg_named_png", _png(root / "actually_jpeg.png", rgb, format="JPEG"), "ok")
    add("unicode_name", _png(root / "blöd 血液 🩸 ü.png", rgb), "ok")
    add("tiff_tiled", tiff_with_tiles(root / "tiled.tif", rgb), "ok")
    add("tiff_stripped", _tiff(root / "stripped.tif", rgb, rowsperstrip=32), "ok")
    add("tiff_palette", _palette_tiff(root / "palette.tif", rgb), "ok")
    add("tiff_miniswhite", _tiff(root / "miniswhite.tif", 255 - rgb.mean(axis=2).astype(np.uint8),
                                 photometric="miniswhite"), "ok")
    add("tiff_grey_alpha", _tiff(root / "grey_alpha.tif", np.dstack([rgb[..., 0], np.full(rgb.shape[:2], 255, np.uint8)]),
                                 photometric="minisblack", extrasamples=[2]), "ok", note="2 channels: grey + alpha")
    add("tiff_uint16_full", _tiff(root / "u16.tif", rgb.astype(np.uint16) * 257, photometric="rgb"), "ok")
    add("tiff_float01", _tiff(root / "f01.tif", rgb.astype(np.float32) / 255, photometric="rgb"), "ok")
    add("tiff_72dpi", _tiff(root / "dpi72.tif", rgb, resolution=(72, 72), resolutionunit="INCH"), "ok",
        note="72 dpi = 353 um/px: not a microscope resolution, ignored quietly")
    from ..io import write_slide
    pyr = np.tile(rgb, (2, 2, 1))
    add("ome_tiff_pyramid", write_slide(root / "pyramid.ome.tif", pyr, mpp=0.25, tile=128) or
        root / "pyramid.ome.tif", "ok")
    add("ome_zarr_v04", _zarr_slide(root / "v04.ome.zarr", pyr, "0.4"), "ok")
    add("ome_zarr_v05", _zarr_slide(root / "v05.ome.zarr", pyr, "0.5"), "ok")
    add("bare_zarr", _bare_zarr(root / "bare.zarr", rgb, (128, 128, 3)), "ok")

    # -------------------------------------------------------------- valid, with a warning
    add("tiff_uint16_12bit", _tiff(root / "u16_12bit.tif", rgb.astype(np.uint16) * 16, photometric="rgb"),
        "warn", words=("12-bit",), note="12-bit camera data in uint16: max <= 4095")
    add("tiff_float_0_255", _tiff(root / "f255.tif", rgb.astype(np.float32), photometric="rgb"), "warn",
        words=("0..255",), note="float data stored as 0..255 instead of 0..1")
    add("zarr_uint16_12bit", _bare_zarr(root / "u16_12bit.zarr", rgb.astype(np.uint16) * 16, (128, 128, 3)),
        "warn", words=("12-bit",))
    add("ome_physicalsize_abcd", _ome_tiff(root / "abcd.ome.tif", rgb, 'PhysicalSizeX="abcd" PhysicalSizeY="abcd"'),
        "warn", words=("abcd",), note="unparsable pixel size: unknown, with a warning")
    add("ome_mpp_40", _ome_tiff(root / "mpp40.ome.tif", rgb, 'PhysicalSizeX="40" PhysicalSizeY="40"'), "warn",
        words=("plausible",), note="40 um/px: implausible, ignored with a warning (ran away before)")
    add("ome_xml_garbage", _tiff(root / "garbage_xml.ome.tif", rgb, photometric="rgb",
                                 description='<?xml version="1.0"?><OME xmlns="http://www.openmicroscopy.org/'
                                             'Schemas/OME/2016-06"><Image><Pixels PhysicalSizeX="0.25"'
                                             '<<<garbage</OME>'), "ok",
        note="broken OME-XML: read as a plain TIFF")
    p = tiff_with_tiles(root / "philips_sparse.tif", rgb, software="Philips DP v1.0",
                        description='<?xml version="1.0" encoding="UTF-8" ?><DataObject ObjectType="DPUfsImport">'
                                    '</DataObject>')
    patch_tiff_tag(p, "TileByteCounts", 1, 0)
    add("philips_sparse_tile", p, "warn", words=("sparse",),
        note="Philips TIFF: byte count 0 is blank background by design, not damage")
    add("ome_unit_bogus", _ome_tiff(root / "unit.ome.tif", rgb, 'PhysicalSizeX="0.25" PhysicalSizeXUnit="parsec"'),
        "warn", words=("unit",))

    # -------------------------------------------------------------- near-uniform / noise (valid files)
    for name, arr in (("black", np.zeros((256, 256, 3), np.uint8)),
                      ("white", np.full((256, 256, 3), 255, np.uint8)),
                      ("grey", np.full((256, 256, 3), 128, np.uint8)),
                      ("near_uniform", np.clip(200 + rng.integers(-3, 4, (256, 256, 3)), 0, 255).astype(np.uint8)),
                      ("noise", rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)),
                      ("one_pixel", np.full((1, 1, 3), 90, np.uint8))):
        add(f"png_{name}", _png(root / f"{name}.png", arr), "ok", field="refuse",
            note="not a blood smear: label null with a reason")
    add("tiff_grey16_uniform", _tiff(root / "grey16.tif", np.full((64, 64), 30000, np.uint16)), "ok",
        field="refuse")

    # -------------------------------------------------------------- degenerate geometry
    add("png_1x60000", _png(root / "strip_1x60000.png", np.full((1, 60000, 3), 128, np.uint8)), "ok",
        field="error", field_error=E.DegenerateImageError,
        note="a 260-byte file that drove memory to 23 GB through max(H, W)^2")
    add("png_60000x1", _png(root / "strip_60000x1.png", np.full((60000, 1, 3), 128, np.uint8)), "ok",
        field="error", field_error=E.DegenerateImageError)
    add("png_30x1000_aspect", _png(root / "aspect.png", np.tile(rgb[:30, :250], (1, 4, 1))), "ok", field="error",
        field_error=E.DegenerateImageError, note="aspect 33:1 > 20:1")
    (root / "huge_declared.png").write_bytes(_png_header_only(100_000, 100_000))
    add("png_huge_declared", root / "huge_declared.png", "open", E.SlideTooLargeError, ("exceeds",),
        note="60-byte PNG declaring 1e10 px: refused before decoding")
    (root / "huge_field.png").write_bytes(_png_header_only(12_000, 12_000))
    add("png_huge_field", root / "huge_field.png", "read", E.CorruptSlideError, ("decode",),
        field="error", field_error=E.SlideTooLargeError, note="1.4e8 px: too big for a field, refused before decode")
    (root / "zero_width.tif").write_bytes(classic_tiff_header(0, 512, n_tiles=1))
    add("tiff_width0", root / "zero_width.tif", "open", E.SlideError, (), note="ZeroDivisionError before")
    (root / "zero_height.tif").write_bytes(classic_tiff_header(512, 0, n_tiles=1))
    add("tiff_height0", root / "zero_height.tif", "open", E.SlideError, ())
    (root / "huge_declared.tif").write_bytes(classic_tiff_header(200_000, 200_000, tile=4096, offsets_value=8,
                                                                 count_value=1))
    add("tiff_huge_declared", root / "huge_declared.tif", "open", E.SlideTooLargeError, ("exceeds",))
    zs = root / "zero_sized.zarr"
    import zarr
    zarr.open_array(str(zs), mode="w", shape=(0, 10, 3), dtype="uint8", chunks=(8, 8, 3), zarr_format=2)
    add("zarr_zero_sized", zs, "open", E.EmptySlideError, ("zero-sized",))

    # -------------------------------------------------------------- missing pixels (TIFF)
    p = tiff_with_tiles(root / "bytecount0.tif", rgb)
    patch_tiff_tag(p, "TileByteCounts", 2, 0)
    add("tiff_tile_bytecount0", p, "read", E.MissingTileError, ("byte count 0",),
        note="read as zeros and analysed before")
    p = tiff_with_tiles(root / "offset_past_eof.tif", rgb, compression=None)
    patch_tiff_tag(p, "TileOffsets", 2, os.path.getsize(p) + 4096)
    add("tiff_tile_offset_past_eof", p, "read", E.MissingTileError, ("past the end",))
    p = tiff_with_tiles(root / "offset0.tif", rgb)
    patch_tiff_tag(p, "TileOffsets", 0, 0)
    add("tiff_tile_offset0", p, "read", E.MissingTileError, ("offset 0",))
    p = _tiff(root / "strip_bytecount0.tif", rgb, rowsperstrip=32)
    patch_tiff_tag(p, "StripByteCounts", 3, 0)
    add("tiff_strip_bytecount0", p, "read", E.MissingTileError, ("byte count 0",))
    src = write_slide(root / "_pyr_src.ome.tif", pyr, mpp=0.25, tile=128, compression="none") or root / "_pyr_src.ome.tif"
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
    add("tiff_60k_cut_in_offset_table", root / "cut_offset_table_60k.tif", "open", E.CorruptSlideError,
        ("no tile of level 0",), note="`leuk info` said valid and reads were zeros before")
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

    # -------------------------------------------------------------- non-finite floats
    a = rgb.astype(np.float32) / 255
    a[100:110, 50:60] = np.nan
    add("tiff_float_nan", _tiff(root / "nan.tif", a, photometric="rgb"), "read", E.NonFinitePixelsError, ("nan",))
    a = rgb.astype(np.float32) / 255
    a[0, 0, 1] = np.inf
    add("tiff_float_inf", _tiff(root / "inf.tif", a, photometric="rgb"), "read", E.NonFinitePixelsError, ("nan",))
    a = rgb.astype(np.float32) / 255
    a[:] = np.nan
    add("tiff_float_all_nan", _tiff(root / "all_nan.tif", a, photometric="rgb"), "read", E.NonFinitePixelsError)
    a = rgb.astype(np.float32) / 255
    a[5:9, 5:9] = np.nan
    add("zarr_float_nan", _bare_zarr(root / "nan.zarr", a, (128, 128, 3)), "read", E.NonFinitePixelsError, ("nan",))

    # -------------------------------------------------------------- OME-Zarr structure
    z = _zarr_slide(root / "missing_chunk.ome.zarr", pyr, "0.4")
    os.unlink(_chunk_files(z / "0")[3])
    add("zarr_missing_chunk_v2", z, "read", E.MissingTileError, ("chunk file",),
        note="read as the fill value before")
    z = _zarr_slide(root / "missing_chunk_v3.ome.zarr", pyr, "0.5")
    os.unlink(_chunk_files(z / "1")[0])
    add("zarr_missing_chunk_v3_level1", z, "read", E.MissingTileError, ("level 1",))
    z = _zarr_slide(root / "all_chunks_missing.ome.zarr", pyr, "0.4")
    for f in _chunk_files(z / "0"):
        os.unlink(f)
    add("zarr_all_chunks_missing", z, "open", E.CorruptSlideError, ("no chunk",))
    z = _zarr_slide(root / "bad_scale.ome.zarr", pyr, "0.4")
    at = json.loads((z / ".zattrs").read_text())
    at["multiscales"][0]["datasets"][1]["coordinateTransformations"][0]["scale"] = [1.0, 1.0, 1.0]
    (z / ".zattrs").write_text(json.dumps(at))
    add("zarr_scale_disagrees_with_shape", z, "open", E.CorruptSlideError, ("inconsistent",))
    z = _zarr_slide(root / "missing_level.ome.zarr", pyr, "0.4")
    shutil.rmtree(z / "1")
    add("zarr_missing_level", z, "open", E.CorruptSlideError, ("missing",))
    z = _zarr_slide(root / "no_zattrs.ome.zarr", pyr, "0.4")
    os.unlink(z / ".zattrs")
    add("zarr_missing_zattrs", z, "open", E.UnsupportedFormatError, ("multiscales",))
    z = _zarr_slide(root / "garbage_zattrs.ome.zarr", pyr, "0.4")
    (z / ".zattrs").write_text("{ this is not json")
    add("zarr_garbage_zattrs", z, "open", E.CorruptSlideError, ())
    z = _zarr_slide(root / "garbage_zarr_json.ome.zarr", pyr, "0.5")
    (z / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {"ome": '
                                 '{"version": "0.5", "multiscales": "nonsense"}}}')
    add("zarr_multiscales_not_a_list", z, "open", E.UnsupportedFormatError, ("multiscales",))
    d = root / "empty_group.zarr"
    d.mkdir()
    (d / ".zgroup").write_text('{"zarr_format": 2}')
    add("zarr_empty_group", d, "open", E.UnsupportedFormatError, ("multiscales",))
    d = root / "zarr_4d.zarr"
    _bare_zarr(d, np.zeros((2, 3, 64, 64), np.uint8), (1, 1, 64, 64))
    add("zarr_4d", d, "open", E.UnsupportedLayoutError, ("layout",))

    # -------------------------------------------------------------- unsupported layouts / formats
    add("tiff_cmyk", _tiff(root / "cmyk.tif", np.dstack([rgb, rgb[..., :1]]), photometric="separated"),
        "open", E.UnsupportedLayoutError, ("cmyk",))
    add("tiff_5_channels", _tiff(root / "c5.tif", np.zeros((5, 64, 64), np.uint8), photometric="minisblack",
                                 planarconfig="separate"), "open", E.UnsupportedLayoutError, ("channels",))
    for b in list(_ZARR_BASE.values()):
        shutil.rmtree(b, ignore_errors=True)
    add("tiff_4d_stack", _tiff(root / "stack4d.tif", np.zeros((2, 3, 64, 64), np.uint8), photometric="minisblack",
                               metadata={"axes": "TZYX"}), "open", E.UnsupportedLayoutError, ("layout",))
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
    (root / "bad_crc.png").write_bytes(_png_bytes_with_bad_crc(rgb))
    add("png_bad_crc", root / "bad_crc.png", "read", E.CorruptSlideError, ())
    full = (root / "field.png").read_bytes()
    (root / "truncated.png").write_bytes(full[: len(full) // 2])
    add("png_truncated", root / "truncated.png", "read", E.CorruptSlideError, ())
    full = (root / "field.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(full[: len(full) // 3])
    add("jpeg_truncated", root / "truncated.jpg", "read", E.CorruptSlideError, ())
    (root / "png_header_only.png").write_bytes(_png_header_only(64, 64)[:-12])
    add("png_header_only", root / "png_header_only.png", "read", E.CorruptSlideError, ())

    # -------------------------------------------------------------- the file system
    d = root / "plain_directory"
    d.mkdir()
    (d / "readme.txt").write_text("x")
    add("plain_directory", d, "open", E.SlideNotFoundError, ("directory",))
    add("missing_file", root / "does_not_exist.svs", "open", E.SlideNotFoundError, ("no such file",))
    if include_special:
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
            p = _png(root / "unreadable.png", rgb)
            os.chmod(p, 0)
            add("unreadable_permissions", p, "open", E.SlideNotFoundError, ("permission",))
    return cases


# ------------------------------------------------------------------ small writers
def _tiff(path, arr, **kw) -> Path:
    import tifffile

    tifffile.imwrite(path, arr, **kw)
    return Path(path)


def _png16(path, arr) -> Path:
    import imagecodecs

    Path(path).write_bytes(imagecodecs.png_encode(np.ascontiguousarray(arr)))
    return Path(path)


def _palette_png(path, rgb) -> Path:
    from PIL import Image

    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=64).save(path)
    return Path(path)


def _palette_tiff(path, rgb) -> Path:
    from PIL import Image

    im = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=64)
    idx = np.asarray(im)
    pal = np.asarray(im.getpalette()[: 256 * 3] + [0] * max(0, 768 - len(im.getpalette())), np.uint16)
    cmap = (pal.reshape(256, 3).T * 257).astype(np.uint16)
    return _tiff(path, idx, photometric="palette", colormap=cmap)


def _cmyk_jpeg(path, rgb) -> Path:
    from PIL import Image

    Image.fromarray(rgb).convert("CMYK").save(path, format="JPEG")
    return Path(path)
