"""Stain tools: LAB statistics, Reinhard transfer (stain swap), HED stain jitter.

Reinhard et al. (2001): match each LAB channel's mean and standard deviation of a source
image to target statistics.  The stain-swap test re-stains each held-out field to the
average LAB mean/std of the training fields of *another* class, so a model that reads
colour instead of morphology fails it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["lab_stats", "reinhard", "class_lab_stats", "hed_jitter", "swap_targets"]


def lab_stats(rgb: np.ndarray) -> np.ndarray:
    """``(6,)`` LAB mean (3) and std (3) of an RGB uint8 image."""
    from skimage.color import rgb2lab

    lab = rgb2lab(rgb).reshape(-1, 3)
    return np.concatenate([lab.mean(0), lab.std(0)]).astype(np.float64)


def reinhard(rgb: np.ndarray, target: np.ndarray, source: np.ndarray | None = None) -> np.ndarray:
    """Re-stain ``rgb`` so its LAB mean/std equal ``target`` (6 numbers); returns uint8 RGB."""
    from skimage.color import lab2rgb, rgb2lab

    from ..detect.stain import transfer_lab

    src = lab_stats(rgb) if source is None else np.asarray(source)
    out = lab2rgb(transfer_lab(rgb2lab(rgb), src, target))
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def class_lab_stats(images, labels) -> dict:
    """Average LAB mean/std per class over images (arrays or paths)."""
    from PIL import Image

    acc: dict = {}
    for im, lab in zip(images, labels, strict=False):
        a = np.asarray(Image.open(im).convert("RGB")) if isinstance(im, str) else im
        acc.setdefault(lab, []).append(lab_stats(a))
    return {k: np.mean(v, axis=0) for k, v in acc.items()}


def swap_targets(labels, classes) -> list:
    """Deterministic target class per field: cycles through the other classes (never its own)."""
    classes = list(classes)
    out = []
    counter = {c: 0 for c in classes}
    for lab in labels:
        others = [c for c in classes if c != lab]
        out.append(others[counter[lab] % len(others)])
        counter[lab] += 1
    return out


def hed_jitter(rgb: np.ndarray, rng: np.random.Generator, sigma: float = 0.05, bias: float = 0.05) -> np.ndarray:
    """Random stain perturbation in HED space (Tellez et al. 2018): ``s * alpha + beta`` per channel.

    Works on one ``(H, W, 3)`` or a batch ``(N, H, W, 3)`` of uint8 images (one draw per image).
    """
    from skimage.color import hed2rgb, rgb2hed

    batch = rgb.ndim == 4
    imgs = rgb if batch else rgb[None]
    out = np.empty_like(imgs)
    for i, im in enumerate(imgs):
        hed = rgb2hed(im)
        a = rng.uniform(1 - sigma, 1 + sigma, size=3)
        b = rng.uniform(-bias, bias, size=3)
        hed = hed * a + b * np.abs(hed).max(axis=(0, 1)).clip(1e-3)
        out[i] = (np.clip(hed2rgb(hed), 0, 1) * 255 + 0.5).astype(np.uint8)
    return out if batch else out[0]
