"""A learned pixel-size reader: a small CNN that reads microns per pixel from 64 px windows.

The network (:class:`ScaleNet`) sees a 64 x 64 window of a smear resampled to about
``WORK_MPP`` (0.3 um/px) and predicts ``log(mpp / WORK_MPP)`` with an uncertainty (Gaussian
negative log-likelihood: ``mu`` and ``log sigma^2``).  It was trained with continuous scale
augmentation (every source spans 0.15-0.6 um/px) and strong stain / glass / blur / noise / JPEG
augmentation, so it must read the size of cells, not the look of a source (model card
``mpp-scalenet.yaml``).

:func:`scalenet_estimate` runs it coarse to fine on any image:

1. **coarse**: the image at downsamples 1, 2, 4, 8, 16 (while >= 64 px); windows of each level
   give a level estimate; the level whose estimate lies nearest the centre of the trained range
   (0.3 um/px) is kept;
2. **fine**: the image resampled to 0.3 um/px by the coarse estimate, windows on a grid, each
   window's ``mu`` weighted by ``1 / sigma^2``: the weighted median;
3. repeated once when the fine estimate moved the working size by more than 15 %.

Window weights and the spread of the informative windows give the reliability (see
:mod:`leukcore.mpp`).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional

import numpy as np

__all__ = [
    "ScaleNet",
    "WORK_MPP",
    "WINDOW",
    "TRAIN_RANGE",
    "load_scalenet",
    "window_input",
    "predict_windows",
    "scalenet_estimate",
    "DEFAULT_MODEL",
    "resize_image",
]

#: centre of the trained range (um/px of the windows the network reads)
WORK_MPP = 0.3
#: window side (px)
WINDOW = 64
#: pixel sizes the training windows spanned
TRAIN_RANGE = (0.15, 0.6)
DEFAULT_MODEL = "mpp-scalenet"


def _net_class():
    from torch import nn

    class ScaleNet(nn.Module):
        """Seven 3x3 conv layers (three stride-2), global average pooling, two outputs (mu, log var)."""

        def __init__(self, channels=(16, 32, 64, 128)):
            super().__init__()
            c0, c1, c2, c3 = channels

            def block(i, o, s):
                return [nn.Conv2d(i, o, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

            self.features = nn.Sequential(
                *block(3, c0, 1),
                *block(c0, c1, 2),
                *block(c1, c1, 1),
                *block(c1, c2, 2),
                *block(c2, c2, 1),
                *block(c2, c3, 2),
                *block(c3, c3, 1),
                *block(c3, c3, 1),
            )
            self.head = nn.Sequential(nn.Linear(c3, 64), nn.ReLU(inplace=True), nn.Linear(64, 2))

        def forward(self, x):
            f = self.features(x).mean(dim=(2, 3))
            out = self.head(f)
            return out[:, 0], out[:, 1].clamp(-8.0, 4.0)

    return ScaleNet


def ScaleNet(channels=(16, 32, 64, 128)):
    """Build the network (torch imported lazily)."""
    return _net_class()(channels)


def window_input(win: np.ndarray) -> np.ndarray:
    """uint8 (..., 64, 64, 3) windows -> float32 (..., 3, 64, 64) network input.

    Each window minus its per-channel mean, divided by its overall standard deviation (+0.02):
    absolute colour and contrast are removed, structure is kept.
    """
    x = win.astype(np.float32) / 255.0
    m = x.mean(axis=(-3, -2), keepdims=True)
    s = x.std(axis=(-3, -2, -1), keepdims=True)
    x = (x - m) / (s + 0.02)
    return np.moveaxis(x, -1, -3).copy()


@lru_cache(maxsize=4)
def load_scalenet(name: str = DEFAULT_MODEL):
    """(network in eval mode, card) of a shipped or user ScaleNet model."""
    from .models.registry import load_card, load_state_dict

    card = load_card(name)
    arch = card.get("architecture", {})
    net = ScaleNet(tuple(arch.get("channels", (16, 32, 64, 128))))
    net.load_state_dict({k: v for k, v in load_state_dict(card).items()})
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, card


def predict_windows(net, windows: np.ndarray, batch: int = 256):
    """(mu, logvar) arrays for uint8 windows (N, 64, 64, 3); mu = log(mpp / WORK_MPP)."""
    import torch

    mus, lvs = [], []
    with torch.inference_mode():
        for i in range(0, len(windows), batch):
            x = torch.from_numpy(window_input(windows[i : i + batch]))
            mu, lv = net(x)
            mus.append(mu.numpy())
            lvs.append(lv.numpy())
    if not mus:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.concatenate(mus), np.concatenate(lvs)


def resize_image(img: np.ndarray, zoom: float) -> np.ndarray:
    """Resample an RGB uint8 image by ``zoom`` (output px per input px), anti-aliased."""
    from PIL import Image

    h, w = img.shape[:2]
    nh, nw = max(1, int(round(h * zoom))), max(1, int(round(w * zoom)))
    if (nh, nw) == (h, w):
        return img
    return np.asarray(
        Image.fromarray(np.ascontiguousarray(img)).resize(
            (nw, nh), Image.Resampling.BILINEAR, reducing_gap=None if zoom > 0.5 else 2.0
        )
    )


def _windows(img: np.ndarray, max_windows: int, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Up to ``max_windows`` 64 px windows on a regular grid covering ``img`` (stride <= 48 px)."""
    h, w = img.shape[:2]
    if h < WINDOW or w < WINDOW:
        ph, pw = max(0, WINDOW - h), max(0, WINDOW - w)
        img = np.pad(img, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode="reflect")
        h, w = img.shape[:2]
    ny = max(1, math.ceil((h - WINDOW) / 48) + 1)
    nx = max(1, math.ceil((w - WINDOW) / 48) + 1)
    ys = np.linspace(0, h - WINDOW, ny).round().astype(int)
    xs = np.linspace(0, w - WINDOW, nx).round().astype(int)
    pos = [(y, x) for y in ys for x in xs]
    if len(pos) > max_windows:
        idx = np.linspace(0, len(pos) - 1, max_windows).round().astype(int)
        pos = [pos[i] for i in idx]
    return np.stack([img[y : y + WINDOW, x : x + WINDOW] for y, x in pos])


def _combine(mu: np.ndarray, lv: np.ndarray) -> dict:
    """Weighted median of window estimates (weights 1 / sigma^2) and their agreement."""
    if len(mu) == 0:
        return {"mu": math.nan, "spread": math.inf, "n_informative": 0, "sigma": math.inf}
    w = np.exp(-lv)
    o = np.argsort(mu)
    cw = np.cumsum(w[o]) / w.sum()
    med = float(mu[o][np.searchsorted(cw, 0.5)])
    q1 = float(mu[o][np.searchsorted(cw, 0.25)])
    q3 = float(mu[o][min(len(o) - 1, np.searchsorted(cw, 0.75))])
    sig = np.exp(0.5 * lv)
    informative = int((sig < 0.25).sum())
    # combined standard error of the mean (windows overlap: counted at most as len/2 independent)
    comb = float(1.0 / math.sqrt(w.sum()) * math.sqrt(max(1.0, len(mu) / max(1, len(mu) // 2))))
    return {
        "mu": med,
        "spread": q3 - q1,
        "n_informative": informative,
        "sigma": comb,
        "median_sigma": float(np.median(sig)),
    }


def scalenet_estimate(images, net=None, *, max_windows: int = 96) -> dict:
    """Estimate the pixel size of one or more regions of the same image (same scale) with ScaleNet.

    Returns a dict: ``mpp`` (input px), ``spread`` (interquartile range of the window estimates,
    relative), ``n_informative`` (windows with sigma < 0.25 in log units), ``n_windows``,
    ``median_sigma`` (typical window uncertainty, log units), ``coarse_mpp``, ``passes``.
    """
    if net is None:
        net, _ = load_scalenet()
    if isinstance(images, np.ndarray):
        images = [images]
    images = [np.ascontiguousarray(im[..., :3]) for im in images]
    # 1. coarse: a pyramid of downsamples; the level whose estimate is nearest the trained centre
    best = None
    for k in (1, 2, 4, 8, 16, 32):
        levels = [resize_image(im, 1.0 / k) if k > 1 else im for im in images]
        if max(min(lv.shape[:2]) for lv in levels) < WINDOW:
            break
        wins = np.concatenate(
            [_windows(lv, max(8, 24 // len(levels))) for lv in levels if min(lv.shape[:2]) >= WINDOW // 2]
        )
        mu, lv_ = predict_windows(net, wins)
        c = _combine(mu, lv_)
        if not math.isfinite(c["mu"]):
            continue
        dist = abs(c["mu"])
        if best is None or dist < best[0]:
            best = (dist, k, c["mu"])
    if best is None:
        return {
            "mpp": math.nan,
            "spread": math.inf,
            "n_informative": 0,
            "n_windows": 0,
            "median_sigma": math.inf,
            "coarse_mpp": math.nan,
            "passes": 0,
        }
    _, k, mu0 = best
    mpp = WORK_MPP * math.exp(mu0) / k  # input-pixel estimate
    coarse = mpp
    # 2. fine: resample to WORK_MPP by the current estimate; windows vote
    passes = 0
    for passes in (1, 2):  # noqa: B007 (the number of passes run is reported after the loop)
        zoom = mpp / WORK_MPP
        levels = [resize_image(im, zoom) for im in images]
        per = max(16, max_windows // len(levels))
        wins = np.concatenate([_windows(lv, per) for lv in levels])
        mu, lv_ = predict_windows(net, wins)
        c = _combine(mu, lv_)
        new = WORK_MPP * math.exp(c["mu"]) * zoom
        moved = abs(math.log(new / mpp))
        mpp = new
        if moved < math.log(1.15):
            break
    return {
        "mpp": float(mpp),
        "spread": float(c["spread"]),
        "n_informative": int(c["n_informative"]),
        "n_windows": int(len(mu)),
        "median_sigma": float(c["median_sigma"]),
        "coarse_mpp": float(coarse),
        "passes": passes,
    }
