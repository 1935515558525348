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
from typing import Callable, Optional

import numpy as np

from .._version import __version__
from .pyramid import Pyramid, pyramid_shapes, tiles_of

__all__ = ["write_slide", "WriteOptions", "pyramid_shapes", "TIFF_COMPRESSIONS", "ZARR_COMPRESSIONS"]

TIFF_COMPRESSIONS = {
    None: None,
    "none": None,
    "zlib": "zlib",
    "deflate": "zlib",
    "jpeg": "jpeg",
    "zstd": "zstd",
    "lzw": "lzw",
    "webp": "webp",
    "jpeg2000": "jpeg2000",
    "jpegxl": "jpegxl",
}
ZARR_COMPRESSIONS = {None, "none", "zlib", "deflate", "zstd", "blosc"}


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
    raise ValueError(
        f"{path}: cannot infer the output format from the suffix "
        "(use .ome.tif / .ome.tiff or .ome.zarr / .zarr, or pass format=)"
    )


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


@dataclass(frozen=True)
class WriteOptions:
    """How :func:`write_slide` writes, beyond where, what, the pixel size, tile edge, compression and format.

    Attributes
    ----------
    quality : int
        JPEG / WebP quality (TIFF compressions ``"jpeg"``, ``"webp"``, ``"jpegxl"``, ``"jpeg2000"``).
    description, attribution : str, optional
        Stored in the OME ``Description`` (both) and the TIFF ``Copyright`` tag (attribution), or
        in the zarr attributes under ``leukcore``.
    name : str, optional
        The image's name (OME ``Name`` / NGFF multiscale ``name``; default ``"leukcore slide"``).
    min_level_size : int, optional
        Stop the pyramid when the longer side is <= this (default: the tile edge).
    progress : callable, optional
        ``progress(done_tile_rows, total_tile_rows)``.
    maxworkers : int, optional
        Threads compressing TIFF tiles (tifffile's ``maxworkers``; default: tifffile's choice).
    """

    quality: int = 90
    description: Optional[str] = None
    attribution: Optional[str] = None
    name: Optional[str] = None
    min_level_size: Optional[int] = None
    progress: Optional[Callable[[int, int], None]] = None
    maxworkers: Optional[int] = None


def _write_ome_tiff(tmp, pyr: Pyramid, shapes, tile, compression, mpp: Optional[float], o: WriteOptions):
    import tifffile

    description, attribution, name, quality = o.description, o.attribution, o.name, o.quality

    comp = TIFF_COMPRESSIONS[compression]
    kw = {}
    if comp in ("jpeg", "webp", "jpegxl", "jpeg2000"):
        kw["compressionargs"] = {"level": int(quality)}
    meta = {"axes": "YXS", "Name": name or "leukcore slide"}
    if mpp:
        meta.update(PhysicalSizeX=float(mpp), PhysicalSizeXUnit="µm", PhysicalSizeY=float(mpp), PhysicalSizeYUnit="µm")
        kw.update(resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    desc = " ".join(s for s in (description, attribution) if s)
    if desc:
        meta["Description"] = desc
    extratags = []
    if attribution:
        extratags.append((33432, "s", 0, str(attribution), True))  # Copyright
    with tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tw:
        for i, (h, w) in enumerate(shapes):
            opts = dict(
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression=comp,
                maxworkers=o.maxworkers,
                software=f"leukcore {__version__}",
            )
            if i == 0:
                tw.write(
                    tiles_of(pyr.bands(0), tile, w),
                    subifds=len(shapes) - 1,
                    metadata=meta,
                    extratags=extratags,
                    **kw,
                    **opts,
                )
            else:
                lkw = {}
                if mpp:
                    m = mpp * shapes[0][1] / w
                    lkw = dict(resolution=(1e4 / m, 1e4 / m), resolutionunit="CENTIMETER")
                if "compressionargs" in kw:
                    lkw["compressionargs"] = kw["compressionargs"]
                tw.write(tiles_of(pyr.bands(i), tile, w), subfiletype=1, metadata=None, **lkw, **opts)


def _zarr_codecs(compression, zarr_format):
    c = (compression or "none").lower()
    if c not in ZARR_COMPRESSIONS:
        raise ValueError(
            f"compression {compression!r} is not available for OME-Zarr "
            f"(use one of {sorted(x for x in ZARR_COMPRESSIONS if x)})"
        )
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


def _write_ome_zarr(tmp, pyr: Pyramid, shapes, tile, compression, mpp: Optional[float], o: WriteOptions, ngff_version):
    import zarr

    description, attribution, name = o.description, o.attribution, o.name

    zarr_format = 3 if ngff_version == "0.5" else 2
    codecs = _zarr_codecs(compression, zarr_format)
    root = zarr.open_group(str(tmp), mode="w", zarr_format=zarr_format)
    datasets = []
    unit_scale = float(mpp) if mpp else 1.0
    for i, (h, w) in enumerate(shapes):
        arr = root.create_array(
            str(i),
            shape=(3, h, w),
            chunks=(3, tile, tile),
            dtype="uint8",
            fill_value=255,
            dimension_names=("c", "y", "x") if zarr_format == 3 else None,
            config={"write_empty_chunks": True},  # every chunk stored: absent = missing
            **codecs,
        )
        for r0, b in pyr.bands(i):
            arr[:, r0 : r0 + b.shape[0], :] = np.moveaxis(b, 2, 0)
        f = fy = float(2**i)  # nominal factor (levels halve with floor)
        datasets.append(
            {
                "path": str(i),
                "coordinateTransformations": [{"type": "scale", "scale": [1.0, unit_scale * fy, unit_scale * f]}],
            }
        )
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "y", "type": "space", **({"unit": "micrometer"} if mpp else {})},
        {"name": "x", "type": "space", **({"unit": "micrometer"} if mpp else {})},
    ]
    ms = {"axes": axes, "datasets": datasets, "name": name or "leukcore slide", "type": "mean (2x2)"}
    omero = {
        "channels": [
            {"label": c, "color": col, "window": {"start": 0, "end": 255, "min": 0, "max": 255}, "active": True}
            for c, col in (("R", "FF0000"), ("G", "00FF00"), ("B", "0000FF"))
        ],
        "rdefs": {"model": "color"},
    }
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


def write_slide(
    path,
    image,
    mpp: Optional[float] = None,
    tile: int = 512,
    compression: Optional[str] = "zlib",
    format: Optional[str] = None,
    *,
    ngff_version: str = "0.4",
    options: Optional[WriteOptions] = None,
) -> str:
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
        TIFF: ``"zlib"``, ``"jpeg"`` (``options.quality``), ``"zstd"``, ``"lzw"``, ``"webp"``, ``"none"``;
        zarr: ``"zlib"``, ``"zstd"``, ``"blosc"``, ``"none"``.
    format : {"ome-tiff", "ome-zarr"}, optional
        Overrides the suffix.
    ngff_version : {"0.4", "0.5"}
        OME-Zarr flavour: 0.4 = zarr format 2, 0.5 = zarr format 3.
    options : WriteOptions, optional
        JPEG quality, description, attribution, name, the smallest pyramid level, progress, TIFF
        compression threads (:class:`WriteOptions`; default ``WriteOptions()``).

    Returns
    -------
    str
        The output path.
    """
    o = options or WriteOptions()
    p = os.fspath(path)
    fmt = _infer_format(p, format)
    tile = _checked_tile(p, fmt, tile, mpp, compression, ngff_version)
    try:
        level0, slide_mpp = _as_rgb_dask(image)
    except ValueError as e:
        raise ValueError(f"{p}: {e}") from None
    if mpp is None:
        mpp = slide_mpp
    shapes = pyramid_shapes(level0.shape[:2], o.min_level_size or tile)

    def write(tmp, pyr):
        if fmt == "ome-tiff":
            _write_ome_tiff(tmp, pyr, shapes, tile, compression, mpp, o)
        else:
            _write_ome_zarr(tmp, pyr, shapes, tile, compression, mpp, o, ngff_version)

    _staged_write(p, fmt, lambda workdir: Pyramid(level0, shapes, tile, workdir, o.progress), write)
    return p


def _staged_write(p: str, fmt: str, make_pyramid, write) -> None:
    """``write(tmp, pyramid)`` into a temporary path beside ``p``, then renamed onto ``p`` (nothing left on error)."""
    parent = os.path.dirname(os.path.abspath(p)) or "."
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(p.rstrip("/"))
    tmp = os.path.join(parent, f".{base}.tmp-{os.getpid()}")
    workdir = tempfile.mkdtemp(prefix=f".{base}.levels-", dir=parent)
    pyr = None
    try:
        pyr = make_pyramid(workdir)
        write(tmp, pyr)
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


def _checked_tile(p: str, fmt: str, tile, mpp, compression, ngff_version: str) -> int:
    """``tile`` as an int once every argument of :func:`write_slide` is checked (ValueError naming ``p``)."""
    tile = int(tile)
    if tile < 16 or tile % 16:
        raise ValueError(f"{p}: tile must be a positive multiple of 16, got {tile}")
    if mpp is not None and not (math.isfinite(float(mpp)) and float(mpp) > 0):
        raise ValueError(f"{p}: mpp must be a positive number, got {mpp!r}")
    if fmt == "ome-tiff" and compression not in TIFF_COMPRESSIONS:
        raise ValueError(
            f"{p}: unknown TIFF compression {compression!r} (use one of {sorted(k for k in TIFF_COMPRESSIONS if k)})"
        )
    if ngff_version not in ("0.4", "0.5"):
        raise ValueError(f"{p}: ngff_version must be '0.4' or '0.5', got {ngff_version!r}")
    return tile
