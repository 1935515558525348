"""Analysis regions from the viewer: whole slide, current view, drawn shapes (no Qt).

All results are level-0 pixel boxes ``(y0, x0, y1, x1)`` (half-open, clipped to
the slide by :func:`leukcore.regions.clip_region`, outward), the ``region`` argument of
:func:`leukcore.pipeline.analyze_slide`.
World coordinates are divided by the image layer's scale (and its translate
subtracted) to get level-0 pixels.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from leukcore.regions import RegionError, clip_region

__all__ = ["world_to_level0", "view_region", "shapes_region", "cells_in_shapes", "RegionError"]


def world_to_level0(points_world, scale, translate=(0.0, 0.0)) -> np.ndarray:
    """(N, 2) world (y, x) -> level-0 pixel (y, x) of an image layer with ``scale``/``translate``."""
    p = np.asarray(points_world, dtype=np.float64).reshape(-1, 2)
    s = np.asarray(scale, dtype=np.float64)[-2:]
    t = np.asarray(translate, dtype=np.float64)[-2:]
    return (p - t) / s


def view_region(
    center_world: Sequence[float], zoom: float, canvas_hw: Sequence[int], scale, shape, translate=(0.0, 0.0)
) -> tuple[int, int, int, int]:
    """Level-0 box seen by a 2-D camera (``center`` in world units, ``zoom`` screen px per world unit)."""
    if not zoom or zoom <= 0:
        raise RegionError(f"bad camera zoom {zoom!r}")
    c = np.asarray(center_world, dtype=np.float64)[-2:]
    half = np.asarray(canvas_hw, dtype=np.float64)[-2:] / (2.0 * float(zoom))
    corners = world_to_level0(np.stack([c - half, c + half]), scale, translate)
    return clip_region((corners[0, 0], corners[0, 1], corners[1, 0], corners[1, 1]), shape, rounding="outward")


def _shape_vertices(shapes_data, shapes_scale=(1.0, 1.0), shapes_translate=(0.0, 0.0)) -> list[np.ndarray]:
    out = []
    s = np.asarray(shapes_scale, dtype=np.float64)[-2:]
    t = np.asarray(shapes_translate, dtype=np.float64)[-2:]
    for d in shapes_data:
        v = np.asarray(d, dtype=np.float64)[:, -2:]
        out.append(v * s + t)  # shapes-layer data -> world
    return out


def shapes_region(
    shapes_data, image_scale, shape, *, shapes_scale=(1.0, 1.0), shapes_translate=(0.0, 0.0), image_translate=(0.0, 0.0)
) -> tuple[int, int, int, int]:
    """Level-0 bounding box of every shape of a Shapes layer."""
    verts = _shape_vertices(shapes_data, shapes_scale, shapes_translate)
    if not verts:
        raise RegionError("the shapes layer is empty: draw a rectangle or polygon around the region first")
    allv = world_to_level0(np.concatenate(verts), image_scale, image_translate)
    lo, hi = allv.min(axis=0), allv.max(axis=0)
    return clip_region((lo[0], lo[1], hi[0] + 1, hi[1] + 1), shape, rounding="outward")


def cells_in_shapes(
    centroids_l0,
    shapes_data,
    image_scale,
    *,
    shapes_scale=(1.0, 1.0),
    shapes_translate=(0.0, 0.0),
    image_translate=(0.0, 0.0),
    shape_types: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """Boolean mask: which level-0 centroids fall inside any drawn shape (polygon, rectangle, ellipse...)."""
    from matplotlib.path import Path as MplPath

    pts = np.asarray(centroids_l0, dtype=np.float64).reshape(-1, 2)
    inside = np.zeros(len(pts), bool)
    types = list(shape_types) if shape_types is not None else ["polygon"] * len(shapes_data)
    for v, st in zip(_shape_vertices(shapes_data, shapes_scale, shapes_translate), types, strict=False):
        v0 = world_to_level0(v, image_scale, image_translate)
        if st == "ellipse" and len(v0) == 4:
            c = v0.mean(axis=0)
            r = np.abs(v0 - c).max(axis=0)
            r[r == 0] = 1e-9
            inside |= (((pts - c) / r) ** 2).sum(axis=1) <= 1.0
        elif st in ("line", "path") or len(v0) < 3:
            continue
        else:
            inside |= MplPath(v0).contains_points(pts)
    return inside
