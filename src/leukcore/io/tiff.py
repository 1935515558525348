"""TIFF family reader: pyramidal / tiled / stripped TIFF, OME-TIFF, Aperio SVS, Hamamatsu NDPI.

Pixels are read through ``tifffile``'s zarr store (``series.aszarr()``), one
native tile or strip at a time; opening reads only the IFDs (metadata).
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from typing import Optional

import numpy as np

from .convert import check_layout, value_range_rule
from .errors import (
    CorruptSlideError,
    EmptySlideError,
    SlideError,
    SlideTooLargeError,
    UnsupportedFormatError,
    UnsupportedLayoutError,
)
from .lazy import LevelReader, Source, as_dask, choose_chunks, file_token, integrity_of_readers, level_downsample
from .mppcheck import MPP_RANGE, UNIT_TO_UM, valid_mpp
from .slide import Slide, downsample2
from .tiff_mpp import metadata_mpp

__all__ = ["open_tiff", "MPP_RANGE", "UNIT_TO_UM", "valid_mpp"]


class _LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):  # pragma: no cover - trivial
        self.messages.append(record.getMessage())


@contextmanager
def _capture_tifffile_log():
    """Collect tifffile's warnings instead of letting them reach the user's stderr."""
    log = logging.getLogger("tifffile")
    h = _LogCapture()
    old_prop = log.propagate
    log.addHandler(h)
    log.propagate = False
    try:
        yield h.messages
    finally:
        log.removeHandler(h)
        log.propagate = old_prop


def _open_tifffile(path):
    import tifffile

    with _capture_tifffile_log():
        return tifffile.TiffFile(path)


def _open_store(path, series_index):
    tif = _open_tifffile(path)
    import zarr

    with _capture_tifffile_log():
        store = tif.series[series_index].aszarr()
        z = zarr.open(store, mode="r")
    return (tif, z)


def _close_store(obj):
    tif, _ = obj
    tif.close()


def _level_getter(level: int, multiscale: bool):
    return _LevelGetter(level, multiscale)


class _LevelGetter:
    """Picklable ``native -> level array``."""

    def __init__(self, level: int, multiscale: bool):
        self.level, self.multiscale = level, multiscale

    def __call__(self, obj):
        z = obj[1]
        return z[str(self.level)] if self.multiscale else z


def _vendor_format(tif) -> tuple[str, Optional[str]]:
    if tif.is_svs:
        return "svs", "aperio"
    if tif.is_ndpi:
        return "ndpi", "hamamatsu"
    if tif.is_ome:
        return "ome-tiff", None
    for flag, fmt, vendor in (
        ("is_scn", "scn", "leica"),
        ("is_philips", "philips-tiff", "philips"),
        ("is_bif", "bif", "ventana"),
        ("is_qpi", "qptiff", "akoya"),
    ):
        if getattr(tif, flag, False):
            return fmt, vendor
    return "tiff", None


def _map_axes(path, axes: str, shape) -> str:
    """Map tifffile axes to our letters (Y, X, C, other) and validate the layout."""
    out = []
    chan = [i for i, a in enumerate(axes) if a in "SC" and shape[i] > 1]
    if len(chan) > 1:
        raise UnsupportedLayoutError(
            path, f"unsupported sample layout: axes {axes} shape {tuple(shape)} (several channel axes)"
        )
    cidx = chan[0] if chan else None
    for i, (a, n) in enumerate(zip(axes, shape, strict=False)):
        if a in "YX":
            out.append(a)
        elif i == cidx:
            out.append("C")
        elif n == 1:
            out.append("1")
        else:
            raise UnsupportedLayoutError(
                path,
                f"unsupported sample layout: axes {axes} shape {tuple(shape)} "
                f"(a {n}-long '{a}' axis; only single 2-D grey/RGB(A) images are supported)",
            )
    if "Y" not in out or "X" not in out:
        raise UnsupportedLayoutError(path, f"unsupported sample layout: axes {axes} (no Y/X image plane)")
    return "".join(out)


def _missing_segments(page, lshape, fsize: int, is_ndpi: bool = False) -> tuple[Optional[tuple], dict]:
    """``(tile (th, tw), {(row, col): reason})`` of a level page's stored tiles / strips that hold no
    pixel data: byte count 0, offset 0, data past the end of the file, or absent from a short
    (truncated / unreadable) offset table.  Reads only the page's offset and byte-count tables.
    """
    try:
        chunks, chunked = tuple(page.chunks), tuple(page.chunked)
        offs = np.asarray(page.dataoffsets, dtype=np.float64)
        counts = np.asarray(page.databytecounts, dtype=np.float64)
    except Exception:  # pragma: no cover - tifffile without chunk info
        return None, {}
    separate = int(getattr(page, "planarconfig", 1)) == 2 and len(chunked) >= 3
    if separate:
        planes, ny, nx = int(chunked[0]), int(chunked[1]), int(chunked[2])
        sp = chunks if len(chunks) == 2 else chunks[1:3]
        tile = (int(sp[0]), int(sp[1]))
    else:
        planes, ny, nx = 1, int(chunked[0]), int(chunked[1]) if len(chunked) > 1 else 1
        tile = (int(chunks[0]), int(chunks[1]) if len(chunks) > 1 else int(lshape[1]))
    expected = planes * ny * nx
    n = min(len(offs), len(counts))
    if is_ndpi and n < expected:  # NDPI: tifffile splits one JPEG strip into virtual tiles
        return None, {}
    missing: dict = {}
    if n < expected:
        why = "absent from the tile offset table (truncated or unreadable table)"
        for k in range(n, expected):
            kk = k % (ny * nx)
            missing.setdefault((kk // nx, kk % nx), why)
    o, c = offs[: min(n, expected)], counts[: min(n, expected)]
    bad = (c <= 0) | (o <= 0) | (o + c > fsize)
    for k in np.nonzero(bad)[0]:
        kk = int(k) % (ny * nx)
        if c[k] <= 0:
            why = "byte count 0"
        elif o[k] <= 0:
            why = "data offset 0"
        else:
            why = f"data at bytes {int(o[k])}..{int(o[k] + c[k])} past the end of the file ({fsize} bytes)"
        missing.setdefault((kk // nx, kk % nx), why)
    return tile, missing


def open_tiff(path, *, max_pixels: float, max_decode_pixels: float) -> Slide:
    """Open a TIFF-family file as a lazy :class:`Slide` (see :func:`leukcore.io.open_slide`)."""
    import tifffile

    path = str(path)
    try:
        with _capture_tifffile_log() as warnings_:
            tif = tifffile.TiffFile(path)
            series = tif.series
    except tifffile.TiffFileError as e:
        msg = str(e)
        if "not a TIFF" in msg or "invalid TIFF" in msg:
            raise UnsupportedFormatError(path, f"not a readable TIFF file ({msg})") from e
        raise CorruptSlideError(path, f"corrupt TIFF: {msg}") from e
    except MemoryError:
        raise
    except Exception as e:  # struct.error, ZeroDivisionError (width 0), ... from a damaged header
        raise CorruptSlideError(path, f"corrupt or truncated TIFF: {type(e).__name__}: {e}") from e
    try:
        return _build(tif, series, path, warnings_, max_pixels, max_decode_pixels)
    except (SlideError, MemoryError):
        tif.close()
        raise
    except Exception as e:
        tif.close()
        raise CorruptSlideError(path, f"corrupt TIFF metadata: {type(e).__name__}: {e}") from e
    except BaseException:
        tif.close()
        raise


def _build(tif, series_list, path, warnings_, max_pixels, max_decode_pixels) -> Slide:
    if not series_list:
        raise CorruptSlideError(path, "TIFF has no readable image" + (f" ({warnings_[0]})" if warnings_ else ""))
    # pick the first series that is a 2-D image (SVS/NDPI put the slide first)
    s_index = 0
    series = series_list[0]
    fmt, vendor = _vendor_format(tif)
    levels = list(series.levels)
    page0 = series.pages[0] if series.pages else None
    if page0 is None:
        raise CorruptSlideError(path, "TIFF series has no pages")
    axes = series.axes
    H, W, photometric, convert = _sample_layout(path, series, page0)
    if H * W > max_pixels:
        raise SlideTooLargeError(
            path,
            f"declared size {W} x {H} = {H * W:.3g} pixels exceeds the limit "
            f"{max_pixels:.3g} (max_pixels / LEUK_MAX_PIXELS)",
        )
    slide_warnings = [f"tifffile: {w}" for w in dict.fromkeys(warnings_)][:10]
    if len(set(warnings_)) > 10:
        slide_warnings.append(f"tifffile: ... {len(set(warnings_)) - 10} more warnings")
    mpp, origin = metadata_mpp(tif, page0, slide_warnings, path)

    import zarr

    with _capture_tifffile_log():
        store = series.aszarr()
        z = zarr.open(store, mode="r")
    source = Source(_open_store, (path, s_index), _close_store, obj=(tif, z))
    b = _TiffLevels(path, tif, fmt, convert, (H, W), slide_warnings, max_decode_pixels)
    dlevels, downs, native_chunks, readers = b.levels(levels, z, source)
    # non-pyramidal large image: lazily computed lower levels
    if len(dlevels) == 1:
        while max(dlevels[-1].shape[:2]) > 2048 and min(dlevels[-1].shape[:2]) >= 2:
            dlevels.append(downsample2(dlevels[-1]))
            downs.append(downs[-1] * 2)
    meta = {
        "series": [s.name or s.kind for s in series_list],
        "axes": axes,
        "dtype": str(series.dtype),
        "photometric": photometric,
        "mpp_origin": origin,
        "computed_levels": len(levels) == 1 and len(dlevels) > 1,
        "native_chunks": native_chunks,
        "compression": _compression_name(page0),
    }
    if tif.is_ome and tif.ome_metadata:
        meta["ome_description"] = _ome_description(tif.ome_metadata)
    missing = integrity_of_readers(readers, slide_warnings)
    if series.dtype != np.uint8 and "colormap" not in convert:
        scale_max, w = value_range_rule(series.dtype, readers[-1].sample_max())
        if scale_max is not None:
            for r in readers:
                r.convert = {**r.convert, "scale_max": scale_max}
            slide_warnings.append(w)
    return Slide(
        levels=dlevels,
        downsamples=downs,
        mpp=mpp,
        mpp_source="metadata" if mpp else None,
        path=path,
        format=fmt,
        vendor=vendor,
        metadata=meta,
        warnings=slide_warnings,
        missing=missing,
        _closer=source.close,
        _readers=readers,
    )


def _sample_layout(path, series, page0) -> tuple:
    """``(H, W, photometric, convert)`` of the series; unsupported layouts (CMYK, odd channels) refused."""
    axes = series.axes
    shape = series.shape
    if 0 in shape:
        raise EmptySlideError(path, f"zero-sized image (shape {tuple(shape)})")
    mapped = _map_axes(path, axes, shape)
    H, W = shape[axes.index("Y")], shape[axes.index("X")]
    nchan = shape[mapped.index("C")] if "C" in mapped else 1
    photometric = int(getattr(page0, "photometric", 2))
    if photometric == 5:  # SEPARATED (CMYK)
        raise UnsupportedLayoutError(path, "unsupported sample layout: CMYK (separated) TIFF")
    convert = {}
    if photometric == 0:
        convert["min_is_white"] = True
    if photometric == 3 and "ColorMap" in page0.tags:
        convert["colormap"] = np.asarray(page0.tags["ColorMap"].value)
        nchan = 3
    else:
        problem = check_layout(nchan, series.dtype)
        if problem:
            raise UnsupportedLayoutError(path, problem)
    return H, W, photometric, convert


class _TiffLevels:
    """The stored levels of a TIFF series as lazy dask arrays, each with its reader and missing tiles."""

    def __init__(
        self, path, tif, fmt: str, convert: dict, shape0: tuple, slide_warnings: list, max_decode_pixels: float
    ):
        self.path, self.tif, self.fmt, self.convert = path, tif, fmt, convert
        self.H, self.W = shape0
        self.warnings, self.max_decode_pixels = slide_warnings, max_decode_pixels
        self.fsize = os.path.getsize(path)

    def levels(self, levels: list, z, source) -> tuple:
        """``(dask levels, downsamples, native chunks, readers)``."""
        path = self.path
        multiscale = len(levels) > 1
        token = file_token(path)
        dlevels, downs, native_chunks, readers = [], [], [], []
        for i, lv in enumerate(levels):
            arr = z[str(i)] if multiscale else z
            lshape = lv.shape
            lmapped = _map_axes(path, lv.axes, lshape)
            lh, lw = lshape[lv.axes.index("Y")], lshape[lv.axes.index("X")]
            if lh == 0 or lw == 0:
                break
            native = arr.chunks
            ny, nx = native[lv.axes.index("Y")], native[lv.axes.index("X")]
            nat_pixels = ny * nx
            if nat_pixels > self.max_decode_pixels:
                raise SlideTooLargeError(
                    path,
                    f"level {i} stores {ny} x {nx} = {nat_pixels:.3g} pixels in one "
                    f"strip/tile, beyond the decode limit {self.max_decode_pixels:.3g} "
                    "(LEUK_MAX_DECODE_PIXELS)",
                )
            native_chunks.append([int(ny), int(nx)])
            reader = self.reader(i, lv, lmapped, (lh, lw), multiscale, source)
            chunks = choose_chunks((ny, nx), (lh, lw))
            readers.append(reader)
            dlevels.append(as_dask(reader, chunks, f"leuk-tiff-{token}-{i}"))
            downs.append(reader.downsample)
        return dlevels, downs, native_chunks, readers

    def reader(self, i: int, lv, lmapped: str, lshape: tuple, multiscale: bool, source) -> LevelReader:
        """Level ``i``'s reader with its missing tiles (Philips' blank tiles are background, not damage)."""
        path, slide_warnings = self.path, self.warnings
        lh, lw = lshape
        reader = LevelReader(
            path, source, _level_getter(i, multiscale), lmapped, (lh, lw), level=i, convert=self.convert
        )
        reader.downsample = level_downsample((self.H, self.W), (lh, lw)) if i else 1.0
        if lv.pages and hasattr(lv.pages[0], "dataoffsets"):
            tile, miss = _missing_segments(lv.pages[0], (lh, lw), self.fsize, bool(self.tif.is_ndpi))
            if tile:
                if self.fmt == "philips-tiff":  # Philips stores blank background tiles with byte count 0
                    reader.sparse = frozenset(k for k, v in miss.items() if v == "byte count 0")
                    miss = {k: v for k, v in miss.items() if k not in reader.sparse}
                    if reader.sparse:
                        slide_warnings.append(
                            f"level {i}: {len(reader.sparse)} sparse tiles (Philips: byte count 0 "
                            "= blank background) read as background"
                        )
                reader.tile, reader.missing = tile, miss
        if i == 0 and reader.missing and len(reader.missing) >= -(-lh // reader.tile[0]) * -(-lw // reader.tile[1]):
            why = next(iter(reader.missing.values()))
            raise CorruptSlideError(
                path,
                f"no tile of level 0 holds pixel data ({why})" + (f"; {slide_warnings[0]}" if slide_warnings else ""),
            )
        return reader


def _ome_description(xml: str) -> Optional[str]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.endswith("}Description") or el.tag == "Description":
            return (el.text or "").strip() or None
    return None


def _compression_name(page) -> Optional[str]:
    try:
        return page.compression.name.lower()
    except AttributeError:  # pragma: no cover
        return None
