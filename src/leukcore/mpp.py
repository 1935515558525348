"""Estimate the pixel size (microns per pixel) of a smear: two rulers and a reliability verdict.

Fields and many slides carry no pixel size.  :func:`estimate_mpp` is the one entry point; it
reads two rulers and says whether to trust the answer:

``scalenet`` (the default ruler, ``method="auto"``)
    A small CNN (:mod:`leukcore.mpp_net`, model ``mpp-scalenet``) reads the pixel size from
    64 px windows, coarse to fine over a pyramid, each window weighted by its own predicted
    uncertainty.  Trained with continuous scale augmentation on three sources (four-class
    fields, BCCD, PBC) and strong stain / glass / blur / JPEG augmentation.
``rbc-diameter`` (``method="rbc"``; the cross-check in ``auto``)
    A normal red cell is about 7.5 um across, so the dominant mode of the inscribed diameters
    of the red cells gives ``mpp = 7.5 / median_diameter_px``.  Good on large fields with many
    clean red cells; scatters on small or crowded fields.

Reliability (``MppEstimate.reliable`` and ``reason``): the estimate is flagged unreliable when
there are too few cues (few informative windows or red cells), when the windows disagree (spread
too large), or when a confident red-cell ruler disagrees with the network.  A blank image (nothing
to measure) raises :class:`MppError`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

__all__ = [
    "MppEstimate",
    "estimate_mpp",
    "RBC_DIAMETER_UM",
    "MppError",
    "METHODS",
    "measurement_regions",
    "MAX_RULER_DISAGREEMENT",
]

#: reference diameter of a normal red cell (microns)
RBC_DIAMETER_UM = 7.5
#: ``method=`` values of :func:`estimate_mpp`
METHODS = ("auto", "scalenet", "rbc")

# reliability thresholds (log units unless stated); set on the training splits (benchmarks/bench_mpp.py)
#: fewest informative ScaleNet windows (own sigma < 0.25)
MIN_INFORMATIVE = 3
#: largest interquartile range of the window estimates (log units; 0.3 = about +-15 %)
MAX_WINDOW_SPREAD = 0.3
#: largest typical window uncertainty (log units)
MAX_MEDIAN_SIGMA = 0.35
#: a red-cell estimate this confident (cells, relative IQR) ...
RBC_CONFIDENT = (15, 0.2)
#: ... disagreeing by more than this factor makes the answer unreliable
MAX_RULER_DISAGREEMENT = 1.5


class MppError(ValueError):
    """The pixel size cannot be estimated (nothing to measure: too few clean red cells / cues)."""


@dataclass(frozen=True)
class MppEstimate:
    """Result of :func:`estimate_mpp`.

    Attributes
    ----------
    mpp : float
        Estimated microns per pixel of the input (level 0 for a slide).
    spread : float
        Relative spread of the estimate: for ``scalenet`` the interquartile range of the window
        estimates (log units, ~ relative); for ``rbc-diameter`` the IQR of the per-cell diameters
        divided by their median (0.1 = +-5 % around the median).
    n_cells : int
        Red cells measured (the red-cell ruler; 0 when it found none).
    method : str
        ``"scalenet"`` or ``"rbc-diameter"``: the ruler that gave ``mpp``.
    diameter_px : float
        Median red-cell diameter in input pixels (nan without red cells).
    reliable : bool
        False when the answer should not be trusted (see ``reason``); pass the pixel size then.
    reason : str
        Why it is unreliable ("" when reliable).
    rbc_mpp, scalenet_mpp : float
        Each ruler's own answer (nan when it gave none).
    n_windows : int
        ScaleNet windows that voted (informative ones, own sigma < 0.25).
    """

    mpp: float
    spread: float
    n_cells: int
    method: str = "rbc-diameter"
    diameter_px: float = math.nan
    reliable: bool = True
    reason: str = ""
    rbc_mpp: float = math.nan
    scalenet_mpp: float = math.nan
    n_windows: int = 0

    def as_dict(self) -> dict:
        """The estimate as a plain dict (JSON-ready)."""
        return asdict(self)


def _rbc_measure(img: np.ndarray, min_d: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """``(clean, all)``: diameters (px) of the clean red cells of an RGB uint8 image, and of every
    red-cell peak (the estimator before the clean-cell rule), from distance-transform peaks.

    Touching round cells keep their own distance-transform maximum (= radius), so
    crowded fields still give a clean population; the dominant mode is returned.  A peak is clean
    when at least :data:`RING_GLASS` of the ring at 1.3x its radius is glass
    (:func:`_clean_peaks`): in a carpet of overlapping dark red cells the foreground merges and
    the inscribed discs of the clumps would read as large red cells.
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
        return np.zeros(0), np.zeros(0)  # blank image
    # purple / dark nuclear material (white cells) is not a red cell
    purple = (rgb[..., 2] - rgb[..., 1] > 40) & (gray < np.percentile(gray, 50))
    purple = ndi.binary_dilation(purple, iterations=2)
    vals = diff[~purple]
    vals = vals[vals < np.percentile(vals, 99)]
    try:
        t = filters.threshold_otsu(vals[:: max(1, len(vals) // 200000)])
    except ValueError:
        return np.zeros(0), np.zeros(0)
    fg = diff > max(t, 10.0)
    fg = ndi.binary_opening(fg, iterations=1)
    fg = ndi.binary_fill_holes(fg)
    objects = fg.copy()
    fg &= ~purple
    edt = ndi.distance_transform_edt(fg)
    pk = peak_local_max(edt, min_distance=max(2, int(min_d / 2)), threshold_abs=min_d / 2, exclude_border=True)
    if len(pk) == 0:
        return np.zeros(0), np.zeros(0)
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
    pk, r = pk[keep], r[keep]
    return _dominant(2.0 * r[_clean_peaks(objects, pk, r)]), _dominant(2.0 * r)


def _dominant(d: np.ndarray) -> np.ndarray:
    """The diameters around the dominant mode (log-space histogram weighted by area): red cells
    are the dominant population.
    """
    if len(d) < 5:
        return d
    ld = np.log(d)
    hist, edges = np.histogram(ld, bins=np.arange(ld.min(), ld.max() + 0.1, 0.08), weights=d**2)
    k = int(np.argmax(np.convolve(hist, [1, 2, 1])[1:-1]))  # smoothed, one value per bin (even 1 or 2 bins)
    mode = np.exp(0.5 * (edges[k] + edges[k + 1]))
    return d[(d > 0.75 * mode) & (d < 1.3 * mode)]


#: least share of glass on the ring at 1.3x a red cell's inscribed radius (a clean, not clumped, cell);
#: chosen on re-stained mosaics of held-out four-class, BCCD and PBC fields (one stain per mosaic, as
#: ``benchmarks/bench_detect_cross_source.py --restain-per-slide``; 0.6 lost BCCD's deep-red mosaic), single fields
#: checked with ``benchmarks/bench_mpp.py`` (docs/detection.md)
RING_GLASS = 0.4


def _clean_peaks(objects: np.ndarray, pk: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Mask of the peaks ``pk`` (radii ``r``) whose ring at 1.3 r is at least :data:`RING_GLASS` glass."""
    if not len(r):
        return np.zeros(0, bool)
    ang = np.linspace(0.0, 2.0 * np.pi, 32, endpoint=False)
    ys = (pk[:, :1] + 1.3 * r[:, None] * np.sin(ang)[None]).astype(int).clip(0, objects.shape[0] - 1)
    xs = (pk[:, 1:] + 1.3 * r[:, None] * np.cos(ang)[None]).astype(int).clip(0, objects.shape[1] - 1)
    return (~objects[ys, xs]).mean(axis=1) >= RING_GLASS


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
            blk = busy[sy0 : max(sy1, sy0 + 1), sx0 : max(sx1, sx0 + 1)]
            scores.append((float(np.mean(blk > 20)), iy, ix))
    scores.sort(reverse=True)
    for s, iy, ix in scores[:max_regions]:
        if s <= 0:
            break
        yield slide.read_region(0, iy * size, ix * size, size, size)


def _is_blank(regions) -> bool:
    """No structure anywhere: every region's colour distance from its background is tiny."""
    for r in regions:
        a = r[:: max(1, r.shape[0] // 256), :: max(1, r.shape[1] // 256)].astype(np.float32)
        g = a.mean(axis=2)
        bg = np.median(a[g >= np.percentile(g, 90)], axis=0)
        if np.percentile(np.sqrt(((a - bg) ** 2).sum(axis=2)), 99) >= 15:
            return False
    return True


def _rbc_ruler(regions, min_cells, rbc_diameter_um) -> tuple[Optional[dict], int]:
    """The red-cell ruler and the number of red cells found: the clean red cells when there are ``min_cells``
    of them, else every red-cell peak (small or sparse fields); None with fewer than ``min_cells`` either way.
    """
    got = [_rbc_measure(r) for r in regions]
    clean = np.concatenate([g[0] for g in got]) if got else np.zeros(0)
    d = clean if len(clean) >= min_cells else (np.concatenate([g[1] for g in got]) if got else clean)
    if len(d) < min_cells:
        return None, len(d)
    med = float(np.median(d))
    q1, q3 = np.percentile(d, [25, 75])
    return {"mpp": rbc_diameter_um / med, "spread": float((q3 - q1) / med), "n": int(len(d)), "d": med}, len(d)


#: red cells narrower than this (pixels; a 7.5 um cell at 0.62 um/px) are not measured reliably (inscribed
#: diameters quantise, pale or
#: crowded cells break up): the red-cell ruler then neither answers alone nor overrules the network
MIN_RBC_DIAMETER_PX = 12.0


def _rbc_doubts(rbc: dict, min_diameter_px: float = MIN_RBC_DIAMETER_PX) -> list[str]:
    """Why the red-cell ruler alone is not to be trusted (empty: trusted)."""
    out = []
    if rbc["n"] < RBC_CONFIDENT[0]:
        out.append(f"few red cells ({rbc['n']})")
    if rbc["spread"] > 0.35:
        out.append(f"red-cell diameters scatter (IQR/median {rbc['spread']:.2f})")
    if rbc["d"] < min_diameter_px:
        out.append(f"red cells too small to measure ({rbc['d']:.1f} px across)")
    return out


def estimate_mpp(
    image_or_slide,
    *,
    min_cells: int = 5,
    rbc_diameter_um: float = RBC_DIAMETER_UM,
    max_regions: int = 6,
    method: str = "auto",
    model: Optional[str] = None,
) -> MppEstimate:
    """Estimate microns per pixel, and whether to trust it.

    Parameters
    ----------
    image_or_slide : ndarray (Y, X, 3) uint8 or leukcore.io.Slide
        A field image or a slide (level 0 is sampled in a few busy regions: bounded reads).
    min_cells : int
        Fewest clean red cells for the red-cell ruler.
    rbc_diameter_um : float
        Reference red-cell diameter.
    max_regions : int
        Slides: level-0 regions (1024 px) read at most.
    method : {"auto", "scalenet", "rbc"}
        ``auto`` (default): the ScaleNet ruler, cross-checked by the red-cell ruler;
        ``scalenet``: the network only; ``rbc``: the red cells only (the pre-2026-12 estimator).
    model : str, optional
        ScaleNet model name or card path (default ``mpp-scalenet``).

    Returns
    -------
    MppEstimate
        With ``reliable`` and ``reason``.

    Raises
    ------
    MppError
        Nothing to measure: a blank image, or (``method="rbc"``) fewer than ``min_cells`` clean
        red cells.
    ValueError
        When the input is not an RGB image or ``method`` is unknown.
    """
    if method not in METHODS:
        raise ValueError(f"estimate_mpp: unknown method {method!r}; known: {', '.join(METHODS)}")
    regions, name = _regions_of(image_or_slide, max_regions)
    rbc, n = _rbc_ruler(regions, min_cells, rbc_diameter_um)
    if method == "rbc":
        if rbc is None:
            raise MppError(f"{name}: cannot estimate the pixel size: found {n} red cells (need {min_cells}){_ASK}")
        reasons = _rbc_doubts(rbc, min_diameter_px=0.0)
        return _rbc_answer(rbc, not reasons, "; ".join(reasons))
    if not regions or _is_blank(regions):
        raise MppError(
            f"{name}: cannot estimate the pixel size: blank image, no red cells or other cues to measure{_ASK}"
        )
    from .mpp_net import load_scalenet, scalenet_estimate

    net, _ = load_scalenet(model or "mpp-scalenet")
    return _weigh_rulers(scalenet_estimate(regions, net), rbc, method, name)


_ASK = "; pass the pixel size explicitly (mpp=... / --mpp)"


def measurement_regions(image_or_slide, max_regions: int = 6) -> tuple[list, str]:
    """``(RGB uint8 regions, name)`` the estimate measures: a few busy level-0 regions of a slide
    (bounded reads), or the image itself.
    """
    return _regions_of(image_or_slide, max_regions)


def _regions_of(image_or_slide, max_regions: int) -> tuple[list, str]:
    """``(RGB uint8 regions, name)``: a few busy level-0 regions of a slide, or the image itself."""
    if hasattr(image_or_slide, "read_region"):
        regions = list(_sample_regions(image_or_slide, max_regions=max_regions))
        name = getattr(image_or_slide, "path", None) or "slide"
    else:
        img = np.asarray(image_or_slide)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"estimate_mpp: expected an RGB (Y, X, 3) image, got shape {img.shape}")
        regions = [img.astype(np.uint8, copy=False)]
        name = "image"
    return [np.asarray(r)[..., :3].astype(np.uint8, copy=False) for r in regions], name


def _rbc_answer(rbc: dict, reliable: bool, reason: str, sn: Optional[dict] = None) -> MppEstimate:
    """The red-cell ruler's answer; ``sn``, the network ruler's reading, is recorded beside it when there is one."""
    extra = {} if sn is None else {"scalenet_mpp": float(sn["mpp"]), "n_windows": int(sn["n_informative"])}
    return MppEstimate(
        mpp=rbc["mpp"],
        spread=rbc["spread"],
        n_cells=rbc["n"],
        method="rbc-diameter",
        diameter_px=rbc["d"],
        reliable=reliable,
        reason=reason,
        rbc_mpp=float(rbc["mpp"]),
        **extra,
    )


def _weigh_rulers(sn: dict, rbc: Optional[dict], method: str, name) -> MppEstimate:
    """The estimate from the network ruler ``sn`` and the red-cell ruler ``rbc`` (``auto``: cross-checked)."""
    rbc_mpp = rbc["mpp"] if rbc else math.nan
    if not math.isfinite(sn["mpp"]):
        if rbc is None:
            raise MppError(f"{name}: cannot estimate the pixel size: no window or red cell to measure{_ASK}")
        return _rbc_answer(rbc, False, "image too small for the network ruler")
    reasons = _scalenet_doubts(sn)
    if method == "auto" and reasons and rbc is not None and rbc["d"] >= MIN_RBC_DIAMETER_PX:
        # the network found nothing it trusts here (e.g. a mosaic or a smear unlike its training
        # sources): the red-cell ruler answers, reliable by its own rule
        why = (
            f"network ruler unsure ({sn['n_informative']} informative windows, spread {sn['spread']:.2f}, "
            f"sigma {sn['median_sigma']:.2f}); red cells used"
        )
        rr = _rbc_doubts(rbc)
        return _rbc_answer(rbc, not rr, "; ".join([why] + rr) if rr else "", sn)
    if rbc is None:
        reasons.append("no red cells found (is this a blood smear?)")
    elif method == "auto" and rbc["n"] >= RBC_CONFIDENT[0] and rbc["spread"] <= RBC_CONFIDENT[1]:
        ratio = max(rbc["mpp"], sn["mpp"]) / min(rbc["mpp"], sn["mpp"])
        if ratio > MAX_RULER_DISAGREEMENT and rbc["d"] < MIN_RBC_DIAMETER_PX:
            # red cells a few pixels across are fragments, platelets or a crowded field's pieces, not a
            # ruler: the network answers, flagged
            reasons.append(
                f"rulers disagree (red cells {rbc['mpp']:.3f} um/px, but only {rbc['d']:.1f} px "
                "across: too small to measure); network used"
            )
        elif ratio > MAX_RULER_DISAGREEMENT:
            # many clean red cells are a physical ruler; the network was trained on three sources and
            # misreads smears unlike them (leave-one-source-out, docs/detection.md): the red cells win
            reasons.append(f"rulers disagree (network {sn['mpp']:.3f} um/px); {rbc['n']} clean red cells used")
            return _rbc_answer(rbc, False, "; ".join(reasons), sn)
    return MppEstimate(
        mpp=float(sn["mpp"]),
        spread=float(sn["spread"]),
        n_cells=int(rbc["n"]) if rbc else 0,
        method="scalenet",
        diameter_px=float(rbc["d"]) if rbc else math.nan,
        reliable=not reasons,
        reason="; ".join(reasons),
        rbc_mpp=float(rbc_mpp),
        scalenet_mpp=float(sn["mpp"]),
        n_windows=int(sn["n_informative"]),
    )


def _scalenet_doubts(sn: dict) -> list[str]:
    """Why the network ruler's answer is not to be trusted here (empty when it is)."""
    reasons = []
    if sn["n_informative"] < MIN_INFORMATIVE:
        reasons.append(f"too few cues ({sn['n_informative']} informative windows)")
    if sn["spread"] > MAX_WINDOW_SPREAD:
        reasons.append(f"windows disagree (spread {sn['spread']:.2f})")
    if sn["median_sigma"] > MAX_MEDIAN_SIGMA:
        reasons.append(f"uncertain windows (sigma {sn['median_sigma']:.2f})")
    return reasons
