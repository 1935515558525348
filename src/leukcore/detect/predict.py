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
   candidate *blocks* (:data:`~leukcore.detect.plan.WINDOW_BLOCK` working px) within a cell radius of a
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

import functools
import time
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from ..progress import emit, is_cancelled
from ..results import CellTable
from ..tiling import SeamGuard, Tile, box_union, dedupe_points
from .plan import (  # noqa: F401 (re-exported: the names of earlier versions)
    DEFAULT_WINDOWS,
    TIGHT_BLOCK,
    TIGHT_RADIUS_UM,
    WINDOW_BLOCK,
    WINDOW_MAX_SHARE,
    WINDOW_MODES,
    DetectionPlan,
    as_slide,
    in_marked_block,
    plan_detection,
    tile_windows,
)
from .postprocess import instances_from_maps, polygon_centroid
from .reading import Prefetch, read_working
from .receptive import TIGHT_MARGIN, predict_in_strips, receptive_radius, window_halo  # noqa: F401 (re-exported)

__all__ = [
    "detect_cells",
    "iter_detect",
    "plan_detection",
    "DetectionPlan",
    "DetectOptions",
    "tile_windows",
    "predict_in_strips",
]

#: most working pixels per forward pass (memory bound: a 1152 px tile needs ~0.8 GB on CPU)
MAX_FORWARD_PX = {"cpu": 1.4e6, "cuda": 64e6}


def _read_tile(plan: DetectionPlan, t) -> list:
    """One tile's list of (window, normalised pixels).  One read of the windows' bounding box, but only the
    windows' pixels are normalised (per pixel, so the values do not depend on the box).
    """
    from .inputs import normalize_image

    wins = tile_windows(plan, t)
    if not wins:
        return []
    box = wins[0].read
    for w in wins[1:]:
        box = box_union(box, w.read)
    raw = read_working(plan, box)
    return [
        (
            w,
            normalize_image(
                raw[w.read[0] - box[0] : w.read[2] - box[0], w.read[1] - box[1] : w.read[3] - box[1]],
                plan.bg,
                plan.stain,
            ),
        )
        for w in wins
    ]


def _dedupe_radius(detector, plan: DetectionPlan) -> float:
    """Working-px distance under which two detections are one cell (12.5 % of the largest cell)."""
    return 0.25 * detector.max_cell_um / plan.working_mpp


def _tile_cells(plan: DetectionPlan, detector, tile, prob, dist, prob_thresh, nms_thresh, dedupe_r):
    """Cells owned by one tile: (level-0 centroids, level-0 polygons, scores, working centres)."""
    ry0, rx0 = tile.read[0], tile.read[1]
    pts, scores, polys = instances_from_maps(
        prob,
        dist,
        prob_thresh=prob_thresh,
        nms_thresh=nms_thresh,
        min_area=detector.min_area_px,
        origin=(ry0, rx0),
        dist_logits=getattr(detector, "dist_logits", False),
    )
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


@dataclass(frozen=True)
class DetectOptions:
    """The settings of one detection run (the keyword arguments of :func:`detect_cells` / :func:`iter_detect`).

    Attributes
    ----------
    tile_size : int
        Core edge of a tile at the working resolution (pixels).
    batch_size : int
        Tiles per batch (progress, cancel and chunks are per batch).
    region : (y0, x0, y1, x1), optional
        Level-0 pixels; default the whole slide.
    skip_empty : bool
        Run the network only near a nucleated-cell colour signal.
    windows : bool or str
        Sub-windows inside tiles (``True`` = :data:`DEFAULT_WINDOWS`, ``"exact"``, ``"tight"``, ``False``).
    device, backend, threads :
        Used when the detector is loaded here (a name, a card): :meth:`Detector.load`'s arguments.
    mpp : float, optional
        Level-0 pixel size overriding the slide's.
    prob_thresh, nms_thresh : float, optional
        Override the detector card's thresholds.
    """

    tile_size: int = 1024
    batch_size: int = 4
    region: Optional[tuple] = None
    skip_empty: bool = True
    windows: "bool | str" = True
    device: str = "auto"
    backend: str = "auto"
    threads: Optional[int] = None
    mpp: Optional[float] = None
    prob_thresh: Optional[float] = None
    nms_thresh: Optional[float] = None

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def _load_detector(detector, opts: DetectOptions):
    """A loaded detector: ``detector`` itself, or the named / carded one loaded with ``opts``' device,
    backend and threads.
    """
    if detector is None or isinstance(detector, (str, dict)) or hasattr(detector, "__fspath__"):
        from .model import Detector

        return Detector.load(detector or "wbc-stardist", device=opts.device, backend=opts.backend, threads=opts.threads)
    return detector


def _run_meta(plan: DetectionPlan, detector, skip_empty: bool) -> dict:
    """What every chunk of a run says about it."""
    return {
        "mpp": plan.slide.mpp,
        "mpp_source": plan.mpp_info["source"],
        "mpp_estimate": plan.mpp_info,
        "detector": detector.info(),
        "n_tiles": len(plan.grid),
        "tiles_run": int(plan.run.sum()),
        "tile_size": plan.grid.tile,
        "halo": plan.grid.halo,
        "working_mpp": plan.working_mpp,
        "level": plan.level,
        "region": list(plan.region),
        "skip_empty": bool(skip_empty),
        "shape": list(plan.slide.shape),
        "slide": plan.slide.path,
        "block": plan.block,
        "windows": bool(plan.windows and plan.blocks is not None),
        "window_halo": plan.window_halo,
        "window_mode": plan.window_mode * (plan.blocks is not None),
        "stain": plan.stain and plan.stain.describe(),
    }


#: a group of windows with fewer working pixels than this runs on one core, side by side with others (per-cell
#: windows: ~170 px squares); larger inputs (whole tiles) run one at a time on every core
SIDE_BY_SIDE_PX = 512 * 512


def _side_by_side_parts(group: list) -> list:
    """A group of same-shape windows cut into parts of at most :data:`SIDE_BY_SIDE_PX` (whole tiles stay whole)."""
    px = group[0][1].shape[0] * group[0][1].shape[1]
    if px > SIDE_BY_SIDE_PX:
        return [group]
    per = max(1, SIDE_BY_SIDE_PX // px)
    return [group[i : i + per] for i in range(0, len(group), per)]


class _DetectRun:
    """One run over a plan: batches through the network, the cells each tile owns, seams, counters."""

    def __init__(self, plan: DetectionPlan, detector, opts: DetectOptions):
        self.plan, self.detector = plan, detector
        self.pt = detector.prob_thresh if opts.prob_thresh is None else float(opts.prob_thresh)
        self.nt = detector.nms_thresh if opts.nms_thresh is None else float(opts.nms_thresh)
        self.dedupe_r = _dedupe_radius(detector, plan)
        self.seams = SeamGuard(self.dedupe_r)
        dev_type = getattr(getattr(detector, "device", None), "type", "cpu")
        self.budget = MAX_FORWARD_PX.get(dev_type, MAX_FORWARD_PX["cpu"])
        self.meta = _run_meta(plan, detector, opts.skip_empty)
        self.done = self.n_cells = self.n_windows = self.px_run = 0

    def chunk(self, cents=(), polys=(), scores=(), **extra) -> CellTable:
        c = np.concatenate(cents) if len(cents) else np.zeros((0, 2))
        s = np.concatenate(scores) if len(scores) else np.zeros(0, np.float32)
        return CellTable.from_detections(
            c,
            list(polys),
            s,
            self.plan.slide.mpp,
            {**self.meta, **extra, "windows_run": self.n_windows, "px_run": self.px_run},
        )

    def forward_groups(self, arrays: list) -> list:
        """Windows of one shape (from any tile of the batch) in groups that go through the network together,
        each within the pixel budget (CPU: ~1 large tile at a time; the output alone is n_rays floats a pixel).
        """
        shapes: dict = {}
        for wins in arrays:
            for w, a in wins:
                shapes.setdefault(a.shape, []).append((w, a))
                self.n_windows += 1
                self.px_run += a.shape[0] * a.shape[1]
        groups = []
        for group in shapes.values():
            per = max(1, int(self.budget // (group[0][1].shape[0] * group[0][1].shape[1])))
            groups += [group[i : i + per] for i in range(0, len(group), per)]
        return groups

    def group_cells(self, group: list, one_core: bool = False) -> list:
        """``(window, cells)`` of one group of same-shape windows: maps, then NMS and ownership per window."""
        det = self.detector
        raw = getattr(det, "predict_maps_raw", None)  # distance logits where the detector gives them
        maps = det.predict_maps if raw is None else functools.partial(raw, one_core=one_core)
        if len(group) == 1:
            prob, dist = predict_in_strips(det, group[0][1], self.budget, predict=maps)
        else:
            prob, dist = maps(np.stack([a for _, a in group]))
        return [
            (w, _tile_cells(self.plan, det, w, prob[j], dist[j], self.pt, self.nt, self.dedupe_r))
            for j, (w, _) in enumerate(group)
        ]

    def found_cells(self, arrays: list) -> dict:
        """Tile index -> the cells each of its windows owns (:func:`_tile_cells` tuples).

        Groups of small windows (under :data:`SIDE_BY_SIDE_PX`) go through the network side by side, one per
        core (:meth:`~leukcore.detect.model.Detector.map_workers`); larger ones one at a time on every core.
        Results are gathered in the groups' order, so the cells do not depend on the thread count.
        """
        groups = self.forward_groups(arrays)
        workers = self.detector.map_workers() if hasattr(self.detector, "map_workers") else 1
        if workers > 1:
            groups = [part for g in groups for part in _side_by_side_parts(g)]
        small = [sum(a.size // 3 for _, a in g) <= SIDE_BY_SIDE_PX for g in groups]
        results: list = [None] * len(groups)
        if workers > 1 and sum(small) > 1:
            from concurrent.futures import ThreadPoolExecutor

            idx = [i for i, s in enumerate(small) if s]
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="leuk-windows") as ex:
                for i, res in zip(idx, ex.map(lambda i: self.group_cells(groups[i], True), idx), strict=True):
                    results[i] = res
        for i, g in enumerate(groups):
            if results[i] is None:
                results[i] = self.group_cells(g)
        found: dict = {}
        for res in results:
            for w, cells in res:
                if cells is not None:
                    found.setdefault(w.index, []).append(cells)
        return found

    def keep_tile(self, tile: Tile, parts: list):
        """A tile's cells after the skipping rule, the seam safety net and a within-tile de-duplication."""
        c0, p0, s0, cw = (np.concatenate([r[k] for r in parts]) for k in range(4))
        # skipping: only cells centred in a candidate block (independent of tiling and windows)
        keep = in_marked_block(self.plan, cw)
        # within the tile itself (NMS already did this; cheap to be sure)
        mask = np.zeros(len(c0), bool)
        mask[dedupe_points(cw, s0, self.dedupe_r)] = True
        # safety net: drop cells that duplicate an already emitted seam cell
        keep = self.seams.keep(tile, cw, keep & mask)
        return c0[keep], list(p0[keep]), s0[keep]

    def batch_chunk(self, batch: list, arrays: list) -> CellTable:
        found = self.found_cells(arrays)
        cents, polys, scores = [], [], []
        for t in batch:
            if found.get(t.index):
                c, p, s = self.keep_tile(t, found[t.index])
                cents.append(c)
                polys.extend(p)
                scores.append(s)
        self.done += len(batch)
        self.n_cells += sum(len(s) for s in scores)
        return self.chunk(cents, polys, scores, tiles_done=self.done)


def iter_detect(
    slide, detector=None, *, progress=None, cancel=None, plan: Optional[DetectionPlan] = None, **options
) -> Iterator[CellTable]:
    """Detect cells batch by batch; yields one :class:`CellTable` per finished batch of tiles.

    ``options`` are :class:`DetectOptions` (those of :func:`detect_cells`); ``plan`` a ready
    :func:`plan_detection`.  Chunks carry provisional ids; the caller assigns final ids
    (``CellTable.concat(...).sorted()``).  A cancelled run yields a last (possibly empty) chunk with
    ``meta["partial"] = True``.  Every chunk's meta holds ``mpp``, ``mpp_source``, ``detector``, ``n_tiles``,
    ``tiles_run`` and ``working_mpp``, and the running totals ``windows_run`` (network inputs) and
    ``px_run`` (working pixels through the network).
    """
    opts = DetectOptions(**options)
    detector = _load_detector(detector, opts)
    slide = as_slide(slide, opts.mpp)
    if plan is None:
        plan = plan_detection(
            slide,
            detector,
            tile_size=opts.tile_size,
            region=opts.region,
            skip_empty=opts.skip_empty,
            mpp=opts.mpp,
            windows=opts.windows,
        )
    run = _DetectRun(plan, detector, opts)
    tiles = [t for t in plan.grid if plan.run[t.index]]
    batches = [tiles[i : i + opts.batch_size] for i in range(0, len(tiles), opts.batch_size)]
    total = len(tiles)
    emit(progress, "detect", 0, total, cells=0, message=f"{total} of {len(plan.grid)} tiles to run")
    if not batches:
        yield run.chunk()
        return
    reader = Prefetch(functools.partial(_read_tile, plan), batches, workers=getattr(detector, "threads", 1))
    try:
        for batch in batches:
            if is_cancelled(cancel):
                yield run.chunk(partial=True, tiles_done=run.done)
                return
            chunk = run.batch_chunk(batch, reader.next())
            emit(
                progress,
                "detect",
                run.done,
                total,
                cells=run.n_cells,
                message=f"tile {run.done}/{total}",
                data={"chunk": chunk},
            )
            yield chunk
    finally:
        reader.close()


def detect_cells(slide, detector=None, *, progress=None, cancel=None, **options) -> CellTable:
    """Find every white blood cell of a slide (or region) as a star-convex polygon.

    Parameters
    ----------
    slide : leukcore.io.Slide, path, or (Y, X, 3) uint8 array
        A whole slide or a single field.
    detector : Detector, model name or card path, optional
        Default: the shipped ``wbc-stardist`` (loaded with ``device``, ``backend``, ``threads``).
    progress : callable, optional
        Receives :class:`~leukcore.progress.ProgressEvent` (stage ``"detect"``, tiles done / total).
    cancel : CancelToken or callable, optional
        Checked between batches; a cancelled run returns the cells found so far with
        ``meta["partial"] = True``.
    **options
        :class:`DetectOptions`: ``tile_size`` (1024), ``batch_size`` (4), ``region`` (level-0
        ``(y0, x0, y1, x1)``), ``skip_empty`` (True: run the network only near a nucleated-cell colour
        signal), ``windows`` (True: inside each tile only sub-windows around the candidate blocks,
        :data:`DEFAULT_WINDOWS`; ``"exact"`` windows find the cells of whole tiles, ``"tight"`` per-cell
        windows with a margin of the network's receptive field, see :data:`TIGHT_MARGIN`; ``False`` runs
        candidate tiles whole), ``device`` / ``backend`` / ``threads`` (when the detector is loaded here),
        ``mpp`` (overrides the slide's pixel size; without one and without metadata it is estimated from the
        red cells, estimate and spread in ``meta["mpp_estimate"]``), ``prob_thresh``, ``nms_thresh``.

    Returns
    -------
    CellTable
        Polygons and centroids in level-0 pixels, ids sorted (y, then x).
        Meta: ``partial``, ``mpp``, ``mpp_source``, ``detector``, ``n_tiles``, ``timings``...
    """
    t0 = time.perf_counter()
    chunks = []
    partial = False
    for ch in iter_detect(slide, detector, progress=progress, cancel=cancel, **options):
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
