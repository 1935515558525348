"""Image files and pixel sizes: read a file as RGB, resample an image from one pixel size to another."""

from __future__ import annotations

import numpy as np

__all__ = ["read_rgb", "resize_to_mpp"]


def read_rgb(path) -> np.ndarray:
    """The image file at ``path`` as uint8 RGB (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def resize_to_mpp(img: np.ndarray, src_mpp: float, dst_mpp: float, order: int = 1) -> np.ndarray:
    """Resample ``img`` (H, W[, C]) from ``src_mpp`` to ``dst_mpp``."""
    from skimage.transform import resize

    f = src_mpp / dst_mpp
    shape = (max(1, int(round(img.shape[0] * f))), max(1, int(round(img.shape[1] * f))))
    if order == 0:
        return resize(img, shape + img.shape[2:], order=0, preserve_range=True, anti_aliasing=False).astype(img.dtype)
    out = resize(img, shape + img.shape[2:], order=order, preserve_range=True, anti_aliasing=f < 1)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
