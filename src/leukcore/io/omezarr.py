"""OME-Zarr (OME-NGFF) reader: v0.4 (zarr format 2) and v0.5 (zarr format 3) multiscale images.

The ``multiscales`` metadata gives the level paths, the axes (``c/y/x``,
``y/x/c``, with optional length-1 ``t`` / ``z``) and the per-level ``scale``
transforms, from which the downsamples and the level-0 pixel size are taken
(the ``x`` axis unit must be a length unit, otherwise ``mpp`` is ``None``).
A bare zarr array (no OME metadata) is read as a single level whose layout is
guessed from its shape (``Y X``, ``Y X C`` with C <= 4, or ``C Y X``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .convert import check_layout, value_range_rule
from .errors import (
    CorruptSlideError,
    EmptySlideError,
    SlideNotFoundError,
    SlideTooLargeError,
    UnsupportedFormatError,
    UnsupportedLayoutError,
)
from .lazy import LevelReader, Source, as_dask, choose_chunks, file_token, integrity_of_readers, level_downsample
from .mppcheck import plausible_metadata_mpp
from .slide import Slide, downsample2

__all__ = ["open_omezarr", "is_zarr_dir"]


def is_zarr_dir(path) -> bool:
    """True when ``path`` is a folder holding a zarr group or array (format 2 or 3)."""
    p = str(path)
    return os.path.isdir(p) and any(
        os.path.exists(os.path.join(p, f)) for f in ("zarr.json", ".zgroup", ".zarray", ".zattrs")
    )


def _open_node(path, sub: Optional[str] = None):
    import zarr

    node = zarr.open(str(path), mode="r")
    return node[sub] if sub else node


class _Getter:
    def __init__(self, key: Optional[str]):
        self.key = key

    def __call__(self, node):
        return node if self.key is None else node[self.key]


def _multiscales(attrs) -> Optional[dict]:
    a = dict(attrs)
    if "ome" in a and isinstance(a["ome"], dict) and "multiscales" in a["ome"]:
        ms = a["ome"]["multiscales"]
        version = a["ome"].get("version", "0.5")
    elif "multiscales" in a:
        ms = a["multiscales"]
        version = (ms[0].get("version") if ms and isinstance(ms[0], dict) else None) or "0.4"
    else:
        return None
    if not ms or not isinstance(ms, list):
        return None
    m = dict(ms[0])
    m["_version"] = version
    return m


def _scale_of(transforms) -> Optional[list]:
    for t in transforms or []:
        if t.get("type") == "scale":
            return list(t.get("scale", []))
    return None


def _axes_letters(path, axes_meta, shape) -> str:
    letters = []
    for ax, n in zip(axes_meta, shape, strict=False):
        name = (ax.get("name") if isinstance(ax, dict) else str(ax)).lower()
        typ = (ax.get("type") if isinstance(ax, dict) else None) or ""
        if name == "y":
            letters.append("Y")
        elif name == "x":
            letters.append("X")
        elif name in ("c", "s") or typ == "channel":
            letters.append("C")
        elif n == 1:
            letters.append("1")
        else:
            raise UnsupportedLayoutError(
                path,
                f"unsupported sample layout: axis '{name}' has length {n} "
                "(only single 2-D grey/RGB(A) images are supported)",
            )
    if "Y" not in letters or "X" not in letters:
        raise UnsupportedLayoutError(path, f"unsupported sample layout: axes {axes_meta} have no y and x")
    return "".join(letters)


def _guess_axes(path, shape) -> str:
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3 and shape[2] <= 4:
        return "YXC"
    if len(shape) == 3 and shape[0] <= 4:
        return "CYX"
    raise UnsupportedLayoutError(
        path, f"unsupported sample layout: array of shape {tuple(shape)} without OME-Zarr axes metadata"
    )


def _missing_chunks(root: str, subpath: Optional[str], key: Optional[str], arr, axes: str) -> tuple:
    """``(tile (ty, tx), {(row, col): reason})``: stored chunks (shards) of a level whose file is absent.

    Lists the array's directory once (no pixel is read).  A chunk whose every channel chunk is present
    counts as present.
    """
    d = os.path.join(root, *(p for p in (subpath, key) if p))
    if not os.path.isdir(d):
        return None, {}
    md = arr.metadata
    try:
        grid = tuple(int(v) for v in (md.chunk_grid.chunk_shape if hasattr(md, "chunk_grid") else md.chunks))
        encode = md.encode_chunk_key
    except Exception:  # pragma: no cover - unusual chunk grid: no check
        return None, {}
    present = set()
    for dirpath, _, files in os.walk(d):
        rel = os.path.relpath(dirpath, d)
        for f in files:
            present.add(f if rel == "." else f"{rel.replace(os.sep, '/')}/{f}")
    yi, xi = axes.index("Y"), axes.index("X")
    counts = [-(-int(n) // g) for n, g in zip(arr.shape, grid, strict=False)]
    missing: dict = {}
    for idx in np.ndindex(*counts):
        k = encode(tuple(int(v) for v in idx))
        if k not in present:
            missing.setdefault((idx[yi], idx[xi]), f"chunk file '{k}' is missing (would read as the fill value)")
    return (grid[yi], grid[xi]), missing


def _check_scales(path, entries, scales) -> None:
    """Each level's ``scale`` must match its array shape relative to level 0 (1 px + 1 % tolerance)."""
    key0, arr0, axes0 = entries[0]
    s0 = scales[0] if scales else None
    if not s0:
        return
    for (key, arr, axes), sc in zip(entries[1:], scales[1:], strict=False):
        if not sc or len(sc) != len(s0) or len(sc) != arr.ndim:
            continue
        for ax in ("Y", "X"):
            j = axes.index(ax)
            j0 = axes0.index(ax)
            try:
                ds = float(sc[j]) / float(s0[j0])
            except (TypeError, ValueError, ZeroDivisionError):
                raise CorruptSlideError(path, f"multiscales scale {sc} of dataset '{key}' is not a number") from None
            if not (ds > 0 and np.isfinite(ds)):
                raise CorruptSlideError(path, f"multiscales scale {sc} of dataset '{key}' is not positive")
            expected = arr0.shape[j0] / ds
            if abs(arr.shape[j] - expected) > 1 + 0.01 * expected:
                raise CorruptSlideError(
                    path,
                    f"multiscales metadata inconsistent with the arrays: dataset '{key}' has scale "
                    f"{sc} (downsample {ds:g} of dataset '{key0}') but its {ax.lower()} size is {arr.shape[j]}, "
                    f"not ~{expected:.0f}",
                )


def open_omezarr(path, *, max_pixels: float, max_decode_pixels: float) -> Slide:
    """Open an OME-Zarr image (directory) as a lazy :class:`Slide`."""
    from .errors import SlideError

    try:
        return _open_omezarr(str(path), max_pixels=max_pixels, max_decode_pixels=max_decode_pixels)
    except (SlideError, MemoryError):
        raise
    except Exception as e:  # malformed metadata of any kind
        raise CorruptSlideError(path, f"unreadable OME-Zarr metadata: {type(e).__name__}: {e}") from e


def _open_omezarr(path, *, max_pixels: float, max_decode_pixels: float) -> Slide:
    img = _zarr_image(path)
    key0, arr0, axes0 = img.entries[0]
    H, W = arr0.shape[axes0.index("Y")], arr0.shape[axes0.index("X")]
    if H == 0 or W == 0:
        raise EmptySlideError(path, f"zero-sized image (shape {tuple(arr0.shape)})")
    nchan = arr0.shape[axes0.index("C")] if "C" in axes0 else 1
    problem = check_layout(nchan, arr0.dtype)
    if problem:
        raise UnsupportedLayoutError(path, problem)
    if H * W > max_pixels:
        raise SlideTooLargeError(
            path,
            f"declared size {W} x {H} = {H * W:.3g} pixels exceeds the limit "
            f"{max_pixels:.3g} (max_pixels / LEUK_MAX_PIXELS)",
        )
    _check_scales(path, img.entries, img.scales)
    warns: list = []
    source = Source(_open_node, (path, img.subpath), None, obj=img.node)
    token = file_token(
        os.path.join(path, "zarr.json")
        if os.path.exists(os.path.join(path, "zarr.json"))
        else os.path.join(path, ".zattrs")
    )
    token = f"{token}-{file_token(path)}"
    levels, downs, native_chunks, readers = _zarr_levels(path, img, source, token, (H, W), max_decode_pixels)
    if len(levels) == 1:
        while max(levels[-1].shape[:2]) > 2048 and min(levels[-1].shape[:2]) >= 2:
            levels.append(downsample2(levels[-1]))
            downs.append(downs[-1] * 2)
    mpp, origin = _zarr_mpp(img, axes0, warns)
    mpp, origin = plausible_metadata_mpp(mpp, origin, warns, path)
    missing = integrity_of_readers(readers, warns)
    if arr0.dtype != np.uint8:
        scale_max, w = value_range_rule(arr0.dtype, readers[-1].sample_max())
        if scale_max is not None:
            for r in readers:
                r.convert = {**r.convert, "scale_max": scale_max}
            warns.append(w)
    zf = getattr(getattr(arr0, "metadata", None), "zarr_format", None)
    meta = {
        "ngff_version": img.version,
        "zarr_format": zf,
        "axes": axes0,
        "dtype": str(arr0.dtype),
        "mpp_origin": origin,
        "computed_levels": len(img.entries) == 1 and len(levels) > 1,
        "native_chunks": native_chunks,
    }
    meta.update(_leukcore_attrs(img.node))
    return Slide(
        levels=levels,
        downsamples=downs,
        mpp=mpp,
        mpp_source="metadata" if mpp else None,
        path=path,
        format=img.fmt,
        vendor=None,
        metadata=meta,
        warnings=warns,
        missing=missing,
        _closer=source.close,
        _readers=readers + [None] * (len(levels) - len(readers)),
    )


@dataclass
class _ZarrImage:
    """The image of a zarr store: its node, its arrays (one per level) with their axes, scales, unit, version."""

    node: object
    subpath: Optional[str]
    entries: list  # (key, array, axes)
    scales: list
    unit: Optional[str]
    version: Optional[str]
    fmt: str


def _zarr_image(path) -> _ZarrImage:
    """Open the store and find its image: a bare array, OME-Zarr multiscales, or bioformats2raw's image 0."""
    import zarr

    try:
        node = zarr.open(path, mode="r")
    except FileNotFoundError as e:
        raise SlideNotFoundError(path, "directory is not a zarr store") from e
    except Exception as e:
        raise CorruptSlideError(path, f"unreadable zarr metadata: {type(e).__name__}: {e}") from e
    if isinstance(node, zarr.Array):
        return _ZarrImage(node, None, [(None, node, _guess_axes(path, node.shape))], [], None, None, "zarr")
    subpath = None
    ms = _multiscales(node.attrs)
    attrs0 = dict(node.attrs)
    layout = attrs0.get("bioformats2raw.layout") or (attrs0.get("ome") or {}).get("bioformats2raw.layout")
    if ms is None and layout is not None:
        # bioformats2raw layout: the first image is the group "0"
        try:
            sub = node["0"]
        except KeyError:
            sub = None
        if sub is not None and not isinstance(sub, zarr.Array):
            node, subpath = sub, "0"
            ms = _multiscales(node.attrs)
    if ms is None:
        if "plate" in dict(node.attrs) or "ome" in dict(node.attrs) and "plate" in node.attrs["ome"]:
            raise UnsupportedFormatError(path, "OME-Zarr plates (HCS) are not supported; open one image")
        raise UnsupportedFormatError(path, "zarr group without OME-Zarr 'multiscales' metadata")
    entries, scales = _multiscale_arrays(path, node, ms)
    unit = None
    for ax in ms.get("axes") or []:
        if isinstance(ax, dict) and str(ax.get("name", "")).lower() == "x":
            unit = ax.get("unit")
    return _ZarrImage(node, subpath, entries, scales, unit, ms["_version"], "ome-zarr")


def _multiscale_arrays(path, node, ms: dict) -> tuple[list, list]:
    """``(entries, scales)`` of the multiscales datasets: (key, array, axes) and each level's scale."""
    import zarr

    entries, scales = [], []
    axes_meta = ms.get("axes") or []
    global_scale = _scale_of(ms.get("coordinateTransformations"))
    for ds in ms.get("datasets", []):
        key = ds.get("path")
        try:
            arr = node[key]
        except KeyError as e:
            raise CorruptSlideError(path, f"multiscales dataset '{key}' is missing") from e
        if not isinstance(arr, zarr.Array):
            raise CorruptSlideError(path, f"multiscales dataset '{key}' is not an array")
        axes = (
            _axes_letters(path, axes_meta, arr.shape)
            if axes_meta and len(axes_meta) == arr.ndim
            else _guess_axes(path, arr.shape)
        )
        sc = _scale_of(ds.get("coordinateTransformations"))
        if sc is not None and global_scale is not None and len(global_scale) == len(sc):
            sc = [a * b for a, b in zip(sc, global_scale, strict=False)]
        entries.append((key, arr, axes))
        scales.append(sc)
    if not entries:
        raise CorruptSlideError(path, "OME-Zarr multiscales lists no datasets")
    return entries, scales


def _zarr_levels(path, img: _ZarrImage, source, token: str, shape0: tuple, max_decode_pixels: float):
    """``(levels, downsamples, native chunks, readers)`` of the stored levels (lazy dask arrays)."""
    H, W = shape0
    scales = img.scales
    levels, downs, native_chunks, readers = [], [], [], []
    for i, (key, arr, axes) in enumerate(img.entries):
        lh, lw = arr.shape[axes.index("Y")], arr.shape[axes.index("X")]
        if lh == 0 or lw == 0:
            break
        cy, cx = arr.chunks[axes.index("Y")], arr.chunks[axes.index("X")]
        if cy * cx > max_decode_pixels:
            raise SlideTooLargeError(
                path,
                f"level {i} chunk {cy} x {cx} exceeds the decode limit "
                f"{max_decode_pixels:.3g} (LEUK_MAX_DECODE_PIXELS)",
            )
        native_chunks.append([int(cy), int(cx)])
        reader = LevelReader(path, source, _Getter(key), axes, (lh, lw), level=i)
        readers.append(reader)
        levels.append(as_dask(reader, choose_chunks((cy, cx), (lh, lw)), f"leuk-zarr-{token}-{i}"))
        xi = axes.index("X")
        if i and scales and scales[0] and scales[i] and len(scales[i]) > xi and scales[0][xi]:
            downs.append(float(scales[i][xi]) / float(scales[0][xi]))
        else:
            downs.append(level_downsample((H, W), (lh, lw)) if i else 1.0)
        reader.downsample = downs[-1]
        tile, miss = _missing_chunks(path, img.subpath, key, arr, axes)
        if tile:
            reader.tile, reader.missing = tile, miss
        if i == 0 and miss and len(miss) >= -(-lh // tile[0]) * -(-lw // tile[1]):
            raise CorruptSlideError(path, f"no chunk of level 0 holds pixel data ({next(iter(miss.values()))})")
    return levels, downs, native_chunks, readers


def _zarr_mpp(img: _ZarrImage, axes0, warns: list) -> tuple:
    """``(mpp, origin)`` from level 0's scale and the x axis unit (None when either is unknown)."""
    scales, unit = img.scales, img.unit
    mpp, origin = None, None
    if scales and scales[0]:
        from .mppcheck import UNIT_TO_UM, valid_mpp

        xi = axes0.index("X")
        f = UNIT_TO_UM.get(str(unit).strip().lower()) if unit else None
        if f is not None and len(scales[0]) > xi:
            try:
                mpp = valid_mpp(float(scales[0][xi]) * f)
            except (TypeError, ValueError):
                warns.append(f"multiscales scale {scales[0]} is not numeric: pixel size unknown")
                mpp = None
            origin = "ome-zarr:scale" if mpp else None
        elif unit and f is None:
            warns.append(f"axis x unit {unit!r} is not a length unit: pixel size unknown")
    return mpp, origin


def _leukcore_attrs(node) -> dict:
    """``description`` and ``attribution`` that leukcore wrote into the group's attributes (the sample slide)."""
    import zarr

    try:
        attrs = dict(node.attrs) if not isinstance(node, zarr.Array) else {}
        leuk = attrs.get("leukcore") or (attrs.get("ome", {}) or {}).get("leukcore")
        if isinstance(leuk, dict):
            return {k: leuk[k] for k in ("description", "attribution") if k in leuk}
    except Exception:  # pragma: no cover
        pass
    return {}
