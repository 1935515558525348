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
from typing import Optional

from .convert import check_layout
from .errors import (CorruptSlideError, EmptySlideError, SlideNotFoundError, SlideTooLargeError,
                     UnsupportedFormatError, UnsupportedLayoutError)
from .lazy import LevelReader, Source, as_dask, choose_chunks, file_token, level_downsample
from .slide import Slide, downsample2

__all__ = ["open_omezarr", "is_zarr_dir"]


def is_zarr_dir(path) -> bool:
    p = str(path)
    return os.path.isdir(p) and any(os.path.exists(os.path.join(p, f))
                                    for f in ("zarr.json", ".zgroup", ".zarray", ".zattrs"))


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
    for ax, n in zip(axes_meta, shape):
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
                path, f"unsupported sample layout: axis '{name}' has length {n} "
                "(only single 2-D grey/RGB(A) images are supported)")
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
    raise UnsupportedLayoutError(path, f"unsupported sample layout: array of shape {tuple(shape)} "
                                 "without OME-Zarr axes metadata")


def open_omezarr(path, *, max_pixels: float, max_decode_pixels: float) -> Slide:
    """Open an OME-Zarr image (directory) as a lazy :class:`Slide`."""
    import zarr

    path = str(path)
    try:
        node = zarr.open(path, mode="r")
    except FileNotFoundError as e:
        raise SlideNotFoundError(path, "directory is not a zarr store") from e
    except Exception as e:
        raise CorruptSlideError(path, f"unreadable zarr metadata: {type(e).__name__}: {e}") from e
    entries = []  # (key, array, axes)
    subpath = None
    scales, unit, version = [], None, None
    if isinstance(node, zarr.Array):
        entries.append((None, node, _guess_axes(path, node.shape)))
        fmt = "zarr"
    else:
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
        version = ms["_version"]
        fmt = "ome-zarr"
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
            axes = (_axes_letters(path, axes_meta, arr.shape) if axes_meta and len(axes_meta) == arr.ndim
                    else _guess_axes(path, arr.shape))
            sc = _scale_of(ds.get("coordinateTransformations"))
            if sc is not None and global_scale is not None and len(global_scale) == len(sc):
                sc = [a * b for a, b in zip(sc, global_scale)]
            entries.append((key, arr, axes))
            scales.append(sc)
        if not entries:
            raise CorruptSlideError(path, "OME-Zarr multiscales lists no datasets")
        for ax in axes_meta:
            if isinstance(ax, dict) and str(ax.get("name", "")).lower() == "x":
                unit = ax.get("unit")
    key0, arr0, axes0 = entries[0]
    H, W = arr0.shape[axes0.index("Y")], arr0.shape[axes0.index("X")]
    if H == 0 or W == 0:
        raise EmptySlideError(path, f"zero-sized image (shape {tuple(arr0.shape)})")
    nchan = arr0.shape[axes0.index("C")] if "C" in axes0 else 1
    problem = check_layout(nchan, arr0.dtype)
    if problem:
        raise UnsupportedLayoutError(path, problem)
    if H * W > max_pixels:
        raise SlideTooLargeError(path, f"declared size {W} x {H} = {H * W:.3g} pixels exceeds the limit "
                                 f"{max_pixels:.3g} (max_pixels / LEUK_MAX_PIXELS)")
    source = Source(_open_node, (path, subpath), None, obj=node)
    token = file_token(os.path.join(path, "zarr.json") if os.path.exists(os.path.join(path, "zarr.json"))
                       else os.path.join(path, ".zattrs"))
    token = f"{token}-{file_token(path)}"
    levels, downs, native_chunks, readers = [], [], [], []
    for i, (key, arr, axes) in enumerate(entries):
        lh, lw = arr.shape[axes.index("Y")], arr.shape[axes.index("X")]
        if lh == 0 or lw == 0:
            break
        cy, cx = arr.chunks[axes.index("Y")], arr.chunks[axes.index("X")]
        if cy * cx > max_decode_pixels:
            raise SlideTooLargeError(path, f"level {i} chunk {cy} x {cx} exceeds the decode limit "
                                     f"{max_decode_pixels:.3g} (LEUK_MAX_DECODE_PIXELS)")
        native_chunks.append([int(cy), int(cx)])
        reader = LevelReader(path, source, _Getter(key), axes, (lh, lw), level=i)
        readers.append(reader)
        levels.append(as_dask(reader, choose_chunks((cy, cx), (lh, lw)), f"leuk-zarr-{token}-{i}"))
        xi = axes.index("X")
        if i and scales and scales[0] and scales[i] and len(scales[i]) > xi and scales[0][xi]:
            downs.append(float(scales[i][xi]) / float(scales[0][xi]))
        else:
            downs.append(level_downsample((H, W), (lh, lw)) if i else 1.0)
    if len(levels) == 1:
        while max(levels[-1].shape[:2]) > 2048 and min(levels[-1].shape[:2]) >= 2:
            levels.append(downsample2(levels[-1]))
            downs.append(downs[-1] * 2)
    mpp, origin = None, None
    if scales and scales[0]:
        from .tiff import UNIT_TO_UM, _valid_mpp

        xi = axes0.index("X")
        f = UNIT_TO_UM.get(str(unit).strip().lower()) if unit else None
        if f is not None and len(scales[0]) > xi:
            mpp = _valid_mpp(float(scales[0][xi]) * f)
            origin = "ome-zarr:scale" if mpp else None
    zf = getattr(getattr(arr0, "metadata", None), "zarr_format", None)
    meta = {"ngff_version": version, "zarr_format": zf, "axes": axes0, "dtype": str(arr0.dtype),
            "mpp_origin": origin, "computed_levels": len(entries) == 1 and len(levels) > 1, "native_chunks": native_chunks}
    try:
        attrs = dict(node.attrs) if not isinstance(node, zarr.Array) else {}
        leuk = attrs.get("leukcore") or (attrs.get("ome", {}) or {}).get("leukcore")
        if isinstance(leuk, dict):
            meta.update({k: leuk[k] for k in ("description", "attribution") if k in leuk})
    except Exception:  # pragma: no cover
        pass
    return Slide(levels=levels, downsamples=downs, mpp=mpp, mpp_source="metadata" if mpp else None,
                 path=path, format=fmt, vendor=None, metadata=meta, _closer=source.close)
