"""How an analysis treats pixels that are not in the file (used by :func:`leukcore.pipeline.analyze_slide`).

* default: a slide whose index shows missing tiles / chunks in the analysed region is refused before
  any model runs (:class:`~leukcore.io.errors.MissingTileError` naming the file and the box); pixels
  found missing or NaN while reading raise the same error;
* ``skip_missing=True``: those regions read as background (255, where no cell is found) and are
  recorded; the summary gets ``missing = {"count", "boxes", "skipped": True}`` and the run is never
  marked complete.
"""

from __future__ import annotations

__all__ = ["apply_missing_policy", "integrity_summary", "verify_pixels", "MAX_SUMMARY_BOXES"]

#: boxes listed in ``summary["missing"]["boxes"]`` (``count`` is always the full number)
MAX_SUMMARY_BOXES = 200


def apply_missing_policy(slide, skip_missing: bool, region=None):
    """The slide to analyse: refused when damaged (default) or a copy that skips and records."""
    if not skip_missing:
        slide.check_missing(region)
        return slide
    if not hasattr(slide, "with_missing_policy"):
        return slide
    return slide.with_missing_policy("skip")


def integrity_summary(slide, skip_missing: bool) -> dict:
    """``{"warnings": [...], "missing": {"count", "boxes", "skipped"}}`` for the analysis summary."""
    warns = [str(w) for w in (getattr(slide, "warnings", None) or [])]
    regs = slide.skipped_regions() if hasattr(slide, "skipped_regions") else []
    missing = {
        "count": len(regs),
        "skipped": bool(skip_missing and regs),
        "boxes": [dict(r) for r in regs[:MAX_SUMMARY_BOXES]],
    }
    return {"warnings": warns, "missing": missing}


def verify_pixels(slide, window: int = 2048) -> int:
    """Read every stored level of ``slide`` window by window (``leuk info --check``); returns the number of
    windows read.  Raises the first read problem (:class:`~leukcore.io.errors.MissingTileError`,
    :class:`~leukcore.io.errors.CorruptSlideError`...).  Memory stays at one window.
    """
    n = 0
    readers = slide._readers or []
    for i in range(len(slide.levels)):
        r = readers[i] if i < len(readers) else None
        if r is None:
            continue
        H, W = r.shape[:2]
        th, tw = r.tile or (1, 1)
        wy = max(th, (window // th) * th)
        wx = max(tw, (window // tw) * tw)
        for y in range(0, H, wy):
            for x in range(0, W, wx):
                r[y : min(H, y + wy), x : min(W, x + wx)]
                n += 1
    return n
