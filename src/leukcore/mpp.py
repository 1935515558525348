"""Estimate the pixel size (microns per pixel) of a smear from its red cells.

Fields and many slides carry no pixel size.  Red blood cells are everywhere in
a peripheral smear and a normal red cell is about 7.5 um across, so the median
equivalent diameter of isolated, round red cells gives the scale:
``mpp = 7.5 / median_diameter_px``.

Only clean, isolated, round objects are used (solidity and eccentricity
filters); clumps, white cells (purple) and platelets (tiny) are rejected.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

__all__ = ["MppEstimate", "estimate_mpp", "RBC_DIAMETER_UM", "MppError"]

#: reference diameter of a normal red cell (microns)
RBC_DIAMETER_UM = 7.5


class MppError(ValueError):
    """The pixel size cannot be estimated (too few clean red cells)."""


@dataclass(frozen=True)
class MppEstimate:
    """Result of :func:`estimate_mpp`.

    Attributes
    ----------
    mpp : float
        Estimated microns per pixel of the input (level 0 for a slide).
    spread : float
        Relative spread of the estimate: interquartile range of the per-cell
        diameters divided by their median (0.1 = +-5 % around the median).
    n_cells : int
        Red cells measured.
    method : str
        ``"rbc-diameter"``.
    diameter_px : float
        Median red-cell diameter in input pixels.
    """

    mpp: float
    spread: float
    n_cells: int
    method: str = "rbc-diameter"
    diameter_px: float = math.nan

    def as_dict(self) -> dict:
        return asdict(self)


def _rbc_diameters(img: np.ndarray, min_d: float = 5.0) -> np.ndarray:
    """Diameters (px) of red cells in an RGB uint8 image, from distance-transform peaks.

    Touching round cells keep their own distance-transform maximum (= radius), so
    crowded fields still give a clean population; the dominant mode is returned.
    """
    from scipy import ndimage as ndi
    from skimage import filters
    from skimage.feature import peak_local_max

    rgb = img.astype(np.float32)
    gray = rgb.mean(axis=2)
    # background = colour of the brightest tenth of the image; objects differ from it
    bright = gray >= np.percentile(gray, 90)
    bg = np.median(rgb[bright], axis=0)
    diff = np.sqrt(((rgb - bg) ** 2).sum(axis=2))
    diff = ndi.uniform_filter(diff, 3)
    if np.percentile(diff, 99) < 15:
        return np.zeros(0)  # blank image
    # purple / dark nuclear material (white cells) is not a red cell
    purple = (rgb[..., 2] - rgb[..., 1] > 40) & (gray < np.percentile(gray, 50))
    purple = ndi.binary_dilation(purple, iterations=2)
    vals = diff[~purple]
    vals = vals[vals < np.percentile(vals, 99)]
    try:
        t = filters.threshold_otsu(vals[:: max(1, len(vals) // 200000)])
    except ValueError:
        return np.zeros(0)
    fg = diff > max(t, 10.0)
    fg = ndi.binary_opening(fg, iterations=1)
    fg = ndi.binary_fill_holes(fg)
    fg &= ~purple
    edt = ndi.distance_transform_edt(fg)
    pk = peak_local_max(edt, min_distance=max(2, int(min_d / 2)), threshold_abs=min_d / 2,
                        exclude_border=True)
    if len(pk) == 0:
        return np.zeros(0)
    r = edt[pk[:, 0], pk[:, 1]]
    # greedy suppression: a peak inside a larger peak's inscribed disc is a ridge, not a cell
    order = np.argsort(-r)
    pk, r = pk[order], r[order]
    from scipy.spatial import cKDTree
    tree = cKDTree(pk)
    keep = np.ones(len(r), bool)
    for i in range(len(r)):
        if not keep[i]:
            continue
        for j in tree.query_ball_point(pk[i], r[i] * 1.2):
            if j > i:
                keep[j] = False
    d = 2.0 * r[keep]
    if len(d) >= 5:
        # red cells are the dominant population: keep the mode (log-space histogram)
        ld = np.log(d)
        hist, edges = np.histogram(ld, bins=np.arange(ld.min(), ld.max() + 0.1, 0.08), weights=d ** 2)
        k = int(np.argmax(np.convolve(hist, [1, 2, 1], mode="same")))
        mode = np.exp(0.5 * (edges[k] + edges[k + 1]))
        d = d[(d > 0.75 * mode) & (d < 1.3 * mode)]
    return d


def _sample_regions(slide, max_regions: int = 6, size: int = 1024):
    """Yield a few level-0 regions from the busiest parts of a slide."""
    H, W = slide.shape
    if H * W <= (2 * size) ** 2:
        yield slide.read_region(0, 0, 0, H, W)
        return
    thumb = slide.thumbnail(256).astype(np.float32)
    th, tw = thumb.shape[:2]
    busy = 255 - thumb.mean(axis=2)
    # grid of candidate windows scored by "not background"
    ny, nx = max(1, H // size), max(1, W // size)
    scores = []
    for iy in range(ny):
        for ix in range(nx):
            sy0, sy1 = int(iy * th / ny), int((iy + 1) * th / ny)
            sx0, sx1 = int(ix * tw / nx), int((ix + 1) * tw / nx)
            blk = busy[sy0:max(sy1, sy0 + 1), sx0:max(sx1, sx0 + 1)]
            scores.append((float(np.mean(blk > 20)), iy, ix))
    scores.sort(reverse=True)
    for s, iy, ix in scores[:max_regions]:
        if s <= 0:
            break
        yield slide.read_region(0, iy * size, ix * size, size, size)


def estimate_mpp(image_or_slide, *, min_cells: int = 5, rbc_diameter_um: float = RBC_DIAMETER_UM,
                 max_regions: int = 6) -> MppEstimate:
    """Estimate microns per pixel from the red cells.

    Parameters
    ----------
    image_or_slide : ndarray (Y, X, 3) uint8 or leukcore.io.Slide
        A field image or a slide (level 0 is sampled in a few busy regions).
    min_cells : int
        Fewest clean red cells needed for an answer.
    rbc_diameter_um : float
        Reference red-cell diameter.

    Returns
    -------
    MppEstimate

    Raises
    ------
    MppError
        When fewer than ``min_cells`` clean red cells are found.
    ValueError
        When the input is not an RGB image.
    """
    if hasattr(image_or_slide, "read_region"):
        regions = list(_sample_regions(image_or_slide, max_regions=max_regions))
        name = getattr(image_or_slide, "path", None) or "slide"
    else:
        img = np.asarray(image_or_slide)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"estimate_mpp: expected an RGB (Y, X, 3) image, got shape {img.shape}")
        regions = [img.astype(np.uint8, copy=False)]
        name = "image"
    d = np.concatenate([_rbc_diameters(r) for r in regions]) if regions else np.zeros(0)
    if len(d) < min_cells:
        raise MppError(f"{name}: cannot estimate the pixel size: found {len(d)} clean red cells "
                       f"(need {min_cells}); pass the pixel size explicitly (mpp=... / --mpp)")
    med = float(np.median(d))
    q1, q3 = np.percentile(d, [25, 75])
    return MppEstimate(mpp=rbc_diameter_um / med, spread=float((q3 - q1) / med), n_cells=int(len(d)),
                       diameter_px=med)
