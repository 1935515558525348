"""Overview picture: the slide thumbnail with every cell drawn in its class colour
and a legend with the counts per class (``overlay.png``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from ..results import BLAST_CLASSES, CellTable, atomic_path, class_color

__all__ = ["render_overlay", "write_overlay"]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def render_overlay(thumbnail: np.ndarray, table: CellTable, level0_shape: tuple[int, int], *,
                   counts: Optional[dict] = None, title: Optional[str] = None,
                   min_radius: float = 2.0):
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
        Counts per class for the legend (default ``table.counts()``).
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
    for poly, lab, cy, cx in zip(polys, labels, cys, cxs):
        r, g, b = class_color(lab)
        p = np.asarray(poly, dtype=np.float64).reshape(-1, 2) if poly is not None and not isinstance(poly, float) else np.zeros((0, 2))
        pts = [(float(x * sx), float(y * sy)) for y, x in p]
        ext = (max(x for x, _ in pts) - min(x for x, _ in pts)) if pts else 0.0
        if len(pts) >= 3 and ext >= 2 * min_radius:
            draw.polygon(pts, fill=(r, g, b, 70), outline=(r, g, b, 255), width=max(1, int(round(th / 800))))
        else:  # too small at this scale: a dot
            x, y, rad = cx * sx, cy * sy, min_radius
            draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=(r, g, b, 255))
    img = Image.alpha_composite(base, layer).convert("RGB")

    # legend: a panel to the right of the picture (never hides cells)
    counts = dict(counts if counts is not None else table.counts())
    lines = []
    if title:
        lines.append((None, title))
    total = sum(int(v) for v in counts.values())
    for name, n in counts.items():
        lines.append((name, f"{name}: {int(n)}" + (f" ({100.0 * n / total:.1f} %)" if total else "")))
    lines.append((None, f"cells: {total}"))
    if counts is None and table.is_classified and len(table):
        ts = table.summary()
        if ts.get("blast_percent") is not None and any(c in BLAST_CLASSES for c in table.classes):
            lines.append((None, f"blast: {ts['blast_percent']:.1f} % of confident cells"))
        lines.append((None, f"left for review: {ts.get('review', 0)}"))
    fsize = max(11, min(20, int(round(max(th, tw) / 90))))
    font = _font(fsize)
    probe = ImageDraw.Draw(img)
    pad, sw = fsize // 2, fsize
    widths = [probe.textlength(t, font=font) for _, t in lines]
    panel_w = int(pad * 3 + sw + max(widths or [0]) + pad)
    panel_h = int(pad * 2 + len(lines) * (fsize + pad // 2))
    canvas = Image.new("RGB", (tw + panel_w, max(th, panel_h)), (255, 255, 255))
    canvas.paste(img, (0, 0))
    ld = ImageDraw.Draw(canvas)
    x0 = tw
    ld.line([(x0, 0), (x0, canvas.height)], fill=(0, 0, 0), width=1)
    y = pad
    for name, text in lines:
        if name is not None:
            ld.rectangle([x0 + pad, y + 2, x0 + pad + sw - 2, y + fsize], fill=class_color(name), outline=(0, 0, 0))
        ld.text((x0 + pad * 2 + sw, y), text, fill=(0, 0, 0), font=font)
        y += fsize + pad // 2
    img = canvas
    return img.convert("RGB")


def write_overlay(slide, table: CellTable, path: str | os.PathLike, *, max_size: int = 2048,
                  counts: Optional[dict] = None, title: Optional[str] = None) -> Path:
    """Render the overlay from ``slide.thumbnail(max_size)`` and write a PNG atomically."""
    path = Path(path)
    thumb = slide.thumbnail(max_size)
    img = render_overlay(thumb, table, slide.shape, counts=counts, title=title)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", optimize=False)
    return path
