"""Pyramidal label image (OME-NGFF 0.4, ``labels.ome.zarr``) aligned with the slide.

Pixel value = ``cell_id`` of the cell covering it (0 = background), level 0 has
the slide's level-0 shape, and each further level halves it (nearest-neighbour,
so every value is still a real cell id).  The image is written **chunk by chunk**:
cells are bucketed by the chunks their bounding boxes touch, each chunk's
polygons are rasterised into a ``chunk x chunk`` buffer and stored; chunks with
no cell are never written (zarr's fill value 0 stands in), so a mostly-empty
60k x 60k slide costs almost nothing and the full image is never in memory.

Layout (zarr format 2, readable by zarr-python, ome-zarr-py / napari-ome-zarr,
Bio-Formats / QuPath)::

    labels.ome.zarr/
        .zgroup, .zattrs   multiscales (axes y, x in micrometer when mpp is known)
                           + image-label (colours and class per label value)
        0/ 1/ 2/ ...       uint32 arrays, chunks (chunk, chunk)

The whole folder is written under a temporary name and renamed into place, so a
failed run never leaves a complete-looking ``labels.ome.zarr``.
"""

from __future__ import annotations

import math
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..progress import Cancelled, emit, is_cancelled
from ..results import CellTable, atomic_path, class_color

__all__ = ["write_labels_zarr", "open_labels_zarr", "rasterize_chunk", "label_pyramid_shapes", "MAX_LABEL_PROPERTIES"]

#: above this many cells the per-label colours/properties are left out of .zattrs (the tables hold them)
MAX_LABEL_PROPERTIES = 200_000


def label_pyramid_shapes(shape: tuple[int, int], min_size: int = 512) -> list[tuple[int, int]]:
    """Level shapes: level 0 = ``shape``, halved (ceil) until the longer side <= ``min_size``."""
    shapes = [(int(shape[0]), int(shape[1]))]
    while max(shapes[-1]) > min_size and min(shapes[-1]) > 1:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def rasterize_chunk(
    polygons: list, ids, y0: int, x0: int, h: int, w: int, *, downsample: float = 1, dtype=np.uint32
) -> np.ndarray:
    """Fill an ``(h, w)`` block with ``ids`` inside their (y, x) level-0 ``polygons`` (later ids on top).

    The one label rasteriser (``labels.ome.zarr`` and the napari labels layer).  The block's origin
    ``(y0, x0)`` and size are in the pixels of a level ``downsample`` times smaller than level 0 (1: level 0).
    A pixel belongs to a polygon when its centre (integer coordinate) is inside; polygons with fewer than
    three vertices are skipped.
    """
    from skimage.draw import polygon as draw_polygon

    out = np.zeros((h, w), dtype=dtype)
    for poly, cid in zip(polygons, ids, strict=False):
        p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if len(p) < 3:
            continue
        if downsample != 1:
            p = p / downsample
        rr, cc = draw_polygon(p[:, 0] - y0, p[:, 1] - x0, shape=(h, w))
        out[rr, cc] = cid
    return out


def _bucket(table: CellTable, chunk: int, shape) -> dict[tuple[int, int], list[int]]:
    df = table.df
    H, W = shape
    nby, nbx = math.ceil(H / chunk), math.ceil(W / chunk)
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    if not len(df):
        return buckets
    by0 = np.clip(df["bbox_y0"].to_numpy(np.int64) // chunk, 0, nby - 1)
    bx0 = np.clip(df["bbox_x0"].to_numpy(np.int64) // chunk, 0, nbx - 1)
    by1 = np.clip((df["bbox_y1"].to_numpy(np.int64) - 1) // chunk, 0, nby - 1)
    bx1 = np.clip((df["bbox_x1"].to_numpy(np.int64) - 1) // chunk, 0, nbx - 1)
    for i in range(len(df)):
        for cy in range(int(by0[i]), int(by1[i]) + 1):
            for cx in range(int(bx0[i]), int(bx1[i]) + 1):
                buckets[(cy, cx)].append(i)
    return buckets


def _ngff_attrs(table: CellTable, shapes, mpp: Optional[float], name: str) -> dict[str, Any]:
    unit = mpp is not None and mpp > 0
    base = float(mpp) if unit else 1.0
    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    if unit:
        for a in axes:
            a["unit"] = "micrometer"
    datasets = [
        {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [base * 2**i, base * 2**i]}]}
        for i in range(len(shapes))
    ]
    attrs: dict[str, Any] = {
        "multiscales": [
            {
                "version": "0.4",
                "name": name,
                "axes": axes,
                "datasets": datasets,
                "type": "nearest",
                "metadata": {
                    "description": "cell_id label image written by leukcore",
                    "method": "leukcore.export.labels (nearest-neighbour 2x)",
                },
            }
        ],
        "image-label": {"version": "0.4"},
    }
    n = len(table)
    if table.is_classified and n <= MAX_LABEL_PROPERTIES:
        labels = table.df["label"].astype(str).tolist()
        ids = table.df["cell_id"].astype(np.int64).tolist()
        attrs["image-label"]["colors"] = [
            {"label-value": int(i), "rgba": [*class_color(l), 255]} for i, l in zip(ids, labels, strict=False)
        ]
        attrs["image-label"]["properties"] = [
            {"label-value": int(i), "class": l} for i, l in zip(ids, labels, strict=False)
        ]
    attrs["leukcore"] = {"cells": n, "classes": table.classes, "level0_shape": list(shapes[0])}
    return attrs


#: the label image's name in its NGFF metadata
LABELS_NAME = "cells"


def write_labels_zarr(
    table: CellTable,
    shape: tuple[int, int],
    path: str | os.PathLike,
    *,
    mpp: Optional[float] = None,
    chunk: int = 1024,
    min_size: int = 512,
    progress=None,
    cancel=None,
) -> Path:
    """Write the cell-id label pyramid of ``table`` to ``path`` (an OME-NGFF 0.4 zarr), chunk by chunk.

    Parameters
    ----------
    table : CellTable
        Cells with level-0 polygons and bounding boxes; values written are ``cell_id``.
    shape : (int, int)
        Level-0 (height, width) of the slide the labels align with.
    path : path-like
        Output folder, conventionally ``labels.ome.zarr``; replaced if it exists.
    mpp : float, optional
        Level-0 microns per pixel (scale metadata in micrometer); pixels otherwise.
    chunk : int
        Chunk side (also the rasterisation block); memory use is O(chunk^2).
    progress, cancel
        :mod:`leukcore.progress` callback (stage ``"labels"``) and cancel token;
        a cancel raises :class:`~leukcore.progress.Cancelled` and leaves no output.

    Returns
    -------
    pathlib.Path
    """
    import numcodecs
    import zarr

    path = Path(path)
    H, W = int(shape[0]), int(shape[1])
    if H <= 0 or W <= 0:
        raise ValueError(f"{path}: cannot write a label image of shape {shape}")
    if len(table) and int(table.df["cell_id"].max()) >= 2**32:
        raise ValueError(f"{path}: cell ids exceed uint32")
    shapes = label_pyramid_shapes((H, W), min_size)
    comp = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE)
    polys = table.df["polygon"].tolist() if len(table) else []
    ids = table.df["cell_id"].astype(np.int64).tolist() if len(table) else []
    buckets = _bucket(table, chunk, (H, W))
    total = len(buckets) * 2 + 1

    steps = _LabelSteps(chunk, (H, W), progress, cancel, total)
    with atomic_path(path) as tmp:
        if tmp.exists():
            shutil.rmtree(tmp)
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        arrays = [
            root.create_array(
                str(i),
                shape=s,
                chunks=(min(chunk, s[0]), min(chunk, s[1])),
                dtype="uint32",
                fill_value=0,
                compressors=comp,
                chunk_key_encoding={"name": "v2", "separator": "/"},
            )
            for i, s in enumerate(shapes)
        ]
        written = steps.level0(arrays[0], buckets, polys, ids)
        # further levels: nearest 2x from the level above, only where something was written
        for lvl in range(1, len(shapes)):
            written, n_targets = steps.downsample(arrays[lvl - 1], arrays[lvl], shapes[lvl], written)
            steps.done += max(1, n_targets) if buckets else 0
            emit(progress, "labels", min(steps.done, total - 1), total)
        root.attrs.update(_ngff_attrs(table, shapes, mpp, LABELS_NAME))
        if path.exists():  # atomic_path renames; a directory target must be out of the way first
            trash = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, trash)
            shutil.rmtree(trash, ignore_errors=True)
    emit(progress, "labels", total, total)
    return path


class _LabelSteps:
    """The chunk loops of :func:`write_labels_zarr`: rasterise level 0, then each coarser level from the last."""

    def __init__(self, chunk: int, shape: tuple[int, int], progress, cancel, total: int):
        self.chunk, (self.H, self.W), self.progress, self.cancel, self.total = chunk, shape, progress, cancel, total
        self.done = 0

    def level0(self, arr, buckets: dict, polys: list, ids: list) -> set:
        """Rasterise each chunk of level 0 with the cells that touch it; the chunks written."""
        chunk, H, W = self.chunk, self.H, self.W
        written = set()
        for cy, cx in sorted(buckets):
            if is_cancelled(self.cancel):
                raise Cancelled("label export cancelled")
            y0, x0 = cy * chunk, cx * chunk
            h, w = min(chunk, H - y0), min(chunk, W - x0)
            members = buckets[(cy, cx)]
            block = rasterize_chunk([polys[i] for i in members], [ids[i] for i in members], y0, x0, h, w)
            if block.any():
                arr[y0 : y0 + h, x0 : x0 + w] = block
                written.add((cy, cx))
            self.done += 1
            emit(self.progress, "labels", self.done, self.total)
        return written

    def downsample(self, src, dst, shape: tuple[int, int], written: set) -> tuple[set, int]:
        """Nearest 2x of ``src`` into ``dst`` where ``src`` was written; (chunks written, chunks visited)."""
        h_l, w_l = shape
        c0, c1 = dst.chunks
        # dst chunks are (chunk, chunk) or, for levels smaller than a chunk, one chunk
        targets = sorted({(cy // 2, cx // 2) for cy, cx in written})
        new_written = set()
        for ty, tx in targets:
            if is_cancelled(self.cancel):
                raise Cancelled("label export cancelled")
            y0, x0 = ty * c0, tx * c1
            h, w = min(c0, h_l - y0), min(c1, w_l - x0)
            if h <= 0 or w <= 0:
                continue
            block = np.asarray(src[2 * y0 : 2 * (y0 + h) : 2, 2 * x0 : 2 * (x0 + w) : 2])
            block = block[:h, :w]
            if block.any():
                out = np.zeros((h, w), np.uint32)
                out[: block.shape[0], : block.shape[1]] = block
                dst[y0 : y0 + h, x0 : x0 + w] = out
                new_written.add((ty, tx))
        return new_written, len(targets)


def open_labels_zarr(path: str | os.PathLike):
    """Open a ``labels.ome.zarr`` read-only: the zarr group (``group["0"]`` is level 0, pixel = ``cell_id``)."""
    import zarr

    return zarr.open_group(str(path), mode="r")
