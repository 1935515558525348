"""The network's receptive field, measured, and what detection builds on it: window margins and strips.

A window's maps equal the whole tile's wherever the window reaches farther than the receptive-field
radius; so sub-windows are read with that margin (:func:`window_halo`) and a window over the pixel
budget runs in strips that overlap by it (:func:`predict_in_strips`).
"""

from __future__ import annotations

import math
import weakref
from typing import Optional

import numpy as np

from ..tiling import strips

__all__ = ["receptive_radius", "predict_in_strips", "window_halo", "TIGHT_MARGIN"]

#: ``windows="tight"``: window margin beyond the network's measured receptive-field radius (working px; then
#: rounded up to the network's multiple: 23 + 4 -> 28 for wbc-stardist).  Not less: the radius is measured at a
#: 1e-4 relative change, and with 1 (-> 24 px) the sample slide's cells changed with the tile size (157 vs 158
#: cells at 256 vs 512 px tiles: a probability near the threshold), where the seam test allows 1e-3 px (issue 17)
TIGHT_MARGIN = 4
_RF_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def receptive_radius(detector, size: int = 128) -> Optional[int]:
    """Receptive-field radius of the detector's network in working px, measured (cached per detector).

    One input pixel of a random tile is changed; the radius is the farthest output pixel whose
    probability or distances move by more than float rounding.  ``None`` when the change reaches
    the probe's border (not a local network) or the detector cannot be probed.
    """
    try:
        return _RF_CACHE[detector]
    except (KeyError, TypeError):
        pass
    m = max(1, int(getattr(detector, "multiple", 1)))
    size = int(math.ceil(size / m) * m)
    rng = np.random.default_rng(0)
    x = rng.uniform(0.3, 1.0, (2, size, size, 3)).astype(np.float32)
    c = size // 2
    x2 = x.copy()
    x2[:, c, c, :] = np.where(x2[:, c, c, :] > 0.65, x2[:, c, c, :] - 0.3, x2[:, c, c, :] + 0.3)
    try:
        p0, d0 = detector.predict_maps(x)
        p1, d1 = detector.predict_maps(x2)
    except Exception:  # noqa: BLE001 - any detector without a plain forward
        return None
    dp = np.abs(np.asarray(p1, np.float64) - p0) / (np.abs(p0).max() + 1e-12)
    dd = (np.abs(np.asarray(d1, np.float64) - d0) / (np.abs(d0).max() + 1e-12)).max(-1)
    ys, xs = np.nonzero((np.maximum(dp, dd) > 1e-4).any(0))
    if len(ys) == 0:
        r = 0
    else:
        r = int(max(np.abs(ys - c).max(), np.abs(xs - c).max()))
    out = None if r >= c - 2 * m else r
    try:
        _RF_CACHE[detector] = out
    except TypeError:
        pass
    return out


def predict_in_strips(detector, a: np.ndarray, budget: float, predict=None):
    """Maps of one window, computed in horizontal strips of at most ``budget`` pixels when it is larger.

    Each strip is read with a margin of the network's measured receptive-field radius (rounded up to
    the network's ``multiple``, so the pooling grid stays aligned) and only its centre rows are kept:
    the stitched maps equal the whole window's up to float rounding, while the network's activations
    (~100 floats per pixel) never exceed the budget.  Returns ``(prob (1, H, W), dist (1, H, W, R))``.
    ``predict``: the maps function (default ``detector.predict_maps``; e.g. ``detector.predict_maps_raw``).
    """
    predict = predict or detector.predict_maps
    H, W = a.shape[:2]
    r = receptive_radius(detector) if H * W > budget else None
    if r is None:
        return predict(a[None])
    m = max(1, int(getattr(detector, "multiple", 1)))
    margin = int(math.ceil((r + 1) / m) * m)
    pieces = strips(H, W, budget, margin, m)
    if pieces is None:  # too narrow a budget for this width: one pass
        return predict(a[None])
    prob = dist = None
    for y0, y1, r0, r1 in pieces:
        p, d = predict(a[None, r0:r1])
        if prob is None:
            prob = np.empty((1, H, W), p.dtype)
            dist = np.empty((1, H, W, d.shape[-1]), d.dtype)
        prob[0, y0:y1] = p[0, y0 - r0 : y1 - r0]
        dist[0, y0:y1] = d[0, y0 - r0 : y1 - r0]
    return prob, dist


def window_halo(detector, grid, halo_px: float, tight: bool = False) -> int:
    """Sub-window margin: half the largest cell + the receptive-field radius (+ 4 px), at most the grid halo;
    ``tight``: the receptive-field radius + :data:`TIGHT_MARGIN`.
    """
    r = receptive_radius(detector)
    if r is None:
        return grid.halo
    m = grid.multiple
    want = r + TIGHT_MARGIN if tight else halo_px / 2 + r + 4
    return int(min(grid.halo, math.ceil(want / m) * m))
