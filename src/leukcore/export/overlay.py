"""Overview picture: the slide thumbnail with every cell drawn in its class colour
and a legend with the counts per class (``overlay.png``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from ..results import BLAST_CLASSES, CellTable, atomic_path, class_color
from .legend import draw_legend, legend_font_size, legend_lines, legend_size

__all__ = ["render_overlay", "write_overlay"]


def render_overlay(
    thumbnail: np.ndarray,
    table: CellTable,
    level0_shape: tuple[int, int],
    *,
    counts: Optional[dict] = None,
    title: Optional[str] = None,
    min_radius: float = 2.0,
):
    """Draw ``table``'s cells onto an RGB ``thumbnail`` of a slide of ``level0_shape``.

    Parameters
    ----------
    thumbnail : (h, w, 3) uint8
        Picture of the whole slide (any downsample; the scale is taken from the shapes).
    table : CellTable
        Cells with level-0 polygons; coloured by ``label`` (yellow when unclassified).
    level0_shape : (int, int)
        Level-0 (height, width) of the slide.
    counts : dict, optional
        Counts per class for the legend (default ``table.counts()``); the legend is
        :mod:`leukcore.export.legend`'s.
    title : str, optional
        First legend line (e.g. the slide name).

    Returns
    -------
    PIL.Image.Image
        RGB image: the thumbnail (same pixel grid) with a legend panel added on its right.
    """
    from PIL import Image, ImageDraw

    thumb = np.asarray(thumbnail, dtype=np.uint8)
    if thumb.ndim != 3 or thumb.shape[2] != 3:
        raise ValueError(f"thumbnail must be (h, w, 3) uint8, got {thumb.shape}")
    th, tw = thumb.shape[:2]
    sy, sx = th / float(level0_shape[0]), tw / float(level0_shape[1])
    base = Image.fromarray(thumb, "RGB").convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    labels = table.df["label"].astype(str).tolist() if table.is_classified else ["unclassified"] * len(table)
    polys = table.df["polygon"].tolist() if len(table) else []
    cys = table.df["centroid_y"].to_numpy(np.float64) if len(table) else np.zeros(0)
    cxs = table.df["centroid_x"].to_numpy(np.float64) if len(table) else np.zeros(0)
    for poly, lab, cy, cx in zip(polys, labels, cys, cxs, strict=False):
        r, g, b = class_color(lab)
        p = (
            np.asarray(poly, dtype=np.float64).reshape(-1, 2)
            if poly is not None and not isinstance(poly, float)
            else np.zeros((0, 2))
        )
        pts = [(float(x * sx), float(y * sy)) for y, x in p]
        ext = (max(x for x, _ in pts) - min(x for x, _ in pts)) if pts else 0.0
        if len(pts) >= 3 and ext >= 2 * min_radius:
            draw.polygon(pts, fill=(r, g, b, 70), outline=(r, g, b, 255), width=max(1, int(round(th / 800))))
        else:  # too small at this scale: a dot
            x, y, rad = cx * sx, cy * sy, min_radius
            draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=(r, g, b, 255))
    img = Image.alpha_composite(base, layer).convert("RGB")

    # legend: a panel to the right of the picture (never hides cells)
    lines = legend_lines(
        counts if counts is not None else table.counts(),
        title=title,
        extra=_review_lines(table) if counts is None else (),
    )
    fsize = legend_font_size(th, tw)
    panel_w, panel_h = legend_size(lines, fsize)
    canvas = Image.new("RGB", (tw + panel_w, max(th, panel_h)), (255, 255, 255))
    canvas.paste(img, (0, 0))
    ld = ImageDraw.Draw(canvas)
    ld.line([(tw, 0), (tw, canvas.height)], fill=(0, 0, 0), width=1)
    draw_legend(ld, tw, 0, lines, fsize)
    img = canvas
    return img.convert("RGB")


def _review_lines(table: CellTable) -> list[str]:
    """Blast percentage over confidently classified cells and the number left for review."""
    if not table.is_classified or not len(table):
        return []
    s = table.summary()
    out = []
    if any(c in BLAST_CLASSES for c in table.classes):
        bp = s.get("blast_percent")
        out.append("blast: " + ("-" if bp is None else f"{bp:.1f} %") + " of confident cells")
    out.append(f"left for review: {s.get('review', 0)}")
    return out


def write_overlay(
    slide,
    table: CellTable,
    path: str | os.PathLike,
    *,
    max_size: int = 2048,
    counts: Optional[dict] = None,
    title: Optional[str] = None,
) -> Path:
    """Render the overlay from ``slide.thumbnail(max_size)`` and write a PNG atomically."""
    path = Path(path)
    thumb = slide.thumbnail(max_size)
    img = render_overlay(thumb, table, slide.shape, counts=counts, title=title)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", optimize=False)
    return path
