"""The one class legend: a colour swatch, the class, its count and percentage per line.

Drawn into ``overlay.png`` (a panel right of the thumbnail, :mod:`leukcore.export.overlay`) and into the
napari plugin's screenshots (a box in the top-left corner of the canvas) from the same lines and the same
geometry.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from ..results import class_color

__all__ = ["legend_lines", "legend_font_size", "legend_size", "draw_legend", "legend_font", "inset_legend"]

#: a legend line: (class name for a swatch in its colour, or None for plain text; the text)
Line = tuple  # (Optional[str], str)


def legend_font(size: int):
    """Pillow's default font at ``size`` px (the bitmap default font on Pillow < 10.1)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def legend_font_size(height: int, width: int) -> int:
    """Legend text size for a picture of ``height`` x ``width`` px (11-20 px)."""
    return max(11, min(20, int(round(max(height, width) / 90))))


def legend_lines(counts: Mapping[str, int], *, title: Optional[str] = None, extra: Sequence[str] = ()) -> list[Line]:
    """Lines of the legend: ``title``, ``<class>: n (p %)`` per class in ``counts`` order, ``cells: N``, ``extra``."""
    lines: list[Line] = []
    if title:
        lines.append((None, title))
    total = sum(int(v) for v in counts.values())
    for name, n in counts.items():
        lines.append((name, f"{name}: {int(n)}" + (f" ({100.0 * n / total:.1f} %)" if total else "")))
    lines.append((None, f"cells: {total}"))
    lines.extend((None, str(e)) for e in extra)
    return lines


def _metrics(fsize: int) -> tuple[int, int, int]:
    pad = fsize // 2
    return pad, fsize, fsize + pad // 2  # pad, swatch width, line step


def legend_size(lines: Sequence[Line], fsize: int) -> tuple[int, int]:
    """(width, height) in px of the legend of ``lines`` at text size ``fsize``."""
    from PIL import Image, ImageDraw

    font = legend_font(fsize)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad, sw, step = _metrics(fsize)
    widths = [probe.textlength(t, font=font) for _, t in lines]
    return int(pad * 3 + sw + max(widths or [0]) + pad), int(pad * 2 + len(lines) * step)


def draw_legend(draw, x0: int, y0: int, lines: Sequence[Line], fsize: int) -> None:
    """Draw the swatches and texts of ``lines`` with their top-left corner at ``(x0, y0)`` (a Pillow ImageDraw)."""
    font = legend_font(fsize)
    pad, sw, step = _metrics(fsize)
    y = y0 + pad
    for name, text in lines:
        if name is not None:
            draw.rectangle([x0 + pad, y + 2, x0 + pad + sw - 2, y + fsize], fill=class_color(name), outline=(0, 0, 0))
        draw.text((x0 + pad * 2 + sw, y), text, fill=(0, 0, 0), font=font)
        y += step


def inset_legend(image: np.ndarray, lines: Sequence[Line], fsize: Optional[int] = None) -> np.ndarray:
    """``image`` (RGB or RGBA) as RGB uint8 with the legend in a white, black-edged box in its top-left corner."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.ascontiguousarray(np.asarray(image)[..., :3]).astype(np.uint8))
    fsize = fsize or legend_font_size(img.height, img.width)
    if lines:
        w, h = legend_size(lines, fsize)
        d = ImageDraw.Draw(img, "RGBA")
        d.rectangle([0, 0, w, h], fill=(255, 255, 255, 220), outline=(0, 0, 0, 255))
        draw_legend(ImageDraw.Draw(img), 0, 0, lines, fsize)
    return np.asarray(img)
