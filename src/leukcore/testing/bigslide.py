"""Cheap huge slides for laziness tests and I/O benchmarks.

:func:`write_repeated_tile_slide` writes a pyramidal OME-TIFF of any size (e.g.
100,000 x 100,000) in seconds: one real RGB tile is JPEG-encoded once and the
same encoded bytes are written for every tile of every level, so nothing is
computed per tile.  The file is a valid, fully populated, tiled BigTIFF that
any reader has to decode tile by tile like a scanner's slide.
"""

from __future__ import annotations

import math
import os
from typing import Optional

import numpy as np

from ..io.write import pyramid_shapes

__all__ = ["write_repeated_tile_slide"]


def _encoded_tile(tile_rgb: np.ndarray, quality: int) -> bytes:
    """JPEG bytes for one tile exactly as tifffile stores it (YCbCr 2x2, no shared tables)."""
    import io

    import tifffile

    buf = io.BytesIO()
    t = np.ascontiguousarray(tile_rgb)
    tifffile.imwrite(
        buf, t, tile=t.shape[:2], compression="jpeg", compressionargs={"level": quality}, photometric="rgb"
    )
    buf.seek(0)
    with tifffile.TiffFile(buf) as tif:
        p = tif.pages[0]
        assert "JPEGTables" not in p.tags
        fh = tif.filehandle
        fh.seek(p.dataoffsets[0])
        return fh.read(p.databytecounts[0])


def write_repeated_tile_slide(
    path,
    shape_yx,
    tile_rgb: np.ndarray,
    mpp: Optional[float] = 0.25,
    quality: int = 85,
    min_level_size: Optional[int] = None,
) -> str:
    """Write a pyramidal OME-TIFF of ``shape_yx`` whose every tile is ``tile_rgb`` (JPEG).

    Parameters
    ----------
    path : str
        Output ``.ome.tif``.
    shape_yx : (int, int)
        Level-0 height and width.
    tile_rgb : ndarray
        ``(T, T, 3)`` uint8 tile (T a multiple of 16), e.g. a region of a real smear.
    """
    import tifffile

    T = int(tile_rgb.shape[0])
    if tile_rgb.shape != (T, T, 3) or T % 16:
        raise ValueError(f"tile must be (T, T, 3) with T a multiple of 16, got {tile_rgb.shape}")
    data = _encoded_tile(tile_rgb.astype(np.uint8), quality)
    shapes = pyramid_shapes(shape_yx, min_level_size or T)

    def tiles(h, w):
        for _ in range(math.ceil(h / T) * math.ceil(w / T)):
            yield data

    meta = {"axes": "YXS", "Name": "repeated-tile test slide"}
    kw = {}
    if mpp:
        meta.update(PhysicalSizeX=mpp, PhysicalSizeXUnit="µm", PhysicalSizeY=mpp, PhysicalSizeYUnit="µm")
        kw = dict(resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    opts = dict(dtype=np.uint8, tile=(T, T), photometric="rgb", compression="jpeg")
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tw:
            for i, (h, w) in enumerate(shapes):
                if i == 0:
                    tw.write(tiles(h, w), shape=(h, w, 3), subifds=len(shapes) - 1, metadata=meta, **kw, **opts)
                else:
                    tw.write(tiles(h, w), shape=(h, w, 3), subfiletype=1, metadata=None, **opts)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return str(path)
