"""Slide-level stain normalisation for the detector: Reinhard colour transfer of the stained pixels.

A smear from another lab differs first in colour: red cells from pale pink to deep red or brown,
nuclei from blue to magenta.  A white-cell detector trained on a few labs reads colour as much as
shape, so before the network sees a tile its colours are moved to the training sources' colour
statistics (Reinhard et al. 2001, in CIE Lab):

1. white balance to the slide's glass colour (as every detector input, :func:`~leukcore.detect.inputs.normalize_image`);
2. the *stained* pixels (summed optical density above :data:`STAIN_FG_OD`) of a slide-wide sample
   (the thumbnail, or the whole field) give a Lab mean and standard deviation;
3. every pixel's Lab value is mapped ``(lab - mean) / std * template_std + template_mean`` (each std
   ratio bounded, by default to [1/2, 1]: contrast is never stretched; a model card may bound each Lab
   channel apart, ``input.normalization.std_ratio_bounds``), and blended back toward the white-balanced pixel where it is glass,
   so the glass stays glass.

The map depends only on the pixel value and the slide's statistics, so it is applied through a
128^3 lookup table: one table per slide, the same colour for the same pixel in every tile (seams stay
exact), about 20 ms per megapixel.  The template is the model card's ``input.normalization.template``
(Lab mean and std of the stained pixels of the training sources, :func:`template_of`).
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import numpy as np

__all__ = [
    "STAIN_FG_OD",
    "stained_mask",
    "stain_stats",
    "reinhard",
    "transfer_lab",
    "StainNormalizer",
    "template_of",
    "ratio_bounds",
    "card_template",
    "card_bounds",
    "NORMALIZATIONS",
]

#: pixels whose optical density summed over R, G, B exceeds this are stained (cells); the rest is glass
STAIN_FG_OD = 0.25
#: fewest stained pixels for statistics (fewer: no transfer, white balance only)
MIN_STAINED_PX = 200
#: bounds on each channel's std ratio: contrast may shrink to half, never grow (a slide of red cells with
#: few white cells has a low spread; stretching it to the template's made red cells look like nuclei:
#: 39 cells found for 11 on a smear-like slide without the candidate screen, with a bound of 2)
STD_RATIO_BOUNDS = (0.5, 1.0)
#: a slide whose stained-pixel Lab mean lies further than this from the template's (in template standard
#: deviations, largest channel) is flagged ``unlike_training``: 40 fields per training source reach 1.7 at most
UNLIKE_TRAINING_DISTANCE = 2.0
#: ``input.normalization.type`` values the detector understands
NORMALIZATIONS = ("background-white-balance", "background-white-balance+reinhard")
_LUT_BITS = 7


def _white_balanced(img: np.ndarray, bg) -> np.ndarray:
    return np.clip(np.asarray(img, np.float32) / np.asarray(bg, np.float32).reshape(1, 1, 3), 0.0, 1.0)


def _stained_weight(wb: np.ndarray) -> np.ndarray:
    od = -np.log(np.clip(wb, 1e-3, 1.0)).sum(-1)
    return np.clip(od / STAIN_FG_OD, 0.0, 1.0)


def stained_mask(img: np.ndarray, bg) -> np.ndarray:
    """Boolean (H, W): the pixels :func:`stain_stats` counts as stained (summed optical density above
    :data:`STAIN_FG_OD` after white balance to ``bg``).
    """
    return _stained_weight(_white_balanced(np.asarray(img)[..., :3], bg)) >= 1.0


def stain_stats(img: np.ndarray, bg, max_px: int = 250_000, mask: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """Lab mean and std, shape (2, 3), of the stained pixels of ``img``; ``None`` when too few.

    Parameters
    ----------
    img : (H, W, 3) uint8
        A field, or a slide's thumbnail.
    bg : (3,) array
        The glass colour (:func:`leukcore.detect.colour.background_color`).
    max_px : int
        Pixels sampled at most (a regular stride over the image).
    mask : (H, W) bool array, optional
        Only the stained pixels it marks count (a training patch's map taken as a slide's:
        :func:`leukcore.detect.train_data.patch_input`).
    """
    from skimage.color import rgb2lab

    a = np.asarray(img)[..., :3]
    step = max(1, int(np.ceil(np.sqrt(a.shape[0] * a.shape[1] / max_px))))
    wb = _white_balanced(a[::step, ::step], bg)
    sel = _stained_weight(wb) >= 1.0
    if mask is not None:
        sel &= np.asarray(mask, bool)[::step, ::step]
    if int(sel.sum()) < MIN_STAINED_PX:
        return None
    lab = rgb2lab(wb[sel][None])[0]
    return np.stack([lab.mean(0), lab.std(0)]).astype(np.float32)


def transfer_lab(lab: np.ndarray, source, target, bounds: Optional[tuple] = None) -> np.ndarray:
    """Reinhard's transfer: Lab values with mean/std ``source`` (2, 3) moved to ``target`` (2, 3).

    ``bounds`` (low, high) clip each channel's std ratio (``None``: unbounded).  L is clipped to [0, 100].
    """
    m, s = np.asarray(source, np.float64).reshape(2, 3)
    tm, ts = np.asarray(target, np.float64).reshape(2, 3)
    ratio = ts / np.maximum(s, 1e-6)
    if bounds is not None:
        ratio = np.clip(ratio, bounds[0], bounds[1])
    out = (np.asarray(lab, np.float64) - m) * ratio + tm
    out[..., 0] = np.clip(out[..., 0], 0.0, 100.0)
    return out


def ratio_bounds(value=None) -> tuple:
    """Std-ratio bounds ``((low L, low a*, low b*), (high L, high a*, high b*))`` from a card's
    ``input.normalization.std_ratio_bounds`` (``None``: :data:`STD_RATIO_BOUNDS` on every channel).

    A bound pair per channel lets a map shrink lightness contrast while the colour channels keep their
    spread (the hue gap between white and red cells on a deep-red slide).  ``ValueError`` names the problem.
    """
    if value is None:
        value = STD_RATIO_BOUNDS
    try:
        a = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        a = np.zeros(0)
    if a.shape == (2,):
        a = np.repeat(a[:, None], 3, axis=1)
    if a.shape != (2, 3) or not np.all(np.isfinite(a)) or np.any(a <= 0) or np.any(a[0] > a[1]):
        raise ValueError(
            f"std_ratio_bounds must be (low, high) or ([3 lows], [3 highs]) with 0 < low <= high, got {value!r}"
        )
    return tuple(tuple(float(v) for v in row) for row in a)


def _card_normalization(card: dict) -> dict:
    return (card.get("input") or {}).get("normalization") or {}


def card_template(card: dict, name: str = "model") -> Optional[np.ndarray]:
    """A detector card's colour template (2, 3): Lab mean and std of stained pixels, or None (white balance only).

    ``ValueError`` for an ``input.normalization.type`` not in :data:`NORMALIZATIONS`.
    """
    norm = _card_normalization(card)
    kind = norm.get("type", NORMALIZATIONS[0])
    if kind not in NORMALIZATIONS:
        raise ValueError(f"{name}: unknown input normalization {kind!r}; known: {NORMALIZATIONS}")
    if "reinhard" not in kind:
        return None
    t = norm.get("template") or {}
    return np.asarray([t["lab_mean"], t["lab_std"]], np.float32)


def card_bounds(card: dict, name: str = "model") -> tuple:
    """A detector card's colour-map std-ratio bounds per Lab channel (``input.normalization.std_ratio_bounds``,
    else :data:`STD_RATIO_BOUNDS`), as :func:`ratio_bounds` reads them; ``ValueError`` names the card.
    """
    try:
        return ratio_bounds(_card_normalization(card).get("std_ratio_bounds"))
    except ValueError as e:
        raise ValueError(f"{name}: model card input.normalization: {e}") from None


def reinhard(img: np.ndarray, bg, stats: Optional[np.ndarray], template: np.ndarray, bounds=None) -> np.ndarray:
    """White-balance ``img`` and move its stained pixels' Lab statistics ``stats`` to ``template``.

    ``bounds``: each channel's std-ratio bounds (:func:`ratio_bounds`; default :data:`STD_RATIO_BOUNDS`).
    Returns float32 (H, W, 3) in [0, 1]; with ``stats=None`` the white-balanced image.
    """
    from skimage.color import lab2rgb, rgb2lab

    wb = _white_balanced(img, bg)
    if stats is None:
        return wb
    lab = transfer_lab(rgb2lab(wb), stats, template, bounds=ratio_bounds(bounds))
    with warnings.catch_warnings():  # Lab values outside sRGB are clipped, as intended
        warnings.simplefilter("ignore", UserWarning)
        out = np.clip(lab2rgb(lab), 0.0, 1.0).astype(np.float32)
    w = _stained_weight(wb)[..., None]
    return (w * out + (1.0 - w) * wb).astype(np.float32)


@dataclass
class StainNormalizer:
    """One slide's colour map (white balance + Reinhard transfer) as a lookup table; call it on tiles."""

    bg: np.ndarray
    stats: Optional[np.ndarray]
    template: np.ndarray
    #: through the lookup table (slides; an entry is computed the first time a tile shows that colour, the whole
    #: table would take ~0.3 s) or computed per pixel (one field)
    use_lut: bool = True
    #: each Lab channel's std-ratio bounds (:func:`ratio_bounds`; the model card's, ``None``: the default)
    bounds: Optional[tuple] = None
    _lut: Optional[np.ndarray] = None
    _filled: Optional[np.ndarray] = None
    _lock: Any = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def for_image(cls, sample: np.ndarray, bg, template, use_lut: bool = True, bounds=None) -> "StainNormalizer":
        """The map of the slide (or field) that ``sample`` (its thumbnail, or the field) shows."""
        bg = np.asarray(bg, np.float32)
        tpl = np.asarray(template, np.float32)
        return cls(bg=bg, stats=stain_stats(sample, bg), template=tpl, use_lut=use_lut, bounds=bounds)

    def describe(self) -> dict:
        """What the run records (``meta["stain"]``): the slide's statistics, the template, and how far apart.

        ``distance`` is the largest per-channel gap between the slide's and the template's stained-pixel
        Lab means, in template standard deviations; ``unlike_training`` when it exceeds
        :data:`UNLIKE_TRAINING_DISTANCE` (training-source fields reach 1.7 at most; re-stained pink-red
        and deep-red copies 1.7-2.3, Zheng crops 1.2-3.8).
        """
        out = {
            "method": "reinhard",
            "template_lab_mean": [round(float(v), 2) for v in self.template[0]],
            "template_lab_std": [round(float(v), 2) for v in self.template[1]],
            "std_ratio_bounds": [list(r) for r in ratio_bounds(self.bounds)],
        }
        if self.stats is None:
            return {**out, "applied": False, "reason": f"fewer than {MIN_STAINED_PX} stained pixels"}
        d = float(np.max(np.abs(self.stats[0] - self.template[0]) / np.maximum(self.template[1], 1e-3)))
        return {
            **out,
            "applied": True,
            "slide_lab_mean": [round(float(v), 2) for v in self.stats[0]],
            "slide_lab_std": [round(float(v), 2) for v in self.stats[1]],
            "distance": round(d, 3),
            "unlike_training": bool(d > UNLIKE_TRAINING_DISTANCE),
        }

    def lut(self, codes=None) -> np.ndarray:
        """The colour transfer as a lookup table over quantised RGB, ``(n, n, n, 3)`` uint8.

        Filled entry by entry: ``codes`` (quantised colours ``(r << 2b) | (g << b) | bl`` of ``b`` bits) are
        computed through :func:`reinhard` the first time a tile shows them (default: every entry); the values are
        those of the whole grid in one call (``tests/test_detect_stain.py``).  A smear's tiles show a few
        percent of the 2 million colours, so the table costs little more than their pixels.  Threads reading
        tiles side by side may compute the same entries at once; they write the same values.
        """
        n = 1 << _LUT_BITS
        with self._lock:
            if self._lut is None:
                self._lut = np.zeros((n**3, 3), np.uint8)
                self._filled = np.zeros(n**3, bool)
            need = np.arange(n**3) if codes is None else np.asarray(codes).ravel()
            need = need[~self._filled[need]]
        if need.size:
            need = np.unique(need)
            v = (np.arange(n, dtype=np.float32) + 0.5) * (256.0 / n)
            grid = np.stack([v[need >> (2 * _LUT_BITS)], v[(need >> _LUT_BITS) & (n - 1)], v[need & (n - 1)]], -1)
            out = np.round(reinhard(grid[None], self.bg, self.stats, self.template, self.bounds)[0] * 255.0).astype(
                np.uint8
            )
            with self._lock:
                self._lut[need] = out
                self._filled[need] = True
        return self._lut.reshape(n, n, n, 3)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """float32 (H, W, 3) in [0, 1]: the network's input for the uint8 RGB tile ``img``."""
        a = np.asarray(img)[..., :3]
        if a.dtype != np.uint8:
            a = np.clip(a, 0, 255).astype(np.uint8)
        if not self.use_lut:
            return reinhard(a, self.bg, self.stats, self.template, self.bounds)
        sh = 8 - _LUT_BITS
        code = (a[..., 0] >> sh).astype(np.int32) << (2 * _LUT_BITS)
        code |= (a[..., 1] >> sh).astype(np.int32) << _LUT_BITS
        code |= a[..., 2] >> sh
        lut = self.lut(code).reshape(-1, 3)
        return lut[code].astype(np.float32) * np.float32(1.0 / 255.0)


def template_of(images: Iterable[np.ndarray]) -> np.ndarray:
    """The template (2, 3): mean over ``images`` of their stained pixels' Lab mean and std.

    Pass the same number of images per source so that no source dominates.
    """
    from .colour import background_color

    st = [s for s in (stain_stats(im, background_color(im)) for im in images) if s is not None]
    if not st:
        raise ValueError("template_of: no image with enough stained pixels")
    return np.mean(np.stack(st), axis=0).astype(np.float32)
