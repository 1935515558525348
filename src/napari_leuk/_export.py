"""Export of the (possibly user-edited) cells: CSV / Parquet / QuPath GeoJSON, and a screenshot with legend."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from leukcore.results import CellTable, atomic_path

__all__ = ["export_table", "draw_legend", "save_screenshot", "TABLE_FILTER"]

TABLE_FILTER = "Parquet (*.parquet);;CSV (*.csv);;QuPath GeoJSON (*.geojson)"


def export_table(table: CellTable, path: str | os.PathLike) -> Path:
    """Write ``table`` by suffix: ``.csv``, ``.parquet`` or ``.geojson`` (QuPath detections)."""
    path = Path(path)
    suf = path.name.lower()
    if suf.endswith(".csv"):
        return table.to_csv(path)
    if suf.endswith(".parquet"):
        return table.to_parquet(path)
    if suf.endswith(".geojson") or suf.endswith(".json"):
        from leukcore.export.geojson import write_geojson

        return write_geojson(table, path)
    raise ValueError(f"{path}: unknown export type; use .csv, .parquet or .geojson")


def draw_legend(image: np.ndarray, rows: Sequence, title: Optional[str] = None,
                extra: Sequence[str] = ()) -> np.ndarray:
    """Draw a legend box (colour swatch, class, count, percent) into the top-left of an RGB(A) image."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    h = max(12, img.height // 45)
    try:
        font = ImageFont.load_default(size=h)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    lines = ([(None, title)] if title else []) + [
        (r.rgb, f"{r.name}: {r.count}" + ("" if r.percent is None else f" ({r.percent:.1f} %)")) for r in rows
    ] + [(None, e) for e in extra]
    d = ImageDraw.Draw(img, "RGBA")
    pad, sw = h // 2, h
    width = max(int(d.textlength(t, font=font)) for _, t in lines) + 3 * pad + sw if lines else 0
    height = len(lines) * (h + pad) + pad
    d.rectangle([0, 0, width, height], fill=(255, 255, 255, 220), outline=(0, 0, 0, 255))
    y = pad
    for rgb, text in lines:
        x = pad
        if rgb is not None:
            d.rectangle([x, y, x + sw, y + h], fill=tuple(rgb) + (255,), outline=(0, 0, 0, 255))
        d.text((x + sw + pad, y), text, fill=(0, 0, 0, 255), font=font)
        y += h + pad
    return np.asarray(img)


def save_screenshot(viewer, path: str | os.PathLike, rows: Sequence, title: Optional[str] = None,
                    extra: Sequence[str] = ()) -> Path:
    """Save the canvas (``viewer.screenshot``) with the class legend drawn in, as PNG (atomically)."""
    from PIL import Image

    path = Path(path)
    if not path.name.lower().endswith(".png"):
        path = path.with_name(path.name + ".png")
    shot = viewer.screenshot(canvas_only=True, flash=False)
    img = draw_legend(np.asarray(shot), rows, title, extra)
    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")
    return path
