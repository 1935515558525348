"""What the detector trains on, batch by batch: augmentation, StarDist targets, batches, the stain template."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .data import TrainItem, background_color, field_input

__all__ = [
    "AUGMENTATIONS",
    "NORMALIZE_CHOICES",
    "augment",
    "make_targets",
    "mosaic_patch",
    "patch_input",
    "Recipe",
    "sample_batch",
    "stain_card",
    "training_template",
]


def _stain_jitter(img: np.ndarray, rng) -> np.ndarray:
    """HED (haematoxylin-eosin-DAB) and HSV jitter, uint8 in/out."""
    from skimage.color import hed2rgb, hsv2rgb, rgb2hed, rgb2hsv

    x = img.astype(np.float32) / 255.0
    if rng.random() < 0.7:
        hed = rgb2hed(x)
        alpha = rng.uniform(0.85, 1.15, 3)
        beta = rng.uniform(-0.03, 0.03, 3)
        x = np.clip(hed2rgb(hed * alpha + beta), 0, 1)
    if rng.random() < 0.7:
        hsv = rgb2hsv(x)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-0.05, 0.05)) % 1.0
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.7, 1.3), 0, 1)
        hsv[..., 2] = np.clip(hsv[..., 2] * rng.uniform(0.85, 1.1), 0, 1)
        x = hsv2rgb(hsv)
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


#: augmentation recipes: ``mild`` (v1-v3: scale +-20 %, HED/HSV jitter) and ``strong`` (v4: scale
#: 0.6-1.67x log-uniform, region-wise Romanowsky re-colouring, glass tints, uneven light, JPEG;
#: :mod:`leukcore.detect.augment`)
AUGMENTATIONS = ("mild", "strong", "mixed")
#: ``mixed``: the share of patches that get the strong recipe (the rest the mild one)
MIXED_STRONG_SHARE = 0.5


def augment(
    img: np.ndarray,
    lab: np.ndarray,
    rng,
    size: int = 128,
    scale: float = 0.2,
    strength: str = "mild",
    wide_scale: float = 0.0,
):
    """Random scale (+-``scale``), crop/pad to ``size``, flips, 90-degree turns, stain jitter, blur.

    ``strength="strong"`` draws the scale log-uniformly in [0.6, 1.67] and re-colours the patch
    region by region (:func:`leukcore.detect.augment.romanowsky_jitter`), then blur / noise / JPEG;
    ``"mixed"``: the strong recipe for a :data:`MIXED_STRONG_SHARE` of the patches, the mild one for
    the rest (the sources' own look stays in every batch).  ``wide_scale``: the share of the mild patches
    that still draw the strong recipe's scale (0.6-1.67x), so scale is not tied to the re-colouring
    (a wrong pixel-size estimate on a slide of the sources' own colours).

    Labels: 0 background, > 0 instances, -1 ignore.  Returns (uint8 image, int32 labels).
    """
    strong = _is_strong(strength, rng)
    out_i, out_l = _geometry(img, lab, rng, size, _scale_factor(rng, strong, scale, wide_scale))
    return _colour(out_i, out_l, rng, strong)


def _is_strong(strength: str, rng) -> bool:
    if strength not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {strength!r}; known: {AUGMENTATIONS}")
    return strength == "strong" or (strength == "mixed" and rng.random() < MIXED_STRONG_SHARE)


def _scale_factor(rng, strong: bool, scale: float, wide_scale: float = 0.0) -> float:
    """The patch's scale: log-uniform 0.6-1.67x when ``strong`` (or, for a ``wide_scale`` share, anyway), else
    uniform ``1 +- scale``.
    """
    if strong or (wide_scale > 0 and rng.random() < wide_scale):
        return float(np.exp(rng.uniform(np.log(0.6), np.log(1.67))))
    return rng.uniform(1 - scale, 1 + scale)


def _geometry(img: np.ndarray, lab: np.ndarray, rng, size: int, f: float):
    """Scale by ``f``, crop or pad (glass colour) to ``size`` square at a random place, turn and flip."""
    from skimage.transform import resize

    h, w = img.shape[:2]
    nh, nw = max(8, int(round(h * f))), max(8, int(round(w * f)))
    img = np.clip(resize(img, (nh, nw, 3), order=1, preserve_range=True, anti_aliasing=f < 1) + 0.5, 0, 255).astype(
        np.uint8
    )
    lab = resize(lab, (nh, nw), order=0, preserve_range=True, anti_aliasing=False).astype(np.int32)
    bg = background_color(img)
    out_i = np.empty((size, size, 3), np.uint8)
    out_i[:] = np.clip(bg + rng.normal(0, 2, 3), 0, 255).astype(np.uint8)
    out_l = np.zeros((size, size), np.int32)
    # random placement: crop when larger, random offset when smaller
    sy = rng.integers(0, nh - size + 1) if nh > size else 0
    sx = rng.integers(0, nw - size + 1) if nw > size else 0
    ch, cw = min(size, nh), min(size, nw)
    dy = rng.integers(0, size - ch + 1)
    dx = rng.integers(0, size - cw + 1)
    out_i[dy : dy + ch, dx : dx + cw] = img[sy : sy + ch, sx : sx + cw]
    out_l[dy : dy + ch, dx : dx + cw] = lab[sy : sy + ch, sx : sx + cw]
    k = int(rng.integers(0, 4))
    out_i, out_l = np.rot90(out_i, k), np.rot90(out_l, k)
    if rng.random() < 0.5:
        out_i, out_l = out_i[:, ::-1], out_l[:, ::-1]
    return out_i, out_l


def _colour(out_i: np.ndarray, out_l: np.ndarray, rng, strong: bool):
    if strong:
        from .augment import degrade, romanowsky_jitter

        out_i = romanowsky_jitter(np.ascontiguousarray(out_i), np.ascontiguousarray(out_l), rng)
        return np.ascontiguousarray(degrade(out_i, rng)), np.ascontiguousarray(out_l)
    from .augment import blur_and_noise

    out_i = blur_and_noise(_stain_jitter(np.ascontiguousarray(out_i), rng), rng, p=0.3)
    return np.ascontiguousarray(out_i), np.ascontiguousarray(out_l)


def mosaic_patch(
    items: Sequence[TrainItem],
    weights: np.ndarray,
    rng,
    size: int = 128,
    strength: str = "mild",
    wide_scale: float = 0.0,
):
    """A patch laid out as the evaluation's mosaics of whole fields: 2 x 2 or 3 x 3 pieces of fields of one source.

    Each piece is a field of the same source (drawn by ``weights``) scaled and cropped on its own, so a cell cut at
    a field's edge sits against another field's glass or cells, as in ``leuk detect`` on fields laid edge to edge;
    the colour recipe is drawn once for the whole patch (one lab, one stain).  Labels and ``wide_scale`` as
    :func:`augment`.
    """
    strong = _is_strong(strength, rng)
    first = int(rng.choice(len(items), p=weights))
    src = items[first].source.split("/")[0]
    same = np.array([it.source.split("/")[0] == src for it in items])
    w = np.where(same, weights, 0.0)
    w = w / w.sum()
    k = int(rng.choice([2, 3]))
    edges = np.linspace(0, size, k + 1).astype(int)
    out_i = np.empty((size, size, 3), np.uint8)
    out_l = np.zeros((size, size), np.int32)
    top = 0
    for y0, y1 in zip(edges[:-1], edges[1:], strict=True):
        for x0, x1 in zip(edges[:-1], edges[1:], strict=True):
            it = items[int(rng.choice(len(items), p=w))] if (y0, x0) != (0, 0) else items[first]
            side = max(y1 - y0, x1 - x0)
            pi, pl = _geometry(it.image, it.labels, rng, side, _scale_factor(rng, strong, 0.2, wide_scale))
            pi, pl = pi[: y1 - y0, : x1 - x0], pl[: y1 - y0, : x1 - x0]
            out_i[y0:y1, x0:x1] = pi
            out_l[y0:y1, x0:x1] = np.where(pl > 0, pl + top, pl)
            top += int(max(pl.max(), 0))
    return _colour(out_i, out_l, rng, strong)


def make_targets(lab: np.ndarray, n_rays: int):
    """StarDist targets with stardist's own functions: prob (edt_prob), dist (star_dist), weight (ignore=0)."""
    from skimage.segmentation import relabel_sequential
    from stardist import edt_prob, star_dist

    ignore = lab < 0
    l = np.where(ignore, 0, lab)
    l, _, _ = relabel_sequential(l)
    l = l.astype(np.int32)
    prob = edt_prob(l).astype(np.float32)
    dist = star_dist(l, n_rays).astype(np.float32)
    weight = (~ignore).astype(np.float32)
    return prob, dist, weight


@dataclass(frozen=True)
class Recipe:
    """What a training patch gets: the colour recipe (:data:`AUGMENTATIONS`), the share of mosaic patches and the
    share of mild patches drawn at the strong recipe's scale (``wide_scale``, see :func:`augment`).
    """

    strength: str = "mild"
    mosaic: float = 0.0
    wide_scale: float = 0.0
    #: the most of a patch's stained pixels that its colour map's statistics take from labelled cells (a share
    #: drawn per patch in [0.02, this]); 0: every stained pixel of the patch (v4-v7)
    map_cell_share: float = 0.0
    #: the colour map's std-ratio bounds per Lab channel (the card's ``input.normalization.std_ratio_bounds``;
    #: ``None``: :data:`~leukcore.detect.stain.STD_RATIO_BOUNDS`, v4-v7)
    std_ratio_bounds: Optional[tuple] = None


def sample_batch(
    items: Sequence[TrainItem],
    weights: np.ndarray,
    rng,
    batch: int,
    size: int,
    n_rays: int,
    recipe: Recipe = Recipe(),
    template: Optional[np.ndarray] = None,
):
    """A batch of augmented patches, normalised as at inference (``template``: the stain template).

    ``recipe``: the colour recipe and the share of patches laid out as mosaics of fields (:func:`mosaic_patch`).
    """
    xs, ps, ds, ws = [], [], [], []
    idx = rng.choice(len(items), size=batch, p=weights)
    for i in idx:
        if recipe.mosaic > 0 and rng.random() < recipe.mosaic:
            img, lab = mosaic_patch(
                items, weights, rng, size=size, strength=recipe.strength, wide_scale=recipe.wide_scale
            )
        else:
            img, lab = augment(
                items[i].image, items[i].labels, rng, size=size, strength=recipe.strength, wide_scale=recipe.wide_scale
            )
        p, d, w = make_targets(lab, n_rays)
        xs.append(patch_input(img, lab, template, rng, recipe.map_cell_share, recipe.std_ratio_bounds))
        ps.append(p)
        ds.append(d)
        ws.append(w)
    return (
        np.stack(xs).transpose(0, 3, 1, 2),
        np.stack(ps)[:, None],
        np.stack(ds).transpose(0, 3, 1, 2),
        np.stack(ws)[:, None],
    )


def patch_input(img: np.ndarray, lab: np.ndarray, template, rng, cell_share: float = 0.0, bounds=None) -> np.ndarray:
    """A training patch's network input, its colour map computed as a slide's would be.

    At inference the map's statistics come from a slide's thumbnail, where white cells are a small share of the
    stained pixels (a median 12 % on four-class fields) and red cells set the map; a 128-px patch around a
    white cell can be half white cell (21 % of four-class patches above 30 %), so its own map moves the cell
    toward the template instead.  With ``cell_share`` > 0 the statistics keep a random subset of the labelled
    cells' stained pixels, at most a share drawn in ``[0.02, cell_share]`` of those counted; a patch with too few
    other stained pixels keeps its own map (:func:`~leukcore.detect.inputs.field_input`).  ``bounds``: the map's
    std-ratio bounds (:func:`~leukcore.detect.stain.ratio_bounds`).
    """
    bg = background_color(img)
    if template is None or cell_share <= 0:
        return field_input(img, template, bg, bounds)
    from .stain import MIN_STAINED_PX, StainNormalizer, stain_stats, stained_mask

    stained = stained_mask(img, bg)
    cells = stained & (lab > 0)
    n_other = int((stained & ~cells).sum())
    if n_other < MIN_STAINED_PX:
        return field_input(img, template, bg, bounds)
    share = rng.uniform(0.02, max(cell_share, 0.02))
    keep = int(share * n_other / (1.0 - share))
    drop = np.flatnonzero(cells.ravel())
    counted = stained.ravel().copy()
    counted[drop[rng.permutation(drop.size)[keep:]]] = False
    stats = stain_stats(img, bg, mask=counted.reshape(stained.shape))
    bg = np.asarray(bg, np.float32)
    return StainNormalizer(bg=bg, stats=stats, template=template, use_lut=False, bounds=bounds)(img)


#: ``leuk train-detector --normalize``: white balance only (v1-v3) or white balance + Reinhard stain transfer
NORMALIZE_CHOICES = ("white-balance", "reinhard")


def training_template(items: Sequence[TrainItem], per_source: int = 40, seed: int = 0) -> np.ndarray:
    """The stain template from the training images: ``per_source`` images of each source, equal weight."""
    from .stain import template_of

    rng = np.random.default_rng(seed)
    by: dict = {}
    for it in items:
        by.setdefault(it.source.split("/")[0], []).append(it)
    pick = []
    for src in sorted(by):
        lst = by[src]
        pick += [lst[i].image for i in rng.permutation(len(lst))[:per_source]]
    return template_of(pick)


def stain_card(template: np.ndarray, bounds=None) -> dict:
    """The card's ``input.normalization`` for a stain template (2, 3) and the map's std-ratio ``bounds``."""
    from .stain import ratio_bounds

    t = np.asarray(template, np.float64)
    return {
        "type": "background-white-balance+reinhard",
        "detail": "RGB divided by the slide's glass colour; the stained pixels' CIE Lab mean and std (from "
        "the slide's thumbnail, or the field) moved to the template (Reinhard transfer; "
        "leukcore.detect.stain)",
        "template": {"lab_mean": [round(float(v), 3) for v in t[0]], "lab_std": [round(float(v), 3) for v in t[1]]},
        "std_ratio_bounds": [list(r) for r in ratio_bounds(bounds)],
    }
