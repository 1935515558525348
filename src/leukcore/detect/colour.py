"""The colours the detector reads off a field: the glass (background) colour and the nucleated-cell purple."""

from __future__ import annotations

import numpy as np

__all__ = ["background_color", "purple_measure"]


def background_color(img: np.ndarray) -> np.ndarray:
    """RGB of the bright background (median of the brightest 10 % of pixels), float32 (3,)."""
    a = np.asarray(img)
    sub = a[:: max(1, a.shape[0] // 256), :: max(1, a.shape[1] // 256)].reshape(-1, 3).astype(np.float32)
    g = sub.mean(axis=1)
    sel = sub[g >= np.percentile(g, 90)]
    bg = np.median(sel, axis=0) if len(sel) else np.full(3, 255.0, np.float32)
    return np.clip(bg, 96.0, 255.0).astype(np.float32)


def purple_measure(img: np.ndarray) -> np.ndarray:
    """Nucleated-cell (Romanowsky purple) measure: high blue-minus-green on a dark pixel, float32."""
    a = img.astype(np.float32)
    bg = background_color(img)
    a = a / bg.reshape(1, 1, 3) * 255.0
    bmg = a[..., 2] - a[..., 1]
    dark = 255.0 - a[..., 1]
    return np.minimum(bmg, dark)
