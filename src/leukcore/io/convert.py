"""Conversion of any supported sample layout to RGB ``uint8``.

The rules (documented in ``docs/slides.md``) are applied block by block, so they
must not depend on image-wide statistics:

* **grey** (1 channel) -> the grey value is replicated into R, G and B;
* **grey + alpha** (2 channels) and **RGBA** (4 channels) -> composited on a
  white background: ``out = c * a + 255 * (1 - a)`` with ``a`` the alpha scaled
  to 0..1 (transparent areas become slide background, never black);
* **3 channels** -> taken as RGB;
* any other channel count (e.g. 5) -> :class:`UnsupportedLayoutError` at open time;
* **uint8** -> unchanged;  **unsigned / signed integers wider than 8 bits** ->
  scaled by the dtype maximum (``v * 255 / iinfo.max``, negatives clipped to 0;
  e.g. uint16 65535 -> 255), *not* by a percentile, so that every tile of a slide
  is mapped identically;  **float** -> assumed to be 0..1, clipped and scaled by
  255;  **bool** -> 0 / 255.
* ``min_is_white`` (TIFF photometric MINISWHITE) inverts grey before the above;
  a palette (TIFF colormap) is looked up first.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["to_rgb8", "check_layout", "value_range_rule", "SUPPORTED_CHANNELS", "TWELVE_BIT_MAX"]

#: uint16 (or wider) data whose maximum is at most this is taken as 12-bit
TWELVE_BIT_MAX = 4095

SUPPORTED_CHANNELS = (1, 2, 3, 4)


def check_layout(n_channels: int, dtype) -> Optional[str]:
    """Return a problem description if ``(n_channels, dtype)`` cannot be converted, else ``None``."""
    dtype = np.dtype(dtype)
    if n_channels not in SUPPORTED_CHANNELS:
        return f"unsupported sample layout: {n_channels} channels (expected 1 grey, 2 grey+alpha, 3 RGB or 4 RGBA)"
    if dtype.kind not in "uifb":
        return f"unsupported pixel type {dtype}"
    return None


def _scale_to_u8(a: np.ndarray, scale_max: Optional[float] = None) -> np.ndarray:
    """Scale one array of any supported dtype to uint8 by the fixed dtype rule (or by ``scale_max``:
    ``v * 255 / scale_max``, clipped; decided once per slide, e.g. 4095 for 12-bit data in uint16).
    """
    kind = a.dtype.kind
    if scale_max is not None and kind in "uif":
        f = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=float(scale_max), neginf=0.0)
        f = np.clip(f, 0.0, float(scale_max)) * np.float32(255.0 / float(scale_max))
        return (f + 0.5).astype(np.uint8)
    if a.dtype == np.uint8:
        return a
    if kind == "b":
        return a.astype(np.uint8) * np.uint8(255)
    if kind in "ui":
        mx = float(np.iinfo(a.dtype).max)
        f = np.clip(a.astype(np.float32), 0, None) * np.float32(255.0 / mx)
        return (f + 0.5).astype(np.uint8)
    if kind == "f":
        f = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return (np.clip(f, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise TypeError(f"unsupported pixel type {a.dtype}")


def _alpha01(alpha: np.ndarray) -> np.ndarray:
    return _scale_to_u8(alpha).astype(np.float32) / 255.0


def to_rgb8(
    block: np.ndarray,
    *,
    min_is_white: bool = False,
    colormap: Optional[np.ndarray] = None,
    scale_max: Optional[float] = None,
) -> np.ndarray:
    """Convert a ``(Y, X)`` or ``(Y, X, C)`` block to ``(Y, X, 3)`` uint8 by the module rules.

    Parameters
    ----------
    block : ndarray
        Pixels, channels last (``C`` in 1..4).
    min_is_white : bool
        Invert grey values first (TIFF photometric MINISWHITE).
    colormap : ndarray, optional
        ``(3, N)`` palette (TIFF colormap, any integer dtype); ``block`` holds indices.
    scale_max : float, optional
        Value that maps to 255 instead of the dtype rule (12-bit data in uint16: 4095; float data
        stored as 0..255: 255); chosen once per slide at open (:func:`value_range_rule`).
    """
    a = np.asarray(block)
    if colormap is not None:
        cm = np.asarray(colormap)
        idx = a[..., 0] if a.ndim == 3 else a
        rgb = cm[:, np.clip(idx.astype(np.int64), 0, cm.shape[1] - 1)]
        return _scale_to_u8(np.moveaxis(rgb, 0, -1).astype(cm.dtype))
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise ValueError(f"expected a (Y, X[, C]) block, got shape {a.shape}")
    c = a.shape[2]
    if min_is_white and c in (1, 2):
        grey = a[..., 0]
        if grey.dtype.kind in "ui":
            inv = np.iinfo(grey.dtype).max - grey
        elif grey.dtype.kind == "b":
            inv = ~grey
        else:
            inv = (float(scale_max) if scale_max else 1.0) - grey
        a = np.concatenate([inv[..., None].astype(a.dtype), a[..., 1:]], axis=2)
    if c == 3:
        out = _scale_to_u8(a, scale_max)
    elif c == 1:
        out = np.repeat(_scale_to_u8(a, scale_max), 3, axis=2)
    elif c in (2, 4):
        col = _scale_to_u8(a[..., :-1], scale_max).astype(np.float32)
        if c == 2:
            col = np.repeat(col, 3, axis=2)
        al = (_scale_to_u8(a[..., -1], scale_max).astype(np.float32) / 255.0)[..., None]
        out = (col * al + 255.0 * (1.0 - al) + 0.5).astype(np.uint8)
    else:
        raise ValueError(f"unsupported number of channels: {c}")
    return np.ascontiguousarray(out)


def value_range_rule(dtype, vmax: Optional[float]) -> tuple[Optional[float], Optional[str]]:
    """``(scale_max, warning)`` for a slide of ``dtype`` whose sampled maximum is ``vmax``.

    * integers wider than 8 bits whose maximum is <= 4095 -> 12-bit data (``scale_max`` 4095);
    * float data with a maximum above 1 -> 0..255 (max <= 255), 0..65535 (max <= 65535) or 0..max;
    * otherwise ``(None, None)``: the dtype rule of the module doc applies.
    """
    dtype = np.dtype(dtype)
    if vmax is None or not np.isfinite(vmax) or vmax <= 0:
        return None, None
    if dtype.kind in "ui" and dtype.itemsize > 1:
        if vmax <= TWELVE_BIT_MAX and np.iinfo(dtype).max > TWELVE_BIT_MAX:
            return float(TWELVE_BIT_MAX), (
                f"{dtype} pixel values are all <= {TWELVE_BIT_MAX} (max {vmax:g}): "
                "taken as 12-bit data and scaled by 255/4095"
            )
        return None, None
    if dtype.kind == "f" and vmax > 1.0 + 1e-6:
        for top, name in ((255.0, "0..255"), (65535.0, "0..65535")):
            if vmax <= top + 0.5:
                return top, (
                    f"float pixels exceed 1.0 (max {vmax:g}): taken as {name} "
                    f"and scaled by 255/{top:g} instead of as 0..1"
                )
        return float(vmax), f"float pixels exceed 65535 (max {vmax:g}): scaled by 255/{vmax:g}"
    return None, None
