"""Planning a whole-slide detection: pixel size, working level, tile grid, candidate blocks and windows.

:func:`plan_detection` decides everything before the first tile is read (steps 1-4 of
:mod:`leukcore.detect.predict`); :func:`tile_windows` cuts a planned tile into the sub-windows the network runs on.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..regions import clip_region
from ..tiling import GridFrame, Tile, TileGrid, points_in_blocks
from .candidates import candidate_blocks
from .receptive import window_halo

__all__ = [
    "DetectionPlan",
    "plan_detection",
    "tile_windows",
    "in_marked_block",
    "as_slide",
    "resolve_mpp",
    "WINDOW_BLOCK",
    "WINDOW_MAX_SHARE",
    "TIGHT_BLOCK",
    "TIGHT_RADIUS_UM",
    "WINDOW_MODES",
    "DEFAULT_WINDOWS",
]

#: edge (working px) of the candidate blocks; sub-windows are unions of blocks (a divisor of the tile edge
#: is used when the tile is not a multiple of it)
WINDOW_BLOCK = 32
#: a tile whose sub-windows would read more than this share of its read box runs whole
WINDOW_MAX_SHARE = 0.75
#: ``windows="tight"``: candidate-block edge (working px).  The window margin is only the network's measured
#: receptive field (:data:`~leukcore.detect.receptive.TIGHT_MARGIN`), not the half cell of the exact windows,
#: so a window costs ~(core + 2 x 28)^2 instead of ~(core + 2 x 52)^2 pixels: per-cell windows pay off on dense
#: slides.  Maps in a window core stay exact (the margin still exceeds the receptive field); only a neighbour
#: candidate beyond the core can see slightly different maps than in the whole tile.  8 px (4 um) blocks
#: rather than 16: cores hug the cells (leukaemic 4,000 px smear: 9.25 -> 8.25 network MP, the same cells).
TIGHT_BLOCK = 8
#: ``windows="tight"``: a block is a candidate when a nucleus-colour pixel lies within this distance (um,
#: Chebyshev) of it: a white cell's centroid lies within a few um of its nucleus (exact windows: half the
#: tile halo, ~16 um).  7 um: the smallest radius that loses no cell of the full path on the normal and
#: leukaemic smears (6 um lost 1 of 457; docs/detection.md, issue 17), none of the validation field mosaics'
#: annotated cells (four-class, BCCD, PBC, as published and re-stained) down to 3 um; on the dense 6,000 px
#: field mosaic it drops one of 1,495 detections (a purple fragment in debris; 8 um keeps it).
TIGHT_RADIUS_UM = 7.0
#: accepted values of ``windows``
WINDOW_MODES = (True, False, "exact", "tight")
#: what ``windows=True`` (the default) means
DEFAULT_WINDOWS = "tight"


@dataclass
class DetectionPlan:
    """Everything decided before the first tile is read."""

    slide: Any
    level: int
    scale: float  # level px per working px (1.0 = no resampling)
    ds: float  # level-0 px per working px
    origin: tuple  # region (y0, x0) in level-0 px
    grid: TileGrid
    run: np.ndarray  # bool per tile: run the network on it
    bg: np.ndarray  # background colour (RGB) for normalisation
    mpp_info: dict
    working_mpp: float
    region: tuple
    timings: dict = field(default_factory=dict)
    #: the slide's colour map when the model normalises stain (:mod:`leukcore.detect.stain`), else None
    stain: Optional[Any] = None
    #: bool (rows, cols) map of candidate blocks over the working grid (None: no skipping)
    blocks: Optional[np.ndarray] = None
    #: block edge in working px (divides ``grid.tile``)
    block: int = 0
    #: run sub-windows around candidate blocks inside a tile (else whole tiles)
    windows: bool = True
    #: ``"exact"`` (margin: half the largest cell + receptive field) or ``"tight"`` (receptive field + 4 px,
    #: 8 px blocks); ``""`` without windows
    window_mode: str = "exact"
    #: margin (working px) read around a sub-window's core: a cell radius plus the network's
    #: receptive-field radius (0: the grid halo)
    window_halo: int = 0

    @property
    def frame(self) -> GridFrame:
        """Where the working grid lies on level 0."""
        return GridFrame(self.origin, self.ds)

    def to_level0(self, pts: np.ndarray) -> np.ndarray:
        """Working-grid (y, x) -> level-0 (y, x) (pixel-centre convention, :class:`~leukcore.tiling.GridFrame`)."""
        return self.frame.to_level0(pts)


def as_slide(slide, mpp=None):
    """A :class:`~leukcore.io.Slide` of a slide, a path or an RGB uint8 array (``mpp``: the array's pixel size)."""
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


def resolve_mpp(slide, mpp, detector=None):
    """``(slide with its pixel size, mpp record)``: ``mpp`` given, else the slide's, else estimated.

    The estimate is :func:`leukcore.mpp.estimate_mpp`'s; with ``detector``, a disagreement of its two
    rulers is settled by the detector (:func:`leukcore.detect.scale.settle_disagreement`).
    """
    if mpp is not None:
        slide = slide.with_mpp(float(mpp), "user")
        return slide, {"value": float(mpp), "source": "user", "spread": None, "n_cells": None}
    if slide.mpp:
        return slide, {
            "value": float(slide.mpp),
            "source": slide.mpp_source or "metadata",
            "spread": None,
            "n_cells": None,
        }
    from ..mpp import MppError
    from .scale import estimate_slide_mpp

    try:
        est = estimate_slide_mpp(slide, detector)
    except MppError as e:
        raise ValueError(str(e)) from None
    slide = slide.with_mpp(est.mpp, "estimated")
    return slide, {
        "value": float(est.mpp),
        "source": "estimated",
        "spread": float(est.spread),
        "n_cells": int(est.n_cells),
        "method": est.method,
        "reliable": bool(est.reliable),
        "reason": est.reason,
    }


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
    return plan.grid.windows(tile, plan.blocks, plan.block, plan.window_halo or plan.grid.halo, WINDOW_MAX_SHARE)


def in_marked_block(plan: DetectionPlan, pts_w: np.ndarray) -> np.ndarray:
    """Bool per working-grid point: it lies in a marked candidate block (True when not skipping)."""
    if plan.blocks is None or not plan.windows:
        return np.ones(len(pts_w), bool)
    return points_in_blocks(pts_w, plan.blocks, plan.block)


def _slide_colours(slide, detector) -> tuple:
    """The glass colour and, for a model that normalises stain, the slide's colour map: one thumbnail read."""
    from .colour import background_color

    th = slide.thumbnail(1024)
    bg = background_color(th) if th.size else np.full(3, 255.0, np.float32)
    stain = detector.stain_normalizer(th, bg) if getattr(detector, "stain_template", None) is not None else None
    return bg, stain


def plan_detection(
    slide,
    detector,
    *,
    tile_size: int = 1024,
    region=None,
    skip_empty: bool = True,
    mpp: Optional[float] = None,
    windows: "bool | str" = True,
) -> DetectionPlan:
    """Decide pixel size, working level, tile grid, candidate blocks and which tiles to run (no network yet).

    ``windows`` (with ``skip_empty``): inside a tile run the network only on sub-windows around
    the candidate blocks (:func:`tile_windows`); ``False`` runs every candidate tile whole.
    ``"exact"``: window margin = half the largest cell + the receptive field (the cells are those of
    whole tiles); ``"tight"``: 8 px candidate blocks, a 7 um nucleus-to-centroid radius and a margin
    of the receptive field + 4 px (per-cell windows; see :data:`TIGHT_MARGIN`); ``True``:
    :data:`DEFAULT_WINDOWS`.
    """
    if windows not in WINDOW_MODES:
        raise ValueError(f"windows must be one of {WINDOW_MODES}, got {windows!r}")
    tight = (DEFAULT_WINDOWS if windows is True else windows) == "tight"
    t0 = time.perf_counter()
    slide, mpp_info = resolve_mpp(slide, mpp, detector)
    if min(slide.shape) <= 0:
        raise ValueError(f"{slide.path or 'slide'}: empty slide (shape {slide.shape})")
    reg = clip_region(region, slide.shape)
    ds_want = detector.mpp / slide.mpp  # level-0 px per working px
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
    bg, stain = _slide_colours(slide, detector)
    plan = DetectionPlan(
        slide=slide,
        level=lvl,
        scale=scale,
        ds=ds,
        origin=(reg[0], reg[1]),
        grid=grid,
        run=np.ones(len(grid), bool),
        bg=bg,
        stain=stain,
        mpp_info=mpp_info,
        working_mpp=float(ds * slide.mpp),
        region=reg,
        block=grid.block_edge(TIGHT_BLOCK if tight else WINDOW_BLOCK),
        windows=bool(windows),
        window_mode=("tight" if tight else "exact") if windows else "",
    )
    if skip_empty:
        if windows:
            plan.window_halo = window_halo(detector, grid, halo_px, tight=tight)
        plan.blocks = candidate_blocks(plan, slide, radius=TIGHT_RADIUS_UM / plan.working_mpp if tight else None)
        plan.run = grid.tiles_with_blocks(plan.blocks, plan.block)
    plan.timings["plan_s"] = time.perf_counter() - t0
    return plan
