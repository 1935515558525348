"""Analysis regions: the one clip of a level-0 box to a slide.

A region is ``(y0, x0, y1, x1)`` in level-0 pixels, half-open, the ``region`` argument of
:func:`leukcore.pipeline.analyze_slide` / :func:`leukcore.detect.detect_cells`.  Detection clips what it is
given (``rounding="nearest"``); the napari plugin clips the box a camera sees or shapes enclose
(``rounding="outward"``: every partly covered pixel is in).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

__all__ = ["RegionError", "clip_region"]


class RegionError(ValueError):
    """The requested region is malformed, empty or does not meet the slide."""


def clip_region(
    region: Optional[Sequence[float]], shape: Sequence[int], *, rounding: str = "nearest"
) -> tuple[int, int, int, int]:
    """Round ``region`` to whole pixels and clip it to a slide of level-0 ``shape``.

    Parameters
    ----------
    region : (y0, x0, y1, x1) or None
        Level-0 box; None is the whole slide.
    shape : (H, W, ...)
        Level-0 shape of the slide.
    rounding : {"nearest", "outward"}
        ``"nearest"`` rounds every bound to the nearest integer; ``"outward"`` floors the start and ceils
        the end (the smallest pixel box holding the float box).

    Returns
    -------
    (int, int, int, int)

    Raises
    ------
    RegionError
        ``region`` is not four numbers, or the clipped box is empty.
    """
    H, W = int(shape[0]), int(shape[1])
    if region is None:
        return (0, 0, H, W)
    if len(region) != 4:
        raise RegionError(f"region must be (y0, x0, y1, x1) in level-0 pixels, got {region!r}")
    y0, x0, y1, x1 = (float(v) for v in region)
    if rounding == "nearest":
        b = [int(round(v)) for v in (y0, x0, y1, x1)]
    elif rounding == "outward":
        b = [int(math.floor(y0)), int(math.floor(x0)), int(math.ceil(y1)), int(math.ceil(x1))]
    else:
        raise ValueError(f"unknown rounding {rounding!r}: use 'nearest' or 'outward'")
    box = (max(0, b[0]), max(0, b[1]), min(H, b[2]), min(W, b[3]))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise RegionError(
            f"the region ({y0:.0f}, {x0:.0f}) - ({y1:.0f}, {x1:.0f}) px is empty or does not "
            f"meet the slide (0, 0) - ({H}, {W}) px"
        )
    return box
