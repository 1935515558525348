"""Cell crops read from a lazy :class:`~leukcore.io.slide.Slide` (the one crop code path).

For each cell of a :class:`~leukcore.results.CellTable` a square of ``crop_um``
microns centred on its centroid is read with ``slide.read_region`` at the
coarsest pyramid level that still has at least the needed resolution, and
resampled to ``size`` x ``size``.  Only the needed regions are read.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from ..io.slide import local_scheduler
from .geometry import CropSpec

__all__ = ["extract_crops", "crops_from_array", "resize_rgb", "spec_of"]

#: a pyramid level with at most this many pixels is read once and cached during one call
_MATERIALISE_PIXELS = 16_000_000


def spec_of(classifier_or_spec) -> CropSpec:
    """The :class:`CropSpec` of a classifier, a spec, or a card-style dict."""
    if isinstance(classifier_or_spec, CropSpec):
        return classifier_or_spec
    spec = getattr(classifier_or_spec, "spec", None)
    if isinstance(spec, CropSpec):
        return spec
    if isinstance(classifier_or_spec, dict):
        return CropSpec.from_card(classifier_or_spec.get("input", classifier_or_spec))
    raise TypeError(f"expected a Classifier, CropSpec or dict, got {type(classifier_or_spec).__name__}")


def resize_rgb(img: np.ndarray, size: int) -> np.ndarray:
    """Resize an ``(h, w, 3)`` uint8 image to ``(size, size, 3)`` (area filter when shrinking)."""
    from PIL import Image

    if img.shape[0] == size and img.shape[1] == size:
        return img
    shrink = img.shape[0] > size
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BOX if shrink else Image.BILINEAR))


def _mask_crop(crop: np.ndarray, poly: np.ndarray, y0: float, x0: float, scale: float) -> np.ndarray:
    from skimage.draw import polygon as draw_polygon

    S = crop.shape[0]
    p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    if len(p) < 3:
        return crop
    rr, cc = draw_polygon((p[:, 0] - y0) * scale, (p[:, 1] - x0) * scale, shape=(S, S))
    m = np.zeros((S, S), bool)
    m[rr, cc] = True
    out = np.zeros_like(crop)
    out[m] = crop[m]
    return out


def extract_crops(
    slide,
    table,
    classifier_or_spec,
    masks: Optional[bool] = None,
    *,
    rows: Optional[Sequence[int]] = None,
    mpp: Optional[float] = None,
) -> np.ndarray:
    """Crops of the table's cells, ``uint8 (N, size, size, 3)``.

    Parameters
    ----------
    slide : Slide
        The lazy slide the table was detected on (level-0 coordinates).
    table : CellTable
        Cells (``centroid_y``, ``centroid_x``, ``polygon``).
    classifier_or_spec : Classifier or CropSpec
        Gives the crop side in microns, output size and whether to mask.
    masks : bool, optional
        Override the spec's background masking (black outside the cell polygon).
    rows : sequence of int, optional
        Only these row positions of the table (in this order).
    mpp : float, optional
        Pixel size to use when the slide has none (defaults to the spec's ``default_mpp``).

    Raises
    ------
    ValueError
        If neither the slide nor the arguments give a pixel size.
    """
    spec = spec_of(classifier_or_spec)
    use_mask = spec.mask if masks is None else bool(masks)
    m = slide.mpp or mpp or spec.default_mpp
    if not m:
        raise ValueError(
            f"{getattr(slide, 'path', None) or 'slide'}: pixel size (mpp) unknown; "
            "pass mpp= (or --mpp) or estimate it first (leukcore.mpp.estimate_mpp)"
        )
    df = table.df if hasattr(table, "df") else table
    idx = np.arange(len(df)) if rows is None else np.asarray(rows, dtype=int)
    S = spec.size
    out = np.zeros((len(idx), S, S, 3), np.uint8)
    if len(idx) == 0:
        return out
    side0 = spec.side_px(m)  # crop side in level-0 px
    ds = max(side0 / S, 1.0)
    level = slide.best_level_for_downsample(ds)
    d = float(slide.downsamples[level])
    side = side0 / d  # crop side in level pixels
    n_side = max(1, int(round(side)))
    lvl = slide.levels[level]
    cached = None
    if int(lvl.shape[0]) * int(lvl.shape[1]) <= _MATERIALISE_PIXELS and len(idx) > 4:
        cached = np.asarray(lvl.compute(scheduler=local_scheduler()) if hasattr(lvl, "compute") else lvl)
    cy = df["centroid_y"].to_numpy(np.float64)[idx] / d
    cx = df["centroid_x"].to_numpy(np.float64)[idx] / d
    polys = df["polygon"].to_numpy()[idx] if (use_mask and "polygon" in df) else None
    for i in range(len(idx)):
        y0 = int(math.floor(cy[i] - n_side / 2.0 + 0.5))
        x0 = int(math.floor(cx[i] - n_side / 2.0 + 0.5))
        if cached is not None:
            region = _read_cached(cached, y0, x0, n_side)
        else:
            region = slide.read_region(level, y0, x0, n_side, n_side)
        crop = resize_rgb(region, S)
        if polys is not None and polys[i] is not None and not isinstance(polys[i], float):
            crop = _mask_crop(crop, np.asarray(polys[i]) / d, y0, x0, S / n_side)
        out[i] = crop
    return out


def _read_cached(a: np.ndarray, y: int, x: int, n: int) -> np.ndarray:
    from ..io.slide import PAD_VALUE

    H, W = a.shape[:2]
    out = np.full((n, n, 3), PAD_VALUE, np.uint8)
    y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + n, H), min(x + n, W)
    if y1 > y0 and x1 > x0:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = a[y0:y1, x0:x1]
    return out


def crops_from_array(
    image: np.ndarray, centroids, spec: CropSpec, mpp: float, polygons=None, masks: Optional[bool] = None
) -> np.ndarray:
    """Crops around ``centroids`` (level-0 y, x) of an in-memory RGB image (same code path as slides)."""
    from ..io.slide import Slide
    from ..results import CellTable

    c = np.asarray(centroids, dtype=np.float64).reshape(-1, 2)
    if polygons is None:
        polygons = [
            np.array([[y - 1, x - 1], [y - 1, x + 1], [y + 1, x + 1], [y + 1, x - 1]], np.float32) for y, x in c
        ]
    table = CellTable.from_detections(c, polygons, np.ones(len(c), np.float32), mpp=mpp)
    slide = Slide.from_array(np.ascontiguousarray(image), mpp=mpp)
    return extract_crops(slide, table, spec, masks=masks)
