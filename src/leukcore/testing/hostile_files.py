"""The small file writers and binary patchers :mod:`leukcore.testing.hostile` builds its cases with
(PNG / TIFF / OME-TIFF / OME-Zarr / bare zarr writers, TIFF tag patching, hand-made headers).
"""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = [
    "field_rgb",
    "write_png",
    "tiff_with_tiles",
    "patch_tiff_tag",
    "classic_tiff_header",
    "png_bytes_with_bad_crc",
    "png_header_only",
    "ome_tiff",
    "ZARR_BASE",
    "zarr_slide",
    "zarr_array_dir",
    "chunk_files",
    "bare_zarr",
    "write_tiff",
    "png16",
    "palette_png",
    "palette_tiff",
    "cmyk_jpeg",
]


def field_rgb(size: int = 256) -> np.ndarray:
    """A real smear field crop (bundled BCCD field), ``(size, size, 3)`` uint8."""
    from .slides import sample_field

    f = sample_field(0, "bccd")
    return np.ascontiguousarray(f[:size, :size])


def write_png(path, arr, **kw) -> Path:
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


def classic_tiff_header(
    width: int,
    height: int,
    tile: int = 512,
    spp: int = 3,
    n_tiles: Optional[int] = None,
    offsets_value: int = 0,
    count_value: int = 0,
) -> bytes:
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
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, spp, bps_off if spp > 2 else 8),
        (259, 3, 1, 1),
        (262, 3, 1, 2 if spp >= 3 else 1),
        (277, 3, 1, spp),
        (284, 3, 1, 1),
        (322, 3, 1, tile),
        (323, 3, 1, tile),
        (324, 4, n, toff_off if n > 1 else offsets_value),
        (325, 4, n, tcnt_off if n > 1 else count_value),
    ]
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


def png_bytes_with_bad_crc(arr) -> bytes:
    buf = io.BytesIO()
    from PIL import Image

    Image.fromarray(arr).save(buf, format="PNG")
    raw = bytearray(buf.getvalue())
    i = raw.find(b"IDAT")
    n = struct.unpack(">I", raw[i - 4 : i])[0]
    crc_pos = i + 4 + n
    raw[crc_pos : crc_pos + 4] = bytes(4 - k for k in range(4))  # wrong CRC, data intact
    raw[i + 10] ^= 0xFF  # and a flipped byte inside the compressed data
    return bytes(raw)


def png_header_only(width: int, height: int) -> bytes:
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


def ome_tiff(path, arr, xml_pixels_attrs: str, tile=(128, 128)) -> Path:
    """An OME-TIFF whose OME-XML ``Pixels`` element carries ``xml_pixels_attrs`` verbatim."""
    import tifffile

    H, W = arr.shape[:2]
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
        f'<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" SizeX="{W}" '
        f'SizeY="{H}" SizeC="3" SizeZ="1" SizeT="1" {xml_pixels_attrs}>'
        '<Channel ID="Channel:0:0" SamplesPerPixel="3"/><TiffData/></Pixels></Image></OME>'
    )
    tifffile.imwrite(path, arr, tile=tile, photometric="rgb", compression="zlib", description=xml, metadata=None)
    return Path(path)


ZARR_BASE: dict = {}


def zarr_slide(path, arr, version="0.4", tile=128) -> Path:
    """An OME-Zarr of ``arr`` (written once per version and array, then copied)."""
    from ..io import WriteOptions, write_slide

    key = (version, id(arr), tile)
    base = ZARR_BASE.get(key)
    if base is None or not Path(base).exists():
        base = Path(path).parent / f"_base_{version.replace('.', '')}_{tile}.ome.zarr"
        write_slide(
            base,
            arr,
            mpp=0.25,
            tile=tile,
            format="ome-zarr",
            ngff_version=version,
            options=WriteOptions(min_level_size=tile),
        )
        ZARR_BASE[key] = base
    shutil.copytree(base, path)
    return Path(path)


def zarr_array_dir(root: Path, key: str) -> Path:
    return root / key


def chunk_files(d: Path) -> list:
    return sorted(p for p in d.rglob("*") if p.is_file() and p.name not in (".zarray", ".zattrs", "zarr.json"))


def bare_zarr(path, arr, chunks, fill_value=0) -> Path:
    import zarr

    z = zarr.create_array(
        str(path),
        shape=arr.shape,
        chunks=chunks,
        dtype=arr.dtype,
        fill_value=fill_value,
        zarr_format=2,
        config={"write_empty_chunks": True},
    )
    z[...] = arr
    return Path(path)


# ------------------------------------------------------------------ small writers
def write_tiff(path, arr, **kw) -> Path:
    import tifffile

    tifffile.imwrite(path, arr, **kw)
    return Path(path)


def png16(path, arr) -> Path:
    import imagecodecs

    Path(path).write_bytes(imagecodecs.png_encode(np.ascontiguousarray(arr)))
    return Path(path)


def palette_png(path, rgb) -> Path:
    from PIL import Image

    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=64).save(path)
    return Path(path)


def palette_tiff(path, rgb) -> Path:
    from PIL import Image

    im = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=64)
    idx = np.asarray(im)
    pal = np.asarray(im.getpalette()[: 256 * 3] + [0] * max(0, 768 - len(im.getpalette())), np.uint16)
    cmap = (pal.reshape(256, 3).T * 257).astype(np.uint16)
    return write_tiff(path, idx, photometric="palette", colormap=cmap)


def cmyk_jpeg(path, rgb) -> Path:
    from PIL import Image

    Image.fromarray(rgb).convert("CMYK").save(path, format="JPEG")
    return Path(path)
