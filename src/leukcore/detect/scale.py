"""The detector settles a pixel-size disagreement: a search over the two rulers' candidate scales.

:func:`leukcore.mpp.estimate_mpp` has two rulers, the scale network (ScaleNet) and the red cells.  When
they disagree by more than :data:`~leukcore.mpp.MAX_RULER_DISAGREEMENT`, one of them misread the image:
the network on a smear unlike its training sources, the red-cell ruler where red cells are pale rings or
fragments (high magnification: it measures pieces of them and answers a pixel size several times too
large).  Neither ruler can tell which.  The detector can: read at a pixel size that is too large, cells
look too small to it and it splits each white cell into its nuclear lobes; read a little larger still,
the count keeps climbing.  At the right pixel size the cells are whole and a 25 % larger pixel size
changes the count little (the white cells are found, not yet split).

So for each candidate ``c`` the detector runs on the estimate's own sample regions at ``c`` and at
``c * STEP``; the candidate whose count grows least (:func:`fragmentation`) is used, the estimate stays
flagged unreliable and its reason says what was measured.  Without a clear winner (growth within
:data:`MIN_MARGIN` of each other, or too few cells) the estimator's own rule stands (the red cells).
When only one candidate gives :data:`MIN_CELLS` cells, it wins only if its own count grows by at most
:data:`MIN_MARGIN`: the count of the other may be low because its image holds one white cell (a single-cell
crop: at the right pixel size the detector finds the one cell or none), while at a pixel size several times
too large that one cell falls apart into five fragments whose count keeps climbing (a Zheng 2018 crop:
network 0.124 um/px, 0 cells; red cells 0.884, 5 -> 7 cells: red cells won, and `leuk classify` called the
fragments of a normal cell ALL, issue 14).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional

import numpy as np

__all__ = ["STEP", "MIN_MARGIN", "MIN_CELLS", "fragmentation", "winner", "settle_disagreement", "estimate_slide_mpp"]

#: the larger pixel size each candidate is compared with (cells at ``c * STEP`` look 20 % smaller)
STEP = 1.25
#: the winner's count growth must be this much smaller than the other's
MIN_MARGIN = 0.15
#: fewest white cells found at a candidate for its growth to count (chosen on single fields read by
#: ScaleNets trained without their source, bench_mpp's source-level rows: 3 -> four-class 11 -> 15 of 60
#: within 15 %, one in-source field lost; 5 -> 16, one lost; 12 -> 14, none lost)
MIN_CELLS = 5
#: the largest image side (level-0 pixels) the search reads from an in-memory image (a centred crop)
MAX_SIDE = 2048


def _count(regions, detector, mpp: float) -> int:
    from ..io import Slide
    from .predict import detect_cells

    n = 0
    for r in regions:
        t = detect_cells(Slide.from_array(np.ascontiguousarray(r), mpp=float(mpp)), detector, progress=None)
        n += len(t)
    return n


def fragmentation(regions, detector, mpp: float, step: float = STEP) -> tuple[int, int, float]:
    """``(cells at mpp, cells at mpp * step, growth)`` where growth = (n_step + 1) / (n + 1)."""
    n = _count(regions, detector, mpp)
    n_up = _count(regions, detector, mpp * step)
    return n, n_up, (n_up + 1.0) / (n + 1.0)


def _search_regions(image_or_slide) -> list:
    from ..mpp import measurement_regions

    regions, _ = measurement_regions(image_or_slide)
    out = []
    for r in regions:
        h, w = r.shape[:2]
        y0, x0 = max(0, (h - MAX_SIDE) // 2), max(0, (w - MAX_SIDE) // 2)
        out.append(r[y0 : y0 + MAX_SIDE, x0 : x0 + MAX_SIDE])
    return out


def winner(counts: dict, min_cells: int = MIN_CELLS, margin: float = MIN_MARGIN) -> Optional[str]:
    """The candidate the counts choose, or ``None`` (undecided).

    ``counts``: candidate name -> :func:`fragmentation`'s ``(n, n_up, growth)``.  Candidates with fewer than
    ``min_cells`` cells give no evidence; of two, the one whose growth is at least ``margin`` lower wins; a lone
    one wins only if its own growth is at most ``1 + margin`` (whole cells, not fragments that keep multiplying).
    """
    ok = {k: v for k, v in counts.items() if v[0] >= min_cells}
    if len(ok) == 2:
        (k1, v1), (_, v2) = sorted(ok.items(), key=lambda kv: kv[1][2])
        return k1 if v1[2] + margin <= v2[2] else None
    if len(ok) == 1:
        k, v = next(iter(ok.items()))
        return k if v[2] <= 1.0 + margin else None
    return None


def settle_disagreement(image_or_slide, est, detector):
    """The estimate ``est`` with a ruler disagreement settled by the detector (unchanged otherwise).

    Parameters
    ----------
    image_or_slide : ndarray (Y, X, 3) uint8 or leukcore.io.Slide
        What ``est`` was estimated from.
    est : leukcore.mpp.MppEstimate
        The two rulers' estimate.
    detector : leukcore.detect.Detector
        The detector that will read the image.

    Returns
    -------
    leukcore.mpp.MppEstimate
        ``est``, or a copy at the other ruler's pixel size; either way, when the rulers disagree, the
        reason records each candidate's cell counts (``reliable`` stays False).
    """
    from ..mpp import MAX_RULER_DISAGREEMENT

    a, b = float(est.rbc_mpp), float(est.scalenet_mpp)
    if not (math.isfinite(a) and math.isfinite(b)) or max(a, b) / min(a, b) <= MAX_RULER_DISAGREEMENT:
        return est
    regions = _search_regions(image_or_slide)
    if not regions:
        return est
    res = {name: fragmentation(regions, detector, m) for name, m in (("red cells", a), ("network", b))}
    note = "; ".join(
        f"{k} {m:.3f} um/px: {n} cells, {n_up} at {STEP:g}x"
        for (k, (n, n_up, _)), m in zip(res.items(), (a, b), strict=True)
    )
    win = winner(res)
    chosen = {"red cells": a, "network": b}.get(win, est.mpp)
    how = f"detector check ({note}): {win} used" if win else f"detector check undecided ({note})"
    if est.reliable and chosen == est.mpp:
        return est  # the estimator's own answer, confirmed
    reason = "; ".join(x for x in (est.reason, how) if x)
    method = {"red cells": "rbc-diameter", "network": "scalenet"}.get(win, est.method)
    return replace(est, mpp=float(chosen), method=method, reliable=False, reason=reason)


def estimate_slide_mpp(image_or_slide, detector: Optional[object] = None):
    """:func:`leukcore.mpp.estimate_mpp`, with a ruler disagreement settled by ``detector`` when given."""
    from ..mpp import estimate_mpp

    est = estimate_mpp(image_or_slide)
    return est if detector is None else settle_disagreement(image_or_slide, est, detector)
