"""From network outputs to star-convex polygons (stardist's NMS, not rewritten)."""

from __future__ import annotations

import contextlib

import numpy as np

__all__ = ["instances_from_maps", "polygon_centroid", "polygons_to_labels"]


_CONTROLLER = None


def _single_thread_openmp():
    """Stardist's NMS is an OpenMP loop; on busy or small machines its thread start/spin costs
    ~100 ms per call for a handful of candidates, so it runs single-threaded (50x faster per tile).
    """
    global _CONTROLLER
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - optional
        return contextlib.nullcontext()
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="openmp")


def polygon_centroid(poly: np.ndarray) -> np.ndarray:
    """Area centroid (y, x) of a (K, 2) polygon (vertex mean if degenerate)."""
    p = np.asarray(poly, dtype=np.float64)
    y, x = p[:, 0], p[:, 1]
    y1, x1 = np.roll(y, -1), np.roll(x, -1)
    cross = x * y1 - x1 * y
    a = cross.sum() / 2.0
    if abs(a) < 1e-9:
        return p.mean(axis=0)
    cy = ((y + y1) * cross).sum() / (6 * a)
    cx = ((x + x1) * cross).sum() / (6 * a)
    return np.array([cy, cx])


#: with a global ``origin``, probabilities are compared at this resolution; equal ones are ordered by a
#: fixed hash of the global pixel, so float rounding that differs between tile shapes cannot change
#: which candidate NMS keeps (seam exactness)
PROB_QUANTUM = 2.0**-12


def _tie_break(prob: np.ndarray, origin) -> np.ndarray:
    """Quantise ``prob`` to :data:`PROB_QUANTUM` and add a per-global-pixel offset below half a quantum."""
    H, W = prob.shape
    gy = (np.arange(H, dtype=np.int64) + int(origin[0]))[:, None]
    gx = (np.arange(W, dtype=np.int64) + int(origin[1]))[None, :]
    h = ((gy * 73856093) ^ (gx * 19349663)) % 4096
    q = np.floor(prob.astype(np.float64) / PROB_QUANTUM) * PROB_QUANTUM
    return (q + h * (0.5 * PROB_QUANTUM / 4096)).astype(np.float32)


def instances_from_maps(
    prob: np.ndarray,
    dist: np.ndarray,
    *,
    prob_thresh: float = 0.5,
    nms_thresh: float = 0.4,
    min_area: float = 0.0,
    local_max: bool = True,
    origin=None,
    dist_logits: bool = False,
):
    """Run stardist's non-maximum suppression on one tile's maps.

    Parameters
    ----------
    prob : (H, W) float
        Object probability.
    dist : (H, W, n_rays) float
        Radial distances in pixels.
    prob_thresh, nms_thresh : float
        Candidate threshold and polygon-overlap threshold for suppression.
    min_area : float
        Drop polygons smaller than this (pixels of the maps).
    local_max : bool
        Use only 3x3 local maxima of ``prob`` as NMS candidates (much faster, same objects).
    origin : (int, int), optional
        Global (y, x) of the maps' first pixel.  When given, probabilities are quantised to
        :data:`PROB_QUANTUM` and ties ordered by the global pixel, so overlapping tiles of any shape
        keep the same candidate for an object (scores move by less than one quantum).
    dist_logits : bool
        ``dist`` holds the distance head's logits: the softplus is applied to the candidate pixels only
        (the same distances as applying it to the whole map first).

    Returns
    -------
    points : (N, 2) int   centre pixel of each kept polygon
    scores : (N,) float32
    polys  : (N, n_rays, 2) float32 vertices (y, x) in map pixels
    """
    from stardist import non_maximum_suppression
    from stardist.geometry import dist_to_coord

    prob = np.ascontiguousarray(prob, dtype=np.float32)
    dist = np.ascontiguousarray(dist, dtype=np.float32)
    if origin is not None:
        prob = _tie_break(prob, origin)
    n_rays = dist.shape[-1]
    if not (prob > prob_thresh).any():
        return np.zeros((0, 2), int), np.zeros(0, np.float32), np.zeros((0, n_rays, 2), np.float32)
    if local_max:
        # only 3x3 local maxima are candidates: each object's best pixel is one, so NMS keeps
        # the same objects while sorting/suppressing ~10x fewer candidates
        from scipy.ndimage import maximum_filter

        prob = np.where(prob >= maximum_filter(prob, size=3, mode="nearest"), prob, 0).astype(np.float32)
    with _single_thread_openmp():
        if dist_logits:
            points, scores, dists = _nms_of_logits(dist, prob, prob_thresh, nms_thresh)
        else:
            points, scores, dists = non_maximum_suppression(
                dist, prob, grid=(1, 1), b=0, prob_thresh=prob_thresh, nms_thresh=nms_thresh
            )
    if len(points) == 0:
        return np.zeros((0, 2), int), np.zeros(0, np.float32), np.zeros((0, n_rays, 2), np.float32)
    coord = dist_to_coord(dists, points)  # (N, 2, n_rays)
    polys = np.transpose(coord, (0, 2, 1)).astype(np.float32)
    if min_area > 0:
        from ..results import polygon_area

        keep = np.array([polygon_area(p) >= min_area for p in polys])
        points, scores, polys = points[keep], scores[keep], polys[keep]
    return points.astype(int), scores.astype(np.float32), polys


def _nms_of_logits(logits, prob, prob_thresh, nms_thresh):
    """NMS over the pixels above ``prob_thresh`` with the softplus applied to their distance logits only
    (stardist's ``non_maximum_suppression_sparse``: the same sort and suppression as the dense call).
    """
    from stardist.nms import non_maximum_suppression_sparse

    from .onnx_backend import softplus

    mask = prob > prob_thresh
    points, scores, dist, _ = non_maximum_suppression_sparse(
        softplus(logits[mask]), prob[mask], np.stack(np.where(mask), axis=1), nms_thresh=nms_thresh
    )
    return points, scores, dist


def polygons_to_labels(polys: np.ndarray, shape) -> np.ndarray:
    """Rasterise (N, K, 2) polygons (y, x) into a label image (stardist's ``polygons_to_label_coord``)."""
    polys = np.asarray(polys, dtype=np.float32)
    if len(polys) == 0:
        return np.zeros(shape, np.int32)
    coord = np.transpose(polys, (0, 2, 1))  # (N, 2, K)
    from stardist.geometry import polygons_to_label_coord

    return polygons_to_label_coord(coord, tuple(shape)).astype(np.int32)
