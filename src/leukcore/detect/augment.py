"""Training augmentation for the detector that spans real Romanowsky variation.

Labs differ in stain (May-Gruenwald-Giemsa, Wright, Leishman, Field), stain time, buffer pH,
film thickness, glass, lamp and camera.  A detector trained on a few sources learns their
colours unless the training images span that variation.  :func:`romanowsky_jitter` re-colours a
training patch *region by region*, in optical density (OD = -log(I / background)) so texture is
kept:

* **red cells and everything else that is not a white cell** (platelets, clumps, debris): their
  mean OD is moved to a random target drawn from the red-cell hues seen in practice: pale pink,
  pink-red, deep red, orange, brown, grey-blue, violet-grey; their density is scaled too, so a
  dark red cell as well as a ghost is a negative;
* **white cells** (labelled instances): their OD is scaled per channel, so nuclei range from
  blue to magenta and purple, cytoplasm from pale to deep;
* **glass**: a multiplicative tint (green, yellow, blue, warm) and an uneven illumination field;
* then a global HED / hue / saturation / gamma jitter, defocus blur, noise and JPEG re-coding.

:func:`restain` is the deterministic variant (a fixed target palette entry) used to build
re-stained copies of validation sets (model selection by the worst source, never by the
in-source score).
"""

from __future__ import annotations

import io
from typing import Optional

import numpy as np

__all__ = ["RBC_PALETTE", "GLASS_TINTS", "romanowsky_jitter", "restain", "degrade", "blur_and_noise"]

#: target RGB (on white glass) of the mean red-cell colour: what labs' smears show
RBC_PALETTE = {
    "pale-pink": (238, 205, 210),
    "pink": (226, 160, 170),
    "pink-red": (214, 120, 128),
    "deep-red": (176, 62, 74),
    "orange": (226, 150, 112),
    "brown": (170, 118, 92),
    "grey-blue": (160, 168, 190),
    "violet-grey": (176, 150, 184),
}
#: multiplicative glass / lamp tints (R, G, B)
GLASS_TINTS = {
    "white": (1.0, 1.0, 1.0),
    "green": (0.86, 1.0, 0.86),
    "yellow": (1.0, 0.97, 0.78),
    "blue": (0.84, 0.90, 1.0),
    "warm": (1.0, 0.90, 0.84),
}
#: per-channel OD gains for white cells: (R, G, B) OD multipliers
WBC_GAINS = {
    "as-is": (1.0, 1.0, 1.0),
    "blue": (1.25, 1.05, 0.8),
    "magenta": (0.85, 1.25, 0.9),
    "purple": (1.1, 1.2, 0.85),
    "pale": (0.7, 0.7, 0.7),
    "dark": (1.35, 1.3, 1.2),
}

_EPS = 1.0 / 255.0


def _od(img: np.ndarray, bg: np.ndarray) -> np.ndarray:
    # glass brighter than the background estimate keeps a (small) negative density: clipping it at
    # 0 would make every augmented patch's glass flat at the background colour, a look the real
    # fields the detector sees at inference never have
    x = np.clip(img.astype(np.float32) / bg.reshape(1, 1, 3), _EPS, 1.5)
    return -np.log(x)


def _from_od(od: np.ndarray, bg: np.ndarray) -> np.ndarray:
    return np.exp(-np.clip(od, -0.4, 6.0)) * bg.reshape(1, 1, 3)


def _regions(img: np.ndarray, lab: np.ndarray, bg: np.ndarray):
    """(white-cell mask, other-object mask) of a patch: labelled cells, and stained non-cell pixels."""
    od = _od(img, bg)
    s = od.sum(axis=2)
    wbc = lab > 0
    obj = (s > 0.12) & ~wbc & (lab >= 0)
    return wbc, obj


def _move_od(od: np.ndarray, mask: np.ndarray, target_rgb, density: float) -> None:
    """Move the mean OD of ``mask`` to that of ``target_rgb`` (per channel), scaled by ``density``."""
    if mask.sum() < 16:
        return
    t = -np.log(np.clip(np.asarray(target_rgb, np.float32) / 255.0, _EPS, 1.0))
    m = od[mask].mean(axis=0)
    # per-channel gain, bounded so a nearly transparent channel is not blown up
    gain = np.clip((t + 0.02) / (m + 0.02), 0.2, 5.0) * density
    od[mask] = od[mask] * gain


def _illumination(shape, rng, amp: float) -> np.ndarray:
    """A smooth multiplicative field in about [1 - amp, 1 + amp] (a tilted plane plus a vignette)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / max(h - 1, 1) - 0.5, xx / max(w - 1, 1) - 0.5
    a, b = rng.uniform(-1, 1, 2)
    field = a * yy + b * xx
    cy, cx = rng.uniform(-0.5, 0.5, 2)
    field -= rng.uniform(0, 1.5) * ((yy - cy) ** 2 + (xx - cx) ** 2)
    field = field - field.mean()
    rng_ = np.ptp(field)
    if rng_ > 0:
        field = field / rng_ * 2 * amp
    return (1.0 + field)[..., None]


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Re-code an RGB uint8 image as JPEG at ``quality``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def blur_and_noise(img: np.ndarray, rng, *, p: float, sigma=(0.3, 1.2), noise=(1.0, 6.0)) -> np.ndarray:
    """With probability ``p`` each: Gaussian defocus (sigma drawn in ``sigma``), then sensor noise (std in
    ``noise``); uint8 in/out.  The mild (v1-v3) recipe and :func:`degrade` both draw through this.
    """
    from scipy import ndimage as ndi

    out = img
    if rng.random() < p:
        s = rng.uniform(*sigma)
        out = ndi.gaussian_filter(out.astype(np.float32), (s, s, 0)).clip(0, 255).astype(np.uint8)
    if rng.random() < p:
        out = np.clip(out.astype(np.float32) + rng.normal(0, rng.uniform(*noise), out.shape), 0, 255).astype(np.uint8)
    return out


def degrade(img: np.ndarray, rng) -> np.ndarray:
    """Defocus blur, sensor noise and JPEG re-coding, each at random; uint8 in/out."""
    out = blur_and_noise(img, rng, p=0.35, sigma=(0.4, 2.0), noise=(1.0, 8.0))
    if rng.random() < 0.35:
        out = jpeg(np.ascontiguousarray(out), int(rng.integers(25, 90)))
    return out


def _global_jitter(x: np.ndarray, rng) -> np.ndarray:
    """HED, hue, saturation and gamma jitter on float RGB in [0, 1]."""
    from skimage.color import hed2rgb, hsv2rgb, rgb2hed, rgb2hsv

    if rng.random() < 0.6:
        hed = rgb2hed(x)
        x = np.clip(hed2rgb(hed * rng.uniform(0.7, 1.35, 3) + rng.uniform(-0.05, 0.05, 3)), 0, 1)
    if rng.random() < 0.6:
        hsv = rgb2hsv(x)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-0.08, 0.08)) % 1.0
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.5, 1.5), 0, 1)
        hsv[..., 2] = np.clip(hsv[..., 2] * rng.uniform(0.8, 1.1), 0, 1)
        x = hsv2rgb(hsv)
    if rng.random() < 0.4:
        x = np.clip(x, 0, 1) ** rng.uniform(0.7, 1.4)
    return x


def romanowsky_jitter(
    img: np.ndarray, lab: np.ndarray, rng, *, p_region: float = 0.8, p_glass: float = 0.5, p_light: float = 0.4
) -> np.ndarray:
    """Re-colour a training patch region by region (see the module doc); uint8 RGB in/out.

    ``lab``: instance labels of the patch (0 background, > 0 white cells, -1 ignore).
    """
    from .colour import background_color

    bg = background_color(img)
    x = img.astype(np.float32)
    if rng.random() < p_region:
        od = _od(x, bg)
        wbc, obj = _regions(x, lab, bg)
        name = list(RBC_PALETTE)[int(rng.integers(len(RBC_PALETTE)))]
        _move_od(od, obj, RBC_PALETTE[name], rng.uniform(0.6, 1.5))
        if wbc.any() and rng.random() < 0.7:
            gname = list(WBC_GAINS)[int(rng.integers(len(WBC_GAINS)))]
            od[wbc] = od[wbc] * np.asarray(WBC_GAINS[gname], np.float32) * rng.uniform(0.85, 1.15, 3)
        x = _from_od(od, bg)
    x = x / 255.0
    if rng.random() < p_glass:
        tint = np.asarray(list(GLASS_TINTS.values())[int(rng.integers(len(GLASS_TINTS)))], np.float32)
        x = x * (tint * rng.uniform(0.97, 1.03, 3)).reshape(1, 1, 3)
    if rng.random() < p_light:
        x = x * _illumination(x.shape[:2], rng, rng.uniform(0.05, 0.25))
    x = _global_jitter(np.clip(x, 0, 1), rng)
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


def restain(
    img: np.ndarray, rbc: str, glass: str = "white", wbc: str = "as-is", lab: Optional[np.ndarray] = None
) -> np.ndarray:
    """Deterministic re-stain of a field: red cells to ``RBC_PALETTE[rbc]``, white cells by
    ``WBC_GAINS[wbc]`` (when ``lab`` marks them; else a purple-measure mask), glass tint ``glass``.
    """
    from .colour import background_color, purple_measure

    bg = background_color(img)
    x = img.astype(np.float32)
    if lab is None:
        lab = (purple_measure(img) > 40).astype(np.int32)
    od = _od(x, bg)
    cells, obj = _regions(x, lab, bg)
    _move_od(od, obj, RBC_PALETTE[rbc], 1.0)
    if cells.any():
        od[cells] = od[cells] * np.asarray(WBC_GAINS[wbc], np.float32)
    x = _from_od(od, bg) * np.asarray(GLASS_TINTS[glass], np.float32).reshape(1, 1, 3)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)
