"""Whole-slide tiled detection (stardist ``big.py`` style, streaming).

Steps
-----
1. Pixel size: ``mpp=`` override, else the slide's, else :func:`leukcore.mpp.estimate_mpp`
   (estimate and spread go into the table's meta).
2. Working resolution: the pyramid level nearest below the detector's mpp, resampled
   (globally consistent bilinear sampling) when it is more than 10 % off.
3. :class:`~leukcore.tiling.TileGrid` over the region at the working resolution;
   halo larger than the biggest white cell.
4. Skip empty: a purple (nucleated-cell) colour measure on a ~2 um/px level marks
   candidate *blocks* (:data:`WINDOW_BLOCK` working px) within a cell radius of a
   candidate pixel; only tiles holding a marked block are run, and inside a tile the
   network runs only on sub-windows: the marked blocks' bounding boxes (merged while
   merging does not cost pixels) grown by the tile halo and clipped to the tile's read
   box.  A cell is kept when its centroid lies in the tile's core *and* in a marked
   block, so the cells found do not depend on the tiling nor on how the windows were
   cut (a tile whose windows would cover most of it runs whole, same rule).  ``windows="tight"``
   cuts per-cell windows: smaller blocks, a nucleus-to-centroid radius, and a margin of only the
   network's receptive field, so dense (leukaemic) slides skip the space between cells too.
5. Batches of tiles: a reader thread prepares the next batch while the network
   runs on the current one (on CPU a batch goes through the network in pieces of at
   most :data:`MAX_FORWARD_PX` pixels, so peak memory stays flat); per tile stardist NMS, the ownership rule keeps
   cells whose centre lies in the core, and a global de-duplication of seam
   cells is the safety net.  Only polygons are kept, so memory does not grow
   with the slide.
6. Progress after each batch, cancel checked between batches (a cancelled run
   yields a final chunk with ``meta["partial"] = True``).
"""
from __future__ import annotations

import math
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np

from ..progress import emit, is_cancelled
from ..results import CellTable
from ..tiling import Tile, TileGrid, dedupe_points
from .postprocess import instances_from_maps, polygon_centroid

__all__ = ["detect_cells", "iter_detect", "plan_detection", "DetectionPlan", "tile_windows",
           "predict_in_strips"]

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
#: most working pixels per forward pass (memory bound: a 1152 px tile needs ~0.8 GB on CPU)
MAX_FORWARD_PX = {"cpu": 1.4e6, "cuda": 64e6}
#: edge (working px) of the candidate blocks; sub-windows are unions of blocks (a divisor of the tile edge
#: is used when the tile is not a multiple of it)
WINDOW_BLOCK = 32
#: a tile whose sub-windows would read more than this share of its read box runs whole
WINDOW_MAX_SHARE = 0.75
#: ``windows="tight"``: candidate-block edge (working px) and the window margin beyond the network's
#: receptive-field radius (working px).  The margin drops the half-cell term of the exact windows, so a
#: window costs ~(core + 2 x 28)^2 instead of ~(core + 2 x 52)^2 pixels: per-cell windows pay off on dense
#: slides.  Maps in a window core stay exact (the margin still exceeds the receptive field); only a
#: neighbour candidate beyond the core can see slightly different maps than in the whole tile.
TIGHT_BLOCK = 16
TIGHT_MARGIN = 4
#: ``windows="tight"``: a block is a candidate when a nucleus-colour pixel lies within this distance (um,
#: Chebyshev) of it: a white cell's centroid lies within a few um of its nucleus (exact windows: half the
#: tile halo, ~16 um)
TIGHT_RADIUS_UM = 8.0
#: accepted values of ``windows``
WINDOW_MODES = (True, False, "exact", "tight")
#: what ``windows=True`` (the default) means
DEFAULT_WINDOWS = "tight"


@dataclass
class DetectionPlan:
    """Everything decided before the first tile is read."""

    slide: Any
    level: int
    scale: float                 # level px per working px (1.0 = no resampling)
    ds: float                    # level-0 px per working px
    origin: tuple                # region (y0, x0) in level-0 px
    grid: TileGrid
    run: np.ndarray              # bool per tile: run the network on it
    bg: np.ndarray               # background colour (RGB) for normalisation
    mpp_info: dict
    working_mpp: float
    region: tuple
    timings: dict = field(default_factory=dict)
    #: bool (rows, cols) map of candidate blocks over the working grid (None: no skipping)
    blocks: Optional[np.ndarray] = None
    #: block edge in working px (divides ``grid.tile``)
    block: int = 0
    #: run sub-windows around candidate blocks inside a tile (else whole tiles)
    windows: bool = True
    #: ``"exact"`` (margin: half the largest cell + receptive field) or ``"tight"`` (receptive field + 4 px,
    #: 16 px blocks); ``""`` without windows
    window_mode: str = "exact"
    #: margin (working px) read around a sub-window's core: a cell radius plus the network's
    #: receptive-field radius (0: the grid halo)
    window_halo: int = 0

    def to_level0(self, pts: np.ndarray) -> np.ndarray:
        """Working-grid (y, x) -> level-0 (y, x) (pixel-centre convention)."""
        p = np.asarray(pts, dtype=np.float64)
        out = (p + 0.5) * self.ds - 0.5
        out[..., 0] += self.origin[0]
        out[..., 1] += self.origin[1]
        return out


def _as_slide(slide, mpp=None):
    from ..io import Slide

    if isinstance(slide, Slide):
        return slide
    if isinstance(slide, (str, bytes)) or hasattr(slide, "__fspath__"):
        from ..io import open_slide
        return open_slide(slide, mpp=mpp)
    arr = np.asarray(slide)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"detect_cells: expected an RGB (Y, X, 3) image or a Slide, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"detect_cells: expected uint8 pixels, got {arr.dtype}")
    return Slide.from_array(arr, mpp=mpp)


def _resolve_mpp(slide, mpp):
    if mpp is not None:
        slide = slide.with_mpp(float(mpp), "user")
        return slide, {"value": float(mpp), "source": "user", "spread": None, "n_cells": None}
    if slide.mpp:
        return slide, {"value": float(slide.mpp), "source": slide.mpp_source or "metadata", "spread": None,
                       "n_cells": None}
    from ..mpp import MppError, estimate_mpp

    try:
        est = estimate_mpp(slide)
    except MppError as e:
        raise ValueError(str(e)) from None
    slide = slide.with_mpp(est.mpp, "estimated")
    return slide, {"value": float(est.mpp), "source": "estimated", "spread": float(est.spread),
                   "n_cells": int(est.n_cells), "method": est.method, "reliable": bool(est.reliable),
                   "reason": est.reason}


def _check_region(region, shape):
    H, W = shape
    if region is None:
        return (0, 0, H, W)
    if len(region) != 4:
        raise ValueError(f"region must be (y0, x0, y1, x1) in level-0 pixels, got {region!r}")
    y0, x0, y1, x1 = (int(round(v)) for v in region)
    y0, x0 = max(0, y0), max(0, x0)
    y1, x1 = min(H, y1), min(W, x1)
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"region {tuple(region)!r} is empty or outside the slide ({H} x {W} px)")
    return (y0, x0, y1, x1)


def _block_edge(tile: int, block: int = WINDOW_BLOCK) -> int:
    """Candidate-block edge: the largest divisor of ``tile`` among ``block``, /2, /4... (>= 1)."""
    b = block
    while b > 1 and tile % b:
        b //= 2
    return max(1, b)


def _candidate_blocks(plan: DetectionPlan, slide, thresh: float = SKIP_THRESH,
                      blue_thresh: float = SKIP_BLUE_THRESH, radius: Optional[float] = None) -> np.ndarray:
    """Bool (rows, cols) map over the working grid in blocks of ``plan.block`` px: a nucleated-cell
    colour signal (purple measure > ``thresh`` or B-G > ``blue_thresh``) lies within a cell radius of
    the block (Chebyshev distance, as for whole tiles)."""
    from skimage.measure import block_reduce

    grid = plan.grid
    B = plan.block
    nby, nbx = int(math.ceil(grid.shape[0] / B)), int(math.ceil(grid.shape[1] / B))
    blocks = np.zeros((nby, nbx), bool)
    want = SKIP_MPP / slide.mpp                       # level-0 px per candidate px
    lvl = slide.best_level_for_downsample(max(want, 1.0))
    lds = slide.downsamples[lvl]
    k = max(1, int(round(want / lds)))                # further block reduction
    y0, x0, y1, x1 = plan.region
    LH, LW = slide.level_shape(lvl)
    ly0, lx0 = int(math.floor(y0 / lds)), int(math.floor(x0 / lds))
    ly1, lx1 = min(LH, int(math.ceil(y1 / lds))), min(LW, int(math.ceil(x1 / lds)))
    bg = plan.bg.reshape(1, 1, 3)
    rad = plan.grid.halo / 2.0 if radius is None else float(radius)   # working px: a cell radius is well within
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


def _tiles_from_blocks(grid: TileGrid, blocks: np.ndarray, B: int) -> np.ndarray:
    """Bool per tile: its core holds a marked block."""
    tb = grid.tile // B
    pad = np.zeros((grid.n_rows * tb, grid.n_cols * tb), bool)
    pad[:blocks.shape[0], :blocks.shape[1]] = blocks
    return pad.reshape(grid.n_rows, tb, grid.n_cols, tb).any(axis=(1, 3)).ravel()


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
    except Exception:                                   # noqa: BLE001 - any detector without a plain forward
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


def predict_in_strips(detector, a: np.ndarray, budget: float):
    """Maps of one window, computed in horizontal strips of at most ``budget`` pixels when it is larger.

    Each strip is read with a margin of the network's measured receptive-field radius (rounded up to
    the network's ``multiple``, so the pooling grid stays aligned) and only its centre rows are kept:
    the stitched maps equal the whole window's up to float rounding, while the network's activations
    (~100 floats per pixel) never exceed the budget.  Returns ``(prob (1, H, W), dist (1, H, W, R))``.
    """
    H, W = a.shape[:2]
    r = receptive_radius(detector) if H * W > budget else None
    if r is None:
        return detector.predict_maps(a[None])
    m = max(1, int(getattr(detector, "multiple", 1)))
    margin = int(math.ceil((r + 1) / m) * m)
    h = (int(budget // W) - 2 * margin) // m * m
    if h < max(m, margin):                           # too narrow a budget for this width: one pass
        return detector.predict_maps(a[None])
    prob = dist = None
    for y0 in range(0, H, h):
        y1 = min(H, y0 + h)
        r0, r1 = max(0, y0 - margin), min(H, y1 + margin)
        p, d = detector.predict_maps(a[None, r0:r1])
        if prob is None:
            prob = np.empty((1, H, W), p.dtype)
            dist = np.empty((1, H, W, d.shape[-1]), d.dtype)
        prob[0, y0:y1] = p[0, y0 - r0:y1 - r0]
        dist[0, y0:y1] = d[0, y0 - r0:y1 - r0]
    return prob, dist


def _window_halo(detector, grid: TileGrid, halo_px: float, tight: bool = False) -> int:
    """Sub-window margin: half the largest cell + the receptive-field radius (+ 4 px), at most the grid halo;
    ``tight``: the receptive-field radius + :data:`TIGHT_MARGIN`."""
    r = receptive_radius(detector)
    if r is None:
        return grid.halo
    m = grid.multiple
    want = r + TIGHT_MARGIN if tight else halo_px / 2 + r + 4
    return int(min(grid.halo, math.ceil(want / m) * m))


def _area(box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def _union(a, b) -> tuple:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def tile_windows(plan: DetectionPlan, tile: Tile) -> list:
    """Sub-windows of a tile to run the network on, as :class:`~leukcore.tiling.Tile` objects.

    Each window's core is a union of marked candidate blocks inside the tile's core (window
    cores are disjoint); its read box is the core grown by ``plan.window_halo`` (half the
    largest cell + the network's measured receptive-field radius, so every output pixel that
    can touch an owned cell is computed from the same input pixels as in the whole tile) and
    clipped to the tile's read box (sizes and origins stay multiples of the network's ``multiple``).  Without
    a block map (no skipping, or ``windows=False``), or when the windows would read more than
    :data:`WINDOW_MAX_SHARE` of the tile, the tile itself is the one window.
    """
    if plan.blocks is None or not plan.windows:
        return [tile]
    grid, B = plan.grid, plan.block
    tb = grid.tile // B
    sub = plan.blocks[tile.row * tb:(tile.row + 1) * tb, tile.col * tb:(tile.col + 1) * tb]
    if not sub.any():
        return []
    from scipy import ndimage as ndi

    h = plan.window_halo or grid.halo
    cy0, cx0, cy1, cx1 = tile.core
    ry1, rx1 = tile.read[2], tile.read[3]

    def read_of(core):
        return (core[0] - h, core[1] - h, ry1 if core[2] >= cy1 else core[2] + h,
                rx1 if core[3] >= cx1 else core[3] + h)

    lab, n = ndi.label(sub, structure=np.ones((3, 3), int))
    cores = []
    for sl in ndi.find_objects(lab):
        cores.append((cy0 + sl[0].start * B, cx0 + sl[1].start * B,
                      min(cy0 + sl[0].stop * B, cy1), min(cx0 + sl[1].stop * B, cx1)))
    # merge windows whose cores overlap, or whose union reads no more pixels than the two apart
    changed = True
    while changed and len(cores) > 1:
        changed = False
        for i in range(len(cores)):
            for j in range(i + 1, len(cores)):
                a, b = cores[i], cores[j]
                u = _union(a, b)
                overlap = a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
                if overlap or _area(read_of(u)) <= _area(read_of(a)) + _area(read_of(b)):
                    cores[i] = u
                    del cores[j]
                    changed = True
                    break
            if changed:
                break
    wins = [Tile(index=tile.index, row=tile.row, col=tile.col, core=c, read=read_of(c)) for c in cores]
    if sum(_area(w.read) for w in wins) > WINDOW_MAX_SHARE * _area(tile.read):
        return [tile]
    return wins


def _in_marked_block(plan: DetectionPlan, pts_w: np.ndarray) -> np.ndarray:
    """Bool per working-grid point: it lies in a marked candidate block (True when not skipping)."""
    if plan.blocks is None or not plan.windows:
        return np.ones(len(pts_w), bool)
    B = plan.block
    r = np.clip(np.floor(pts_w[:, 0] / B).astype(np.int64), 0, plan.blocks.shape[0] - 1)
    c = np.clip(np.floor(pts_w[:, 1] / B).astype(np.int64), 0, plan.blocks.shape[1] - 1)
    return plan.blocks[r, c]


def _slide_background(slide) -> np.ndarray:
    from .data import background_color

    th = slide.thumbnail(1024)
    if th.size == 0:
        return np.full(3, 255.0, np.float32)
    return background_color(th)


def plan_detection(slide, detector, *, tile_size: int = 1024, region=None, skip_empty: bool = True,
                   mpp: Optional[float] = None, windows: "bool | str" = True) -> DetectionPlan:
    """Decide pixel size, working level, tile grid, candidate blocks and which tiles to run (no network yet).

    ``windows`` (with ``skip_empty``): inside a tile run the network only on sub-windows around
    the candidate blocks (:func:`tile_windows`); ``False`` runs every candidate tile whole.
    ``"exact"``: window margin = half the largest cell + the receptive field (the cells are those of
    whole tiles); ``"tight"``: 16 px candidate blocks, an 8 um nucleus-to-centroid radius and a margin
    of the receptive field + 4 px (per-cell windows; see :data:`TIGHT_MARGIN`); ``True``:
    :data:`DEFAULT_WINDOWS`.
    """
    if windows not in WINDOW_MODES:
        raise ValueError(f"windows must be one of {WINDOW_MODES}, got {windows!r}")
    tight = (DEFAULT_WINDOWS if windows is True else windows) == "tight"
    t0 = time.perf_counter()
    slide, mpp_info = _resolve_mpp(slide, mpp)
    if min(slide.shape) <= 0:
        raise ValueError(f"{slide.path or 'slide'}: empty slide (shape {slide.shape})")
    reg = _check_region(region, slide.shape)
    ds_want = detector.mpp / slide.mpp                # level-0 px per working px
    lvl = slide.best_level_for_downsample(max(ds_want, 1.0)) if ds_want >= 1 else 0
    lds = float(slide.downsamples[lvl])
    scale = ds_want / lds
    if abs(scale - 1.0) < 0.1:
        scale = 1.0
    ds = scale * lds
    H = int(math.ceil((reg[2] - reg[0]) / ds))
    W = int(math.ceil((reg[3] - reg[1]) / ds))
    m = detector.multiple
    halo_px = detector.max_cell_um / (detector.mpp if scale != 1.0 else lds * slide.mpp)
    halo = int(math.ceil((halo_px * 1.25) / m) * m)
    # no bigger tiles than the image needs
    tile = int(min(int(tile_size), int(math.ceil(max(H, W) / m) * m)))
    if tile < 2 * m:
        raise ValueError(f"tile_size {tile_size} too small (minimum {2 * m})")
    grid = TileGrid((H, W), tile=tile, halo=halo, multiple=m, max_object=halo_px)
    bg = _slide_background(slide)
    plan = DetectionPlan(slide=slide, level=lvl, scale=scale, ds=ds, origin=(reg[0], reg[1]), grid=grid,
                         run=np.ones(len(grid), bool), bg=bg, mpp_info=mpp_info,
                         working_mpp=float(ds * slide.mpp), region=reg,
                         block=_block_edge(grid.tile, TIGHT_BLOCK if tight else WINDOW_BLOCK),
                         windows=bool(windows), window_mode=("tight" if tight else "exact") if windows else "")
    if skip_empty:
        if windows:
            plan.window_halo = _window_halo(detector, grid, halo_px, tight=tight)
        plan.blocks = _candidate_blocks(plan, slide,
                                        radius=TIGHT_RADIUS_UM / plan.working_mpp if tight else None)
        plan.run = _tiles_from_blocks(grid, plan.blocks, plan.block)
    plan.timings["plan_s"] = time.perf_counter() - t0
    return plan


def _read_tile(plan: DetectionPlan, read_box) -> np.ndarray:
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


def _read_batch(plan: DetectionPlan, tiles) -> list:
    """Per tile: list of (window, normalised pixels); one read of the windows' bounding box per tile."""
    from .data import normalize_image

    out = []
    for t in tiles:
        wins = tile_windows(plan, t)
        if not wins:
            out.append([])
            continue
        box = wins[0].read
        for w in wins[1:]:
            box = _union(box, w.read)
        a = normalize_image(_read_tile(plan, box), plan.bg)
        out.append([(w, a[w.read[0] - box[0]:w.read[2] - box[0], w.read[1] - box[1]:w.read[3] - box[1]])
                    for w in wins])
    return out


def _dedupe_radius(detector, plan: DetectionPlan) -> float:
    """Working-px distance under which two detections are one cell (12.5 % of the largest cell)."""
    return 0.25 * detector.max_cell_um / plan.working_mpp


def _tile_cells(plan: DetectionPlan, detector, tile, prob, dist, prob_thresh, nms_thresh, dedupe_r):
    """Cells owned by one tile: (level-0 centroids, level-0 polygons, scores, working centres)."""
    ry0, rx0 = tile.read[0], tile.read[1]
    pts, scores, polys = instances_from_maps(prob, dist, prob_thresh=prob_thresh, nms_thresh=nms_thresh,
                                             min_area=detector.min_area_px, origin=(ry0, rx0))
    if len(pts) == 0:
        return None
    centres = np.stack([polygon_centroid(p) for p in polys]) + (ry0, rx0)
    # near-duplicates (two NMS survivors of one cell) are resolved over everything the tile sees,
    # halo included, by score: a neighbouring tile sees the same pair and decides alike, so the
    # result does not depend on which side of a core edge each one's centroid falls
    kept = dedupe_points(centres, scores, dedupe_r)
    pts, scores, polys, centres = pts[kept], scores[kept], polys[kept], centres[kept]
    own = tile.owns(centres)
    if not own.any():
        return None
    polys_w = polys[own] + np.array([ry0, rx0], np.float32)
    return (plan.to_level0(centres[own]), plan.to_level0(polys_w).astype(np.float32), scores[own], centres[own])


def iter_detect(slide, detector=None, *, tile_size: int = 1024, batch_size: int = 4, region=None,
                skip_empty: bool = True, progress=None, cancel=None, device: str = "auto",
                mpp: Optional[float] = None, prob_thresh: Optional[float] = None,
                nms_thresh: Optional[float] = None, plan: Optional[DetectionPlan] = None,
                windows: "bool | str" = True) -> Iterator[CellTable]:
    """Detect cells batch by batch; yields one :class:`CellTable` per finished batch of tiles.

    Parameters are those of :func:`detect_cells`.  Chunks carry provisional ids;
    the caller assigns final ids (``CellTable.concat(...).sorted()``).  A
    cancelled run yields a last (possibly empty) chunk with ``meta["partial"] = True``.
    Every chunk's meta holds ``mpp``, ``mpp_source``, ``detector``, ``n_tiles``,
    ``tiles_run`` and ``working_mpp``, and the running totals ``windows_run`` (network
    inputs) and ``px_run`` (working pixels through the network).
    """
    from .model import Detector

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if detector is None or isinstance(detector, (str, dict)) or hasattr(detector, "__fspath__"):
        detector = Detector.load(detector or "wbc-stardist", device=device)
    slide = _as_slide(slide, mpp)
    if plan is None:
        plan = plan_detection(slide, detector, tile_size=tile_size, region=region, skip_empty=skip_empty, mpp=mpp,
                              windows=windows)
    pt = detector.prob_thresh if prob_thresh is None else float(prob_thresh)
    nt = detector.nms_thresh if nms_thresh is None else float(nms_thresh)
    tiles = [t for t in plan.grid if plan.run[t.index]]
    batches = [tiles[i:i + batch_size] for i in range(0, len(tiles), batch_size)]
    total = len(tiles)
    meta = {"mpp": plan.slide.mpp, "mpp_source": plan.mpp_info["source"], "mpp_estimate": plan.mpp_info,
            "detector": detector.info(), "n_tiles": len(plan.grid), "tiles_run": total,
            "tile_size": plan.grid.tile, "halo": plan.grid.halo, "working_mpp": plan.working_mpp,
            "level": plan.level, "region": list(plan.region), "skip_empty": bool(skip_empty),
            "shape": list(plan.slide.shape), "slide": plan.slide.path,
            "windows": bool(plan.windows and plan.blocks is not None), "block": plan.block,
            "window_mode": plan.window_mode if plan.blocks is not None else "", "window_halo": plan.window_halo}
    # seam safety net: working-grid centres of cells already emitted near a core edge
    dedupe_r = _dedupe_radius(detector, plan)
    seam_pts = np.zeros((0, 2))
    done = n_cells = n_windows = px_run = 0
    emit(progress, "detect", 0, total, cells=0, message=f"{total} of {len(plan.grid)} tiles to run")
    if not batches:
        yield CellTable.from_detections(np.zeros((0, 2)), [], np.zeros(0), plan.slide.mpp,
                                        {**meta, "windows_run": 0, "px_run": 0})
        return
    dev_type = getattr(getattr(detector, "device", None), "type", "cpu")
    budget = MAX_FORWARD_PX.get(dev_type, MAX_FORWARD_PX["cpu"])
    ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leukcore-read")
    try:
        fut = ex.submit(_read_batch, plan, batches[0])
        for bi, batch in enumerate(batches):
            if is_cancelled(cancel):
                yield CellTable.from_detections(np.zeros((0, 2)), [], np.zeros(0), plan.slide.mpp,
                                                {**meta, "partial": True, "tiles_done": done,
                                                 "windows_run": n_windows, "px_run": px_run})
                return
            arrays = fut.result()
            if bi + 1 < len(batches):
                fut = ex.submit(_read_batch, plan, batches[bi + 1])
            cents, polys, scores = [], [], []
            # windows of one shape (from any tile of the batch) go through the network together
            shapes: dict = {}
            for t, wins in zip(batch, arrays):
                for w, a in wins:
                    shapes.setdefault(a.shape, []).append((w, a))
                    n_windows += 1
                    px_run += a.shape[0] * a.shape[1]
            subgroups = []
            for group in shapes.values():
                # pixel budget per forward pass keeps peak memory flat (CPU: ~1 large tile at a time;
                # the output alone is n_rays floats per pixel)
                per = max(1, int(budget // (group[0][1].shape[0] * group[0][1].shape[1])))
                subgroups += [group[i:i + per] for i in range(0, len(group), per)]
            found: dict = {}
            for group in subgroups:
                if len(group) == 1:
                    prob, dist = predict_in_strips(detector, group[0][1], budget)
                else:
                    prob, dist = detector.predict_maps(np.stack([a for _, a in group]))
                for j, (w, _) in enumerate(group):
                    res = _tile_cells(plan, detector, w, prob[j], dist[j], pt, nt, dedupe_r)
                    if res is not None:
                        found.setdefault(w.index, []).append(res)
            for t in batch:
                parts = found.get(t.index)
                if not parts:
                    continue
                c0 = np.concatenate([r[0] for r in parts])
                p0 = np.concatenate([r[1] for r in parts])
                s0 = np.concatenate([r[2] for r in parts])
                cw = np.concatenate([r[3] for r in parts])
                # skipping: only cells centred in a candidate block (independent of tiling and windows)
                keep = _in_marked_block(plan, cw)
                # safety net: drop cells that duplicate an already emitted seam cell
                near = _near_core_edge(cw, t, dedupe_r * 2)
                if len(seam_pts) and near.any():
                    from scipy.spatial import cKDTree
                    d, _ = cKDTree(seam_pts).query(cw[near], k=1)
                    keep[np.nonzero(near)[0][d < dedupe_r]] = False
                # and within the tile itself (NMS already did this; cheap to be sure)
                kk = dedupe_points(cw, s0, dedupe_r)
                mask = np.zeros(len(c0), bool)
                mask[kk] = True
                keep &= mask
                if near.any():
                    seam_pts = np.concatenate([seam_pts, cw[near & keep]])
                cents.append(c0[keep])
                polys.extend(list(p0[keep]))
                scores.append(s0[keep])
            done += len(batch)
            c = np.concatenate(cents) if cents else np.zeros((0, 2))
            s = np.concatenate(scores) if scores else np.zeros(0, np.float32)
            n_cells += len(s)
            chunk = CellTable.from_detections(c, polys, s, plan.slide.mpp,
                                              {**meta, "tiles_done": done, "windows_run": n_windows,
                                               "px_run": px_run})
            emit(progress, "detect", done, total, cells=n_cells, message=f"tile {done}/{total}",
                 data={"chunk": chunk})
            yield chunk
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _near_core_edge(points_w: np.ndarray, tile, margin: float) -> np.ndarray:
    y0, x0, y1, x1 = tile.core
    p = np.asarray(points_w)
    return ((p[:, 0] - y0 < margin) | (y1 - p[:, 0] < margin) | (p[:, 1] - x0 < margin) | (x1 - p[:, 1] < margin))


def detect_cells(slide, detector=None, *, tile_size: int = 1024, batch_size: int = 4, region=None,
                 skip_empty: bool = True, progress=None, cancel=None, device: str = "auto",
                 mpp: Optional[float] = None, prob_thresh: Optional[float] = None,
                 nms_thresh: Optional[float] = None, windows: "bool | str" = True) -> CellTable:
    """Find every white blood cell of a slide (or region) as a star-convex polygon.

    Parameters
    ----------
    slide : leukcore.io.Slide, path, or (Y, X, 3) uint8 array
        A whole slide or a single field.
    detector : Detector, model name or card path, optional
        Default: the shipped ``wbc-stardist``.
    tile_size : int
        Core edge of a tile at the working resolution (pixels).
    batch_size : int
        Tiles per forward pass.
    region : (y0, x0, y1, x1), optional
        Level-0 pixels; default the whole slide.
    skip_empty : bool
        Run the network only on tiles near a nucleated-cell colour signal.
    progress : callable, optional
        Receives :class:`~leukcore.progress.ProgressEvent` (stage ``"detect"``, tiles done / total).
    cancel : CancelToken or callable, optional
        Checked between batches; a cancelled run returns the cells found so far with
        ``meta["partial"] = True``.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda[:N]"`` (used when ``detector`` is loaded here).
    mpp : float, optional
        Override the slide's pixel size; without one and without metadata it is
        estimated from the red cells (estimate and spread in ``meta["mpp_estimate"]``).
    windows : bool or str
        With ``skip_empty``: inside each tile run the network only on sub-windows around the
        candidate blocks (fewer pixels on sparse slides, same cells); ``False`` runs candidate
        tiles whole and keeps every cell of their cores.  ``"tight"``: smaller blocks and a window
        margin of the network's receptive field only (per-cell windows on dense slides; cells may
        rarely differ from whole tiles, see :data:`TIGHT_MARGIN`).

    Returns
    -------
    CellTable
        Polygons and centroids in level-0 pixels, ids sorted (y, then x).
        Meta: ``partial``, ``mpp``, ``mpp_source``, ``detector``, ``n_tiles``, ``timings``...
    """
    t0 = time.perf_counter()
    chunks = []
    partial = False
    for ch in iter_detect(slide, detector, tile_size=tile_size, batch_size=batch_size, region=region,
                          skip_empty=skip_empty, progress=progress, cancel=cancel, device=device, mpp=mpp,
                          prob_thresh=prob_thresh, nms_thresh=nms_thresh, windows=windows):
        partial = partial or bool(ch.meta.get("partial"))
        chunks.append(ch)
    meta = dict(chunks[-1].meta) if chunks else {}
    meta["partial"] = partial
    meta["timings"] = {"detect_s": time.perf_counter() - t0}
    meta.pop("tiles_done", None)
    if partial:
        meta["tiles_done"] = chunks[-1].meta.get("tiles_done")
    table = CellTable.concat(chunks, meta=meta)
    return table.sorted()
