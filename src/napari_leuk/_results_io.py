"""Find and load the results of ``leuk analyze`` / ``leuk batch`` (no napari, no Qt).

A results folder holds ``summary.json`` (with the slide path) and ``cells.parquet``
(also ``cells.csv``, ``cells.geojson``...).  A lone ``cells.parquet`` or
``cells.geojson`` is read too; its slide is looked up in a ``summary.json`` beside
it, then by the slide name in the table's meta next to the folder.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np

from leukcore.results import CellTable

__all__ = ["is_results_path", "load_results", "table_from_geojson", "ResultsError"]

RESULT_FILES = ("cells.parquet", "cells.geojson", "cells.csv")


class ResultsError(ValueError):
    """A results file or folder that cannot be read (the message names it)."""


def is_results_path(path: str | os.PathLike) -> bool:
    """True for a results folder, a ``*.parquet`` table or a ``*.geojson`` file."""
    p = Path(path)
    if p.is_dir():
        return (p / "summary.json").is_file() or any((p / f).is_file() for f in RESULT_FILES)
    name = p.name.lower()
    return name.endswith(".parquet") or name.endswith(".geojson")


def table_from_geojson(path: str | os.PathLike) -> CellTable:
    """A :class:`CellTable` from a QuPath-style GeoJSON FeatureCollection (as ``leuk`` writes it)."""
    from leukcore.export.geojson import read_geojson

    try:
        doc = read_geojson(path)
    except ValueError as e:
        raise ResultsError(str(e)) from None
    feats = doc.get("features") if isinstance(doc, dict) else None
    if feats is None:
        raise ResultsError(f"{path}: not a GeoJSON FeatureCollection (no 'features')")
    polys, cents, scores, labels, meas_rows = [], [], [], [], []
    for i, f in enumerate(feats):
        geom = (f or {}).get("geometry") or {}
        coords = geom.get("coordinates") or []
        if geom.get("type") == "MultiPolygon" and coords:
            coords = coords[0]
        if geom.get("type") not in ("Polygon", "MultiPolygon") or not coords:
            raise ResultsError(f"{path}: feature {i} has no polygon geometry")
        ring = np.asarray(coords[0], dtype=np.float64).reshape(-1, 2)
        if len(ring) > 1 and np.allclose(ring[0], ring[-1]):
            ring = ring[:-1]
        yx = ring[:, ::-1].astype(np.float32)
        polys.append(yx)
        props = f.get("properties") or {}
        meas = props.get("measurements") or {}
        if isinstance(meas, list):  # QuPath < 0.4 list form
            meas = {m.get("name"): m.get("value") for m in meas if isinstance(m, dict)}
        cents.append(yx.mean(axis=0))
        scores.append(float(meas.get("score", 1.0)))
        cls = props.get("classification") or {}
        labels.append(cls.get("name") if isinstance(cls, dict) else None)
        meas = dict(meas)
        if "review" in props:
            meas["review"] = bool(props["review"])
        meas_rows.append(meas)
    table = CellTable.from_detections(np.asarray(cents).reshape(-1, 2), polys, np.asarray(scores), mpp=None)
    if any(lab for lab in labels):
        classes = sorted({k[5:] for m in meas_rows for k in m if k.startswith("prob_")})
        table.df["label"] = [lab or "unclassified" for lab in labels]
        for c in classes:
            table.df[f"prob_{c}"] = np.array([m.get(f"prob_{c}", math.nan) for m in meas_rows], np.float32)
        conf = [m.get("confidence", math.nan) for m in meas_rows]
        table.df["confidence"] = np.array(conf, dtype=np.float32)
        table.df["review"] = [bool(m.get("review", False)) for m in meas_rows]
        if classes:
            table.meta["classes"] = classes
    ids = [m.get("cell_id") for m in meas_rows]
    if all(isinstance(v, (int, float)) for v in ids) and len(set(ids)) == len(ids):
        table.df["cell_id"] = np.asarray(ids, dtype=np.int64)
    for col in ("area_um2", "centroid_y_um", "centroid_x_um"):
        vals = [m.get(col) for m in meas_rows]
        if vals and all(v is not None for v in vals):
            table.df[col] = np.asarray(vals, dtype=np.float64)
    return table


def _read_summary(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ResultsError(f"{path}: not a readable summary.json: {e}") from None


def load_results(path: str | os.PathLike) -> tuple[CellTable, Optional[str], dict]:
    """Read a results folder / table file.

    Returns
    -------
    table : CellTable
    slide_path : str or None
        The analysed slide when it can be found on disk.
    summary : dict
        ``summary.json`` when present, else ``{}``.

    Raises
    ------
    ResultsError
        Missing or unreadable files (the message names the path).
    """
    p = Path(path)
    if not p.exists():
        raise ResultsError(f"{p}: no such file or directory")
    folder = p if p.is_dir() else p.parent
    summary = _read_summary(folder / "summary.json") or {}
    if p.is_dir():
        for name in RESULT_FILES:
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise ResultsError(f"{folder}: results folder without cells.parquet / cells.geojson / cells.csv")
    try:
        name = p.name.lower()
        if name.endswith(".parquet"):
            table = CellTable.read_parquet(p)
        elif name.endswith(".geojson"):
            table = table_from_geojson(p)
        elif name.endswith(".csv"):
            table = CellTable.read_csv(p)
        else:
            raise ResultsError(f"{p}: not a results file (expected .parquet, .geojson or .csv)")
    except ResultsError:
        raise
    except Exception as e:  # pyarrow / pandas errors: name the file
        raise ResultsError(f"{p}: cannot read cell table: {e}") from None

    meta = table.meta
    sl = summary.get("slide") or {}
    if not meta.get("mpp"):
        m = (summary.get("mpp") or {}).get("value")
        if m:
            meta["mpp"] = float(m)
            if table.df["centroid_y_um"].isna().all():
                table.df["centroid_y_um"] = table.df["centroid_y"] * float(m)
                table.df["centroid_x_um"] = table.df["centroid_x"] * float(m)
    if not meta.get("shape") and sl.get("shape"):
        meta["shape"] = list(sl["shape"])
    if "classes" in summary and not meta.get("classes"):
        meta["classes"] = list(summary["classes"])
    slide_path = None
    candidates = []
    if sl.get("path"):
        candidates.append(Path(sl["path"]))
    nm = sl.get("name") or meta.get("slide")
    if nm:
        candidates += [folder / nm, folder.parent / nm]
    for c in candidates:
        if c.exists():
            slide_path = str(c)
            break
    meta["results_path"] = str(p)
    if slide_path:
        meta.setdefault("path", slide_path)
    return table, slide_path, summary
