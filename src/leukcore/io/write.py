"""``write_slide``: write a (lazy) RGB image as a pyramidal OME-TIFF or an OME-Zarr, chunk by chunk.

The full image is never held in memory: level 0 is computed one band of tile
rows at a time (a band is ``tile`` rows x the full width), each band is written
and, in the same pass, 2x2-mean-downsampled into the next level's buffer (in
memory when small, else a temporary memory-mapped file next to the output), so
every pyramid level costs one pass over the level above it.  Output is written
under a temporary name and renamed into place only when complete.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np

from .._version import __version__
from .slide import LOCAL_SCHEDULER

__all__ = ["write_slide", "pyramid_shapes", "TIFF_COMPRESSIONS", "ZARR_COMPRESSIONS"]

TIFF_COMPRESSIONS = {None: None, "none": None, "zlib": "zlib", "deflate": "zlib", "jpeg": "jpeg",
                     "zstd": "zstd", "lzw": "lzw", "webp": "webp", "jpeg2000": "jpeg2000", "jpegxl": "jpegxl"}
ZARR_COMPRESSIONS = {None, "none", "zlib", "deflate", "zstd", "blosc"}

#: next-level buffers larger than this go to a temporary raw file (read/written by row bands)
_MEM_BUFFER_BYTES = 64 * 2**20


class _DiskBuffer:
    """A ``(H, W, 3)`` uint8 image in a raw temporary file, written and read in full-width row bands.

    Uses ``pread`` / ``pwrite`` rather than a memory map, so the pages of a level
    being built do not accumulate in the process's resident memory.
    """

    ndim = 3
    dtype = np.dtype(np.uint8)

    def __init__(self, path: str, shape):
        self.shape = (int(shape[0]), int(shape[1]), 3)
        self.row_bytes = self.shape[1] * 3
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self.fd, self.shape[0] * self.row_bytes)

    def __setitem__(self, rows: slice, value: np.ndarray) -> None:
        r0 = rows.start or 0
        v = np.ascontiguousarray(value, dtype=np.uint8)
        assert v.shape[1:] == self.shape[1:], (v.shape, self.shape)
        os.pwrite(self.fd, v.tobytes(), r0 * self.row_bytes)

    def __getitem__(self, key) -> np.ndarray:
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        r0, r1, _ = rows.indices(self.shape[0])
        n = max(0, r1 - r0)
        buf = os.pread(self.fd, n * self.row_bytes, r0 * self.row_bytes)
        return np.frombuffer(buf, np.uint8).reshape(n, self.shape[1], 3)[:, cols]

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:  # pragma: no cover
            pass


def pyramid_shapes(shape_yx, min_size: int = 512) -> list[tuple[int, int]]:
    """Level shapes: halve (floor) until the longer side is <= ``min_size``."""
    h, w = int(shape_yx[0]), int(shape_yx[1])
    out = [(h, w)]
    while max(h, w) > min_size and min(h, w) >= 2:
        h, w = h // 2, w // 2
        out.append((h, w))
    return out


def _infer_format(path: str, format: Optional[str]) -> str:
    if format:
        f = format.lower().replace("_", "-")
        if f in ("ome-tiff", "tiff", "ome-tif", "tif"):
            return "ome-tiff"
        if f in ("ome-zarr", "zarr"):
            return "ome-zarr"
        raise ValueError(f"{path}: unknown output format {format!r} (use 'ome-tiff' or 'ome-zarr')")
    low = path.lower().rstrip("/")
    if low.endswith((".tif", ".tiff")):
        return "ome-tiff"
    if low.endswith(".zarr"):
        return "ome-zarr"
    raise ValueError(f"{path}: cannot infer the output format from the suffix "
                     "(use .ome.tif / .ome.tiff or .ome.zarr / .zarr, or pass format=)")


def _as_rgb_dask(image):
    """Return (dask (Y, X, 3) uint8, mpp from a Slide or None)."""
    import dask.array as da

    from .convert import check_layout, to_rgb8
    from .slide import Slide

    mpp = None
    if isinstance(image, Slide):
        mpp = image.mpp
        image = image.levels[0]
    if not isinstance(image, da.Array):
        a = np.asarray(image)
        image = da.from_array(a, chunks=(1024, 1024) + a.shape[2:])
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"expected a (Y, X) or (Y, X, C) image, got shape {image.shape}")
    problem = check_layout(int(image.shape[2]), image.dtype)
    if problem:
        raise ValueError(problem)
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"cannot write a zero-sized image (shape {image.shape})")
    if image.dtype != np.uint8 or image.shape[2] != 3:
        if image.chunks[2] != (image.shape[2],):
            image = image.rechunk({2: -1})
        image = image.map_blocks(to_rgb8, dtype=np.uint8, chunks=image.chunks[:2] + ((3,),))
    return image, mpp


def _band_rows(src, tile: int, width: int) -> int:
    """Rows per computed band: a multiple of ``tile`` matching the source chunking when cheap."""
    ch = getattr(src, "chunks", None)
    if ch is not None and isinstance(ch, tuple) and ch and isinstance(ch[0], tuple):
        c0 = int(ch[0][0])
        if c0 > tile and c0 % tile == 0 and c0 * width * 3 <= 256 * 2**20:
            return c0
    return tile


def _compute(block):
    """Materialise a band; dask chunks are stored straight into one preallocated array
    (no concatenation copy, so the peak is about one band).
    """
    if hasattr(block, "dask") and hasattr(block, "chunks"):
        import dask.array as da

        out = np.empty(block.shape, block.dtype)
        # local threads: under a dask.distributed Client (the default scheduler once one exists) the
        # store would run in worker processes and leave ``out`` unwritten
        da.store(block, out, lock=False, scheduler=LOCAL_SCHEDULER)
        return out
    if hasattr(block, "compute"):
        return np.asarray(block.compute(scheduler=LOCAL_SCHEDULER))
    return np.asarray(block)


def _ds2_block(b: np.ndarray, step: int = 4096) -> np.ndarray:
    """2x2 mean (rounded) of a band, in column slabs so temporaries stay small."""
    h, w = (b.shape[0] // 2) * 2, (b.shape[1] // 2) * 2
    out = np.empty((h // 2, w // 2, 3), np.uint8)
    for c0 in range(0, w, step):
        c1 = min(w, c0 + step)
        s = b[0:h:2, c0:c1:2].astype(np.uint16)
        s += b[1:h:2, c0:c1:2]
        s += b[0:h:2, c0 + 1:c1:2]
        s += b[1:h:2, c0 + 1:c1:2]
        s += 2
        s //= 4
        out[:, c0 // 2:c1 // 2] = s
    return out


class _Pyramid:
    """Streams bands of each level; downsampling into the next level happens during the pass."""

    def __init__(self, level0, shapes, tile: int, tmpdir: str,
                 progress: Optional[Callable[[int, int], None]] = None):
        self.srcs = {0: level0}
        self.shapes = shapes
        self.tile = tile
        self.tmpdir = tmpdir
        self.progress = progress
        self.total = sum(math.ceil(h / tile) for h, _ in shapes)
        self.done = 0
        self._open: list = []

    def _buffer(self, i, shape):
        h, w = shape
        if h * w * 3 <= _MEM_BUFFER_BYTES:
            return np.full((h, w, 3), 255, np.uint8)
        buf = _DiskBuffer(os.path.join(self.tmpdir, f"level{i}.raw"), (h, w))
        self._open.append(buf)
        return buf

    def close(self) -> None:
        for b in self._open:
            b.close()
        self._open.clear()

    def bands(self, i) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(row0, band)`` of level ``i`` (must be consumed in level order)."""
        src = self.srcs.pop(i)  # level 0: the input; others: the buffer filled by the pass above
        h, w = self.shapes[i]
        nxt = self._buffer(i + 1, self.shapes[i + 1]) if i + 1 < len(self.shapes) else None
        if nxt is not None:
            self.srcs[i + 1] = nxt  # filled during this pass, read by the next (tifffile may not
            # exhaust this generator, so nothing may depend on code after the last yield)
        band = _band_rows(src, self.tile, w) if i == 0 else self.tile
        for r0 in range(0, h, band):
            r1 = min(h, r0 + band)
            blk = _compute(src[r0:r1, :w])
            if nxt is not None:
                d = _ds2_block(blk)
                nh = min(d.shape[0], nxt.shape[0] - r0 // 2)
                if nh > 0:
                    nxt[r0 // 2:r0 // 2 + nh] = d[:nh, :nxt.shape[1]]
            for k in range(0, r1 - r0, self.tile):
                yield r0 + k, blk[k:k + self.tile]
                self.done += 1
                if self.progress is not None:
                    self.progress(self.done, self.total)


def _tiles_of(bands: Iterator[tuple[int, np.ndarray]], tile: int, width: int) -> Iterator[np.ndarray]:
    for _, b in bands:
        for c0 in range(0, width, tile):
            t = b[:, c0:c0 + tile]
            if t.shape[0] != tile or t.shape[1] != tile:
                pad = np.full((tile, tile, 3), 255, np.uint8)
                pad[:t.shape[0], :t.shape[1]] = t
                t = pad
            yield np.ascontiguousarray(t)


@dataclass(frozen=True)
class _About:
    """What a written file says about its image: pixel size, description, attribution, name."""

    mpp: Optional[float]
    description: Optional[str]
    attribution: Optional[str]
    name: Optional[str]


def _write_ome_tiff(tmp, pyr: _Pyramid, shapes, tile, compression, about: _About, quality, maxworkers):
    import tifffile

    mpp, description, attribution, name = about.mpp, about.description, about.attribution, about.name

    comp = TIFF_COMPRESSIONS[compression]
    kw = {}
    if comp in ("jpeg", "webp", "jpegxl", "jpeg2000"):
        kw["compressionargs"] = {"level": int(quality)}
    meta = {"axes": "YXS", "Name": name or "leukcore slide"}
    if mpp:
        meta.update(PhysicalSizeX=float(mpp), PhysicalSizeXUnit="µm",
                    PhysicalSizeY=float(mpp), PhysicalSizeYUnit="µm")
        kw.update(resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    desc = " ".join(s for s in (description, attribution) if s)
    if desc:
        meta["Description"] = desc
    extratags = []
    if attribution:
        extratags.append((33432, "s", 0, str(attribution), True))  # Copyright
    with tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tw:
        for i, (h, w) in enumerate(shapes):
            opts = dict(shape=(h, w, 3), dtype=np.uint8, tile=(tile, tile), photometric="rgb",
                        compression=comp, maxworkers=maxworkers, software=f"leukcore {__version__}")
            if i == 0:
                tw.write(_tiles_of(pyr.bands(0), tile, w), subifds=len(shapes) - 1, metadata=meta,
                         extratags=extratags, **kw, **opts)
            else:
                lkw = {}
                if mpp:
                    m = mpp * shapes[0][1] / w
                    lkw = dict(resolution=(1e4 / m, 1e4 / m), resolutionunit="CENTIMETER")
                if "compressionargs" in kw:
                    lkw["compressionargs"] = kw["compressionargs"]
                tw.write(_tiles_of(pyr.bands(i), tile, w), subfiletype=1, metadata=None, **lkw, **opts)


def _zarr_codecs(compression, zarr_format):
    c = (compression or "none").lower()
    if c not in ZARR_COMPRESSIONS:
        raise ValueError(f"compression {compression!r} is not available for OME-Zarr "
                         f"(use one of {sorted(x for x in ZARR_COMPRESSIONS if x)})")
    if zarr_format == 3:
        from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec
        if c in ("zlib", "deflate"):
            return {"compressors": [GzipCodec(level=5)]}
        if c == "zstd":
            return {"compressors": [ZstdCodec(level=3)]}
        if c == "blosc":
            return {"compressors": [BloscCodec()]}
        return {"compressors": None}
    import numcodecs
    if c in ("zlib", "deflate"):
        return {"compressors": [numcodecs.Zlib(level=5)]}
    if c == "zstd":
        return {"compressors": [numcodecs.Zstd(level=3)]}
    if c == "blosc":
        return {"compressors": [numcodecs.Blosc()]}
    return {"compressors": None}


def _write_ome_zarr(tmp, pyr: _Pyramid, shapes, tile, compression, about: _About, ngff_version):
    import zarr

    mpp, description, attribution, name = about.mpp, about.description, about.attribution, about.name

    zarr_format = 3 if ngff_version == "0.5" else 2
    codecs = _zarr_codecs(compression, zarr_format)
    root = zarr.open_group(str(tmp), mode="w", zarr_format=zarr_format)
    datasets = []
    unit_scale = float(mpp) if mpp else 1.0
    for i, (h, w) in enumerate(shapes):
        arr = root.create_array(str(i), shape=(3, h, w), chunks=(3, tile, tile), dtype="uint8",
                                fill_value=255, dimension_names=("c", "y", "x") if zarr_format == 3 else None,
                                config={"write_empty_chunks": True},  # every chunk stored: absent = missing
                                **codecs)
        for r0, b in pyr.bands(i):
            arr[:, r0:r0 + b.shape[0], :] = np.moveaxis(b, 2, 0)
        f = fy = float(2 ** i)  # nominal factor (levels halve with floor)
        datasets.append({"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, unit_scale * fy, unit_scale * f]}]})
    axes = [{"name": "c", "type": "channel"},
            {"name": "y", "type": "space", **({"unit": "micrometer"} if mpp else {})},
            {"name": "x", "type": "space", **({"unit": "micrometer"} if mpp else {})}]
    ms = {"axes": axes, "datasets": datasets, "name": name or "leukcore slide", "type": "mean (2x2)"}
    omero = {"channels": [{"label": c, "color": col, "window": {"start": 0, "end": 255, "min": 0, "max": 255},
                           "active": True} for c, col in (("R", "FF0000"), ("G", "00FF00"), ("B", "0000FF"))],
             "rdefs": {"model": "color"}}
    leuk = {"writer": f"leukcore {__version__}"}
    if description:
        leuk["description"] = description
    if attribution:
        leuk["attribution"] = attribution
    if zarr_format == 3:
        root.attrs["ome"] = {"version": "0.5", "multiscales": [ms], "omero": omero}
    else:
        ms["version"] = "0.4"
        root.attrs["multiscales"] = [ms]
        root.attrs["omero"] = omero
    root.attrs["leukcore"] = leuk


def write_slide(path, image, mpp: Optional[float] = None, tile: int = 512, compression: Optional[str] = "zlib",
                format: Optional[str] = None, *, ngff_version: str = "0.4", min_level_size: Optional[int] = None,
                description: Optional[str] = None, attribution: Optional[str] = None, name: Optional[str] = None,
                quality: int = 90, progress: Optional[Callable[[int, int], None]] = None,
                maxworkers: Optional[int] = None) -> str:
    """Write an RGB image as a pyramidal OME-TIFF or an OME-Zarr, chunk by chunk and atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Output; ``.ome.tif`` / ``.ome.tiff`` / ``.tif`` -> pyramidal OME-TIFF (BigTIFF, levels in
        SubIFDs), ``.ome.zarr`` / ``.zarr`` -> OME-Zarr (overridden by ``format``).
    image : ndarray, dask array or Slide
        ``(Y, X)`` or ``(Y, X, C)`` with C in 1..4 (converted by the rules of
        :mod:`leukcore.io.convert`); a dask array is computed band by band, never whole.
        A :class:`Slide`'s level 0 (and its ``mpp`` unless given) is used.
    mpp : float, optional
        Level-0 pixel size in microns, stored as OME ``PhysicalSizeX/Y`` (+ TIFF resolution
        tags) or NGFF ``scale`` with unit ``micrometer``.
    tile : int
        Tile (TIFF) or chunk (zarr) edge, a multiple of 16.
    compression : str
        TIFF: ``"zlib"``, ``"jpeg"`` (``quality``), ``"zstd"``, ``"lzw"``, ``"webp"``, ``"none"``;
        zarr: ``"zlib"``, ``"zstd"``, ``"blosc"``, ``"none"``.
    format : {"ome-tiff", "ome-zarr"}, optional
        Overrides the suffix.
    ngff_version : {"0.4", "0.5"}
        OME-Zarr flavour: 0.4 = zarr format 2, 0.5 = zarr format 3.
    min_level_size : int, optional
        Stop the pyramid when the longer side is <= this (default ``tile``).
    description, attribution : str, optional
        Stored in the OME ``Description`` (both) and the TIFF ``Copyright`` tag (attribution), or
        in the zarr attributes under ``leukcore``.
    progress : callable, optional
        ``progress(done_tile_rows, total_tile_rows)``.

    Returns
    -------
    str
        The output path.
    """
    p = os.fspath(path)
    fmt = _infer_format(p, format)
    tile = _checked_tile(p, fmt, tile, mpp, compression, ngff_version)
    try:
        level0, slide_mpp = _as_rgb_dask(image)
    except ValueError as e:
        raise ValueError(f"{p}: {e}") from None
    if mpp is None:
        mpp = slide_mpp
    shapes = pyramid_shapes(level0.shape[:2], min_level_size or tile)
    parent = os.path.dirname(os.path.abspath(p)) or "."
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(p.rstrip("/"))
    tmp = os.path.join(parent, f".{base}.tmp-{os.getpid()}")
    workdir = tempfile.mkdtemp(prefix=f".{base}.levels-", dir=parent)
    pyr = None
    try:
        pyr = _Pyramid(level0, shapes, tile, workdir, progress)
        about = _About(mpp, description, attribution, name)
        if fmt == "ome-tiff":
            _write_ome_tiff(tmp, pyr, shapes, tile, compression, about, quality, maxworkers)
        else:
            _write_ome_zarr(tmp, pyr, shapes, tile, compression, about, ngff_version)
        if os.path.isdir(p) and fmt == "ome-zarr":
            shutil.rmtree(p)
        os.replace(tmp, p)
    except BaseException:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        if pyr is not None:
            pyr.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return p

def _checked_tile(p: str, fmt: str, tile, mpp, compression, ngff_version: str) -> int:
    """``tile`` as an int once every argument of :func:`write_slide` is checked (ValueError naming ``p``)."""
    tile = int(tile)
    if tile < 16 or tile % 16:
        raise ValueError(f"{p}: tile must be a positive multiple of 16, got {tile}")
    if mpp is not None and not (math.isfinite(float(mpp)) and float(mpp) > 0):
        raise ValueError(f"{p}: mpp must be a positive number, got {mpp!r}")
    if fmt == "ome-tiff" and compression not in TIFF_COMPRESSIONS:
        raise ValueError(f"{p}: unknown TIFF compression {compression!r} "
                         f"(use one of {sorted(k for k in TIFF_COMPRESSIONS if k)})")
    if ngff_version not in ("0.4", "0.5"):
        raise ValueError(f"{p}: ngff_version must be '0.4' or '0.5', got {ngff_version!r}")
    return tile

