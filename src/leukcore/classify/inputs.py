"""Crops (uint8 NHWC) -> network input (float32 NCHW), the one place this happens.

Used identically by training, evaluation, inference, ONNX and Grad-CAM.
"""

from __future__ import annotations

import numpy as np

from .geometry import CropSpec

__all__ = ["preprocess", "lightness"]


def lightness(rgb: np.ndarray) -> np.ndarray:
    """CIE L* (0..100) of uint8 sRGB images ``(..., 3)`` -> float32 ``(...)``."""
    c = rgb.astype(np.float32) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    y = lin[..., 0] * 0.212671 + lin[..., 1] * 0.715160 + lin[..., 2] * 0.072169
    f = np.where(y > 0.008856, np.cbrt(y), 7.787 * y + 16.0 / 116.0)
    return (116.0 * f - 16.0).astype(np.float32)


def preprocess(crops: np.ndarray, spec: CropSpec) -> np.ndarray:
    """Turn ``(N, S, S, 3)`` uint8 crops into ``(N, 3, S, S)`` float32 network input.

    ``rgb`` mode: ``(x / 255 - mean) / std``.  ``lstd`` mode: lightness L* standardised per crop
    (over non-black pixels when the spec masks the background), ``/ 2``, on three channels.
    ``labstd`` mode: each of L*, a*, b* standardised per crop (``/ 2``).  Both standardised modes are
    invariant to any per-channel affine change of LAB over the field, i.e. to Reinhard stain transfer.
    """
    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    if crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"crops must be (N, H, W, 3) uint8, got shape {crops.shape}")
    if crops.dtype != np.uint8:
        raise ValueError(f"crops must be uint8, got {crops.dtype}")
    if spec.mode == "rgb":
        x = crops.astype(np.float32) / 255.0
        x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if spec.mask:
        fg = crops.max(axis=-1) > 0
    else:
        fg = np.ones(crops.shape[:3], bool)
    if spec.mode == "lstd":
        z = _standardise(lightness(crops), fg)
        return np.ascontiguousarray(np.repeat(z[:, None], 3, axis=1))
    from skimage.color import rgb2lab  # labstd: each LAB channel standardised per crop

    lab = rgb2lab(crops).astype(np.float32)
    z = np.stack([_standardise(lab[..., k], fg) for k in range(3)], axis=1)
    return np.ascontiguousarray(z)


def _standardise(ch: np.ndarray, fg: np.ndarray) -> np.ndarray:
    n = np.maximum(fg.sum(axis=(1, 2), keepdims=True), 1)
    mu = (ch * fg).sum(axis=(1, 2), keepdims=True) / n
    var = (((ch - mu) ** 2) * fg).sum(axis=(1, 2), keepdims=True) / n
    z = (ch - mu) / np.sqrt(var + 1.0) / 2.0
    return np.where(fg, z, 0.0).astype(np.float32)
