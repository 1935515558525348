"""Reading the working grid: pixels of a read box at the working resolution, and reading ahead.

The working grid is a pyramid level, resampled when the level is more than 10 % off the detector's pixel
size; the resampling is one global affine map, so a pixel's value does not depend on the box it is read in
(seams stay exact).  :class:`Prefetch` reads the next batch's tiles in threads while the network runs.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["read_working", "Prefetch"]


def read_working(plan, read_box) -> np.ndarray:
    """(h, w, 3) uint8 working-resolution pixels of a read box (outside the slide -> white)."""
    slide = plan.slide
    wy0, wx0, wy1, wx1 = read_box
    h, w = wy1 - wy0, wx1 - wx0
    lds = slide.downsamples[plan.level]
    oy, ox = plan.origin[0] / lds, plan.origin[1] / lds
    if plan.scale == 1.0 and float(oy).is_integer() and float(ox).is_integer():
        return slide.read_region(plan.level, int(oy) + wy0, int(ox) + wx0, h, w)
    from scipy import ndimage as ndi

    s = plan.scale
    # level coordinates of the working pixel centres (global affine map: same for any tiling)
    ly = oy + (np.arange(wy0, wy1) + 0.5) * s - 0.5
    lx = ox + (np.arange(wx0, wx1) + 0.5) * s - 0.5
    sigma = max(0.0, 0.5 * (s - 1.0)) if s > 1.2 else 0.0
    pad = 2 + int(math.ceil(3 * sigma))
    by0, bx0 = int(math.floor(ly[0])) - pad, int(math.floor(lx[0])) - pad
    by1, bx1 = int(math.ceil(ly[-1])) + pad + 1, int(math.ceil(lx[-1])) + pad + 1
    block = slide.read_region(plan.level, by0, bx0, by1 - by0, bx1 - bx0).astype(np.float32)
    if sigma > 0:
        block = ndi.gaussian_filter(block, (sigma, sigma, 0))
    yy = (ly - by0)[:, None] * np.ones((1, w))
    xx = np.ones((h, 1)) * (lx - bx0)[None, :]
    out = np.empty((h, w, 3), np.float32)
    for c in range(3):
        out[..., c] = ndi.map_coordinates(block[..., c], [yy, xx], order=1, mode="nearest")
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


class Prefetch:
    """Reading ahead: the tiles of batch ``i + 1`` are read while the caller works on batch ``i``.

    ``read(tile)`` gives one tile's arrays; the tiles of a batch are read by ``workers`` threads side by side
    (the first batch has both cores to itself: nothing else runs before its pixels are there), and
    :meth:`next` returns them in the batch's order, so the result does not depend on ``workers``.
    """

    def __init__(self, read, batches: list, workers: int = 1):
        self.read, self.batches, self.i = read, batches, 0
        self.ex = ThreadPoolExecutor(max_workers=max(1, int(workers)), thread_name_prefix="leukcore-read")
        self.futs = [self.ex.submit(read, t) for t in batches[0]] if batches else []

    def next(self) -> list:
        """The next batch's arrays, one per tile (waits for the reader threads), starting the reads of the one
        after.
        """
        arrays = [f.result() for f in self.futs]
        self.i += 1
        self.futs = [self.ex.submit(self.read, t) for t in self.batches[self.i]] if self.i < len(self.batches) else []
        return arrays

    def close(self):
        """Stop the reader threads (pending reads cancelled)."""
        self.ex.shutdown(wait=True, cancel_futures=True)
