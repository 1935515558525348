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
   candidate tiles; only tiles near candidates are run.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np

from ..progress import emit, is_cancelled
from ..results import CellTable
from ..tiling import TileGrid, dedupe_points
from .postprocess import instances_from_maps, polygon_centroid

__all__ = ["detect_cells", "iter_detect", "plan_detection", "DetectionPlan"]

#: colour-measure threshold (white-balanced min(B-G, R-G)-style purple measure) for candidate pixels
SKIP_THRESH = 18.0
#: pixel size (um) at which candidates are searched
SKIP_MPP = 2.0
#: most working pixels per forward pass (memory bound: a 1152 px tile needs ~0.8 GB on CPU)
MAX_FORWARD_PX = {"cpu": 1.4e6, "cuda": 64e6}


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
                   "n_cells": int(est.n_cells)}


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


def _candidate_tiles(plan: DetectionPlan, slide, thresh: float = SKIP_THRESH) -> np.ndarray:
    """Bool per tile: a nucleated-cell colour signal lies within a cell radius of its core."""
    from skimage.measure import block_reduce

    grid = plan.grid
    run = np.zeros(len(grid), bool)
    want = SKIP_MPP / slide.mpp                       # level-0 px per candidate px
    lvl = slide.best_level_for_downsample(max(want, 1.0))
    lds = slide.downsamples[lvl]
    k = max(1, int(round(want / lds)))                # further block reduction
    y0, x0, y1, x1 = plan.region
    LH, LW = slide.level_shape(lvl)
    ly0, lx0 = int(math.floor(y0 / lds)), int(math.floor(x0 / lds))
    ly1, lx1 = min(LH, int(math.ceil(y1 / lds))), min(LW, int(math.ceil(x1 / lds)))
    bg = plan.bg.reshape(1, 1, 3)
    rad = plan.grid.halo / 2.0                        # working px: a cell radius is well within
    chunk = 2048 * k
    for cy in range(ly0, ly1, chunk):
        for cx in range(lx0, lx1, chunk):
            h, w = min(chunk, ly1 - cy), min(chunk, lx1 - cx)
            a = slide.read_region(lvl, cy, cx, h, w).astype(np.float32)
            a = a / bg * 255.0
            meas = np.minimum(a[..., 2] - a[..., 1], a[..., 0] - a[..., 1])
            m = meas > thresh
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
            t = grid.tile
            r0 = np.clip(np.floor((wy - half) / t).astype(int), 0, grid.n_rows - 1)
            r1 = np.clip(np.floor((wy + half) / t).astype(int), 0, grid.n_rows - 1)
            c0 = np.clip(np.floor((wx - half) / t).astype(int), 0, grid.n_cols - 1)
            c1 = np.clip(np.floor((wx + half) / t).astype(int), 0, grid.n_cols - 1)
            for a0, a1, b0, b1 in set(zip(r0.tolist(), r1.tolist(), c0.tolist(), c1.tolist())):
                for r in range(a0, a1 + 1):
                    run[r * grid.n_cols + b0:r * grid.n_cols + b1 + 1] = True
    return run


def _slide_background(slide) -> np.ndarray:
    from .data import background_color

    th = slide.thumbnail(1024)
    if th.size == 0:
        return np.full(3, 255.0, np.float32)
    return background_color(th)


def plan_detection(slide, detector, *, tile_size: int = 1024, region=None, skip_empty: bool = True,
                   mpp: Optional[float] = None) -> DetectionPlan:
    """Decide pixel size, working level, tile grid and which tiles to run (no network yet)."""
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
                         working_mpp=float(ds * slide.mpp), region=reg)
    if skip_empty:
        plan.run = _candidate_tiles(plan, slide)
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
    from .data import normalize_image

    return [normalize_image(_read_tile(plan, t.read), plan.bg) for t in tiles]


def _tile_cells(plan: DetectionPlan, detector, tile, prob, dist, prob_thresh, nms_thresh):
    """Cells owned by one tile: (level-0 centroids, level-0 polygons, scores, working centres)."""
    pts, scores, polys = instances_from_maps(prob, dist, prob_thresh=prob_thresh, nms_thresh=nms_thresh,
                                             min_area=detector.min_area_px)
    if len(pts) == 0:
        return None
    ry0, rx0 = tile.read[0], tile.read[1]
    centres = np.stack([polygon_centroid(p) for p in polys]) + (ry0, rx0)
    own = tile.owns(centres)
    if not own.any():
        return None
    polys_w = polys[own] + np.array([ry0, rx0], np.float32)
    return (plan.to_level0(centres[own]), plan.to_level0(polys_w).astype(np.float32), scores[own], centres[own])


def iter_detect(slide, detector=None, *, tile_size: int = 1024, batch_size: int = 4, region=None,
                skip_empty: bool = True, progress=None, cancel=None, device: str = "auto",
                mpp: Optional[float] = None, prob_thresh: Optional[float] = None,
                nms_thresh: Optional[float] = None, plan: Optional[DetectionPlan] = None
                ) -> Iterator[CellTable]:
    """Detect cells batch by batch; yields one :class:`CellTable` per finished batch of tiles.

    Parameters are those of :func:`detect_cells`.  Chunks carry provisional ids;
    the caller assigns final ids (``CellTable.concat(...).sorted()``).  A
    cancelled run yields a last (possibly empty) chunk with ``meta["partial"] = True``.
    Every chunk's meta holds ``mpp``, ``mpp_source``, ``detector``, ``n_tiles``,
    ``tiles_run`` and ``working_mpp``.
    """
    from .model import Detector

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if detector is None or isinstance(detector, (str, dict)) or hasattr(detector, "__fspath__"):
        detector = Detector.load(detector or "wbc-stardist", device=device)
    slide = _as_slide(slide, mpp)
    if plan is None:
        plan = plan_detection(slide, detector, tile_size=tile_size, region=region, skip_empty=skip_empty, mpp=mpp)
    pt = detector.prob_thresh if prob_thresh is None else float(prob_thresh)
    nt = detector.nms_thresh if nms_thresh is None else float(nms_thresh)
    tiles = [t for t in plan.grid if plan.run[t.index]]
    batches = [tiles[i:i + batch_size] for i in range(0, len(tiles), batch_size)]
    total = len(tiles)
    meta = {"mpp": plan.slide.mpp, "mpp_source": plan.mpp_info["source"], "mpp_estimate": plan.mpp_info,
            "detector": detector.info(), "n_tiles": len(plan.grid), "tiles_run": total,
            "tile_size": plan.grid.tile, "halo": plan.grid.halo, "working_mpp": plan.working_mpp,
            "level": plan.level, "region": list(plan.region), "skip_empty": bool(skip_empty),
            "shape": list(plan.slide.shape), "slide": plan.slide.path}
    # seam safety net: working-grid centres of cells already emitted near a core edge
    dedupe_r = 0.25 * detector.max_cell_um / plan.working_mpp
    seam_pts = np.zeros((0, 2))
    seam_sc = np.zeros(0)
    done = n_cells = 0
    emit(progress, "detect", 0, total, cells=0, message=f"{total} of {len(plan.grid)} tiles to run")
    if not batches:
        yield CellTable.from_detections(np.zeros((0, 2)), [], np.zeros(0), plan.slide.mpp, meta)
        return
    dev_type = getattr(getattr(detector, "device", None), "type", "cpu")
    budget = MAX_FORWARD_PX.get(dev_type, MAX_FORWARD_PX["cpu"])
    ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leukcore-read")
    try:
        fut = ex.submit(_read_batch, plan, batches[0])
        for bi, batch in enumerate(batches):
            if is_cancelled(cancel):
                yield CellTable.from_detections(np.zeros((0, 2)), [], np.zeros(0), plan.slide.mpp,
                                                {**meta, "partial": True, "tiles_done": done})
                return
            arrays = fut.result()
            if bi + 1 < len(batches):
                fut = ex.submit(_read_batch, plan, batches[bi + 1])
            cents, polys, scores = [], [], []
            # tiles of one shape go through the network together
            shapes: dict = {}
            for t, a in zip(batch, arrays):
                shapes.setdefault(a.shape, []).append((t, a))
            subgroups = []
            for group in shapes.values():
                # pixel budget per forward pass keeps peak memory flat (CPU: ~1 large tile at a time;
                # the output alone is n_rays floats per pixel)
                per = max(1, int(budget // (group[0][1].shape[0] * group[0][1].shape[1])))
                subgroups += [group[i:i + per] for i in range(0, len(group), per)]
            for group in subgroups:
                prob, dist = detector.predict_maps(np.stack([a for _, a in group]))
                for j, (t, _) in enumerate(group):
                    res = _tile_cells(plan, detector, t, prob[j], dist[j], pt, nt)
                    if res is None:
                        continue
                    c0, p0, s0, cw = res
                    # safety net: drop cells that duplicate an already emitted seam cell
                    near = _near_core_edge(cw, t, dedupe_r * 2)
                    keep = np.ones(len(c0), bool)
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
                        seam_sc = np.concatenate([seam_sc, s0[near & keep]])
                    cents.append(c0[keep])
                    polys.extend(list(p0[keep]))
                    scores.append(s0[keep])
            done += len(batch)
            c = np.concatenate(cents) if cents else np.zeros((0, 2))
            s = np.concatenate(scores) if scores else np.zeros(0, np.float32)
            n_cells += len(s)
            chunk = CellTable.from_detections(c, polys, s, plan.slide.mpp, {**meta, "tiles_done": done})
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
                 nms_thresh: Optional[float] = None) -> CellTable:
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
                          prob_thresh=prob_thresh, nms_thresh=nms_thresh):
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
