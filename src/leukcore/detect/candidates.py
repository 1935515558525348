"""The cheap low-resolution screen: where a white cell may be centred, before any network runs.

A nucleated-cell colour measure on a ~2 um/px level of the slide (white-balanced to the slide's
background) marks candidate *blocks* of the working grid within a cell radius of a candidate pixel;
detection runs the network only on the tiles and sub-windows that hold a marked block
(:func:`leukcore.detect.predict.plan_detection`).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

__all__ = ["candidate_blocks", "SKIP_THRESH", "SKIP_BLUE_THRESH", "SKIP_MPP"]

#: colour-measure threshold (white-balanced min(B-G, R-G)-style purple measure) for candidate pixels
SKIP_THRESH = 18.0
#: second candidate test, blue-minus-green alone (white-balanced): blue-violet nuclei (e.g. BCCD's stain) have
#: little red excess, and at the ~2 um/px search level a nucleus is averaged with its cytoplasm, so the purple
#: measure alone missed ~17 % of BCCD WBCs on a pyramidal slide.  The maximum of B-G over a BCCD-train WBC box
#: at 2 um/px is >= 114 for 99 % of the 214 train WBCs (per-field white balance); 40 leaves room for a slide-wide
#: white balance and paler stains.  A union with the purple test: skip recall can only go up.
SKIP_BLUE_THRESH = 40.0
#: pixel size (um) at which candidates are searched
SKIP_MPP = 2.0


def candidate_blocks(
    plan, slide, thresh: float = SKIP_THRESH, blue_thresh: float = SKIP_BLUE_THRESH, radius: Optional[float] = None
) -> np.ndarray:
    """Bool (rows, cols) map over the working grid in blocks of ``plan.block`` px: a nucleated-cell
    colour signal (purple measure > ``thresh`` or B-G > ``blue_thresh``) lies within a cell radius of
    the block (Chebyshev distance, as for whole tiles).
    """
    from skimage.measure import block_reduce

    grid = plan.grid
    B = plan.block
    nby, nbx = int(math.ceil(grid.shape[0] / B)), int(math.ceil(grid.shape[1] / B))
    blocks = np.zeros((nby, nbx), bool)
    want = SKIP_MPP / slide.mpp  # level-0 px per candidate px
    lvl = slide.best_level_for_downsample(max(want, 1.0))
    lds = slide.downsamples[lvl]
    k = max(1, int(round(want / lds)))  # further block reduction
    y0, x0, y1, x1 = plan.region
    LH, LW = slide.level_shape(lvl)
    ly0, lx0 = int(math.floor(y0 / lds)), int(math.floor(x0 / lds))
    ly1, lx1 = min(LH, int(math.ceil(y1 / lds))), min(LW, int(math.ceil(x1 / lds)))
    bg = plan.bg.reshape(1, 1, 3)
    rad = plan.grid.halo / 2.0 if radius is None else float(radius)  # working px: a cell radius is well within
    chunk = 2048 * k
    for cy in range(ly0, ly1, chunk):
        for cx in range(lx0, lx1, chunk):
            h, w = min(chunk, ly1 - cy), min(chunk, lx1 - cx)
            a = slide.read_region(lvl, cy, cx, h, w).astype(np.float32)
            a = a / bg * 255.0
            bmg = a[..., 2] - a[..., 1]
            meas = np.minimum(bmg, a[..., 0] - a[..., 1])
            m = (meas > thresh) | (bmg > blue_thresh)
            if k > 1:
                m = block_reduce(m, (k, k), np.max)
            if not m.any():
                continue
            ys, xs = np.nonzero(m)
            # candidate pixel centres -> level 0 -> working grid
            Y = (cy + (ys + 0.5) * k) * lds
            X = (cx + (xs + 0.5) * k) * lds
            wy = (Y - plan.origin[0]) / plan.ds
            wx = (X - plan.origin[1]) / plan.ds
            half = k * lds / plan.ds / 2 + rad
            r0 = np.clip(np.floor((wy - half) / B).astype(np.int64), 0, nby - 1)
            r1 = np.clip(np.floor((wy + half) / B).astype(np.int64), 0, nby - 1)
            c0 = np.clip(np.floor((wx - half) / B).astype(np.int64), 0, nbx - 1)
            c1 = np.clip(np.floor((wx + half) / B).astype(np.int64), 0, nbx - 1)
            key = np.unique(np.stack([r0, c0, r1 - r0, c1 - c0], 1), axis=0)
            r0, c0, er, ec = key.T
            for dr in range(int(er.max()) + 1):
                for dc in range(int(ec.max()) + 1):
                    sel = (er >= dr) & (ec >= dc)
                    blocks[r0[sel] + dr, c0[sel] + dc] = True
    return blocks
