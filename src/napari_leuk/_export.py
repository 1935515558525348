"""Export of the (possibly user-edited) cells: CSV / Parquet / QuPath GeoJSON, and a screenshot with legend."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from leukcore.results import CellTable, atomic_path

__all__ = ["export_table", "save_screenshot", "TABLE_FILTER"]

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


def save_screenshot(
    viewer, path: str | os.PathLike, counts: Mapping[str, int], title: Optional[str] = None, extra: Sequence[str] = ()
) -> Path:
    """Save the canvas (``viewer.screenshot``) with the core's class legend
    (:func:`leukcore.export.legend.inset_legend`: ``counts`` per class, ``cells: N``, ``extra``) drawn into its
    top-left corner, as PNG (atomically).
    """
    from PIL import Image

    from leukcore.export.legend import inset_legend, legend_lines

    path = Path(path)
    if not path.name.lower().endswith(".png"):
        path = path.with_name(path.name + ".png")
    shot = viewer.screenshot(canvas_only=True, flash=False)
    img = inset_legend(np.asarray(shot), legend_lines(counts, title=title, extra=extra))
    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")
    return path
