"""QuPath-compatible GeoJSON export of a :class:`~leukcore.results.CellTable`.

QuPath (File > Import objects from file) reads a GeoJSON ``FeatureCollection``
whose features carry a ``geometry`` in full-resolution pixel units (origin at the
top-left of level 0, ``[x, y]`` order) and QuPath metadata in ``properties``:

``objectType``
    ``"detection"`` (imported as detection objects, not annotations).
``classification``
    ``{"name": <class>, "color": [r, g, b]}``.
``measurements``
    ``{<name>: <number>}`` (QuPath >= 0.4 map form; NaN values are left out,
    JSON has no NaN).

Each feature also has a stable ``id`` (a UUID derived from the slide name and the
cell id), so exports are byte-identical between runs.  The file is written
feature by feature (never the whole document in memory) and atomically.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..results import CellTable, atomic_path, class_color

__all__ = ["write_geojson", "iter_features", "cell_feature", "read_geojson", "read_geojson_table"]

_NS = uuid.UUID("6f1c5a3e-57a4-4c55-9a8e-6c1b2f0d9e11")

#: table columns exported as QuPath measurements (plus every prob_<class>)
MEASUREMENT_COLUMNS = ["cell_id", "score", "area_px", "area_um2", "centroid_x_um", "centroid_y_um", "confidence"]


def _num(v: float, nd: int = 4) -> float | int | None:
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    f = float(v)
    if not math.isfinite(f):
        return None
    r = round(f, nd)
    return int(r) if r == int(r) and abs(r) < 2**53 else r


def _ring(poly) -> list[list[float]]:
    """(K, 2) (y, x) vertices -> closed [[x, y], ...] ring, 2 decimals."""
    p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    ring = [[_num(x, 2), _num(y, 2)] for y, x in p]
    if ring and ring[0] != ring[-1]:
        ring.append(list(ring[0]))
    return ring


def cell_feature(rec: dict[str, Any], classes: list[str], namespace: str = "") -> dict[str, Any]:
    """One GeoJSON Feature (QuPath detection) from a table row as a dict."""
    poly = rec.get("polygon")
    ring = _ring(poly) if poly is not None and not isinstance(poly, float) else []
    if len(ring) < 4:  # degenerate: a small square around the centroid keeps it importable
        cy, cx = float(rec["centroid_y"]), float(rec["centroid_x"])
        ring = [
            [_num(cx - 1, 2), _num(cy - 1, 2)],
            [_num(cx + 1, 2), _num(cy - 1, 2)],
            [_num(cx + 1, 2), _num(cy + 1, 2)],
            [_num(cx - 1, 2), _num(cy + 1, 2)],
            [_num(cx - 1, 2), _num(cy - 1, 2)],
        ]
    meas: dict[str, Any] = {}
    for c in MEASUREMENT_COLUMNS + [f"prob_{k}" for k in classes]:
        if c in rec:
            v = _num(rec[c])
            if v is not None:
                meas[c] = v
    props: dict[str, Any] = {"objectType": "detection", "isLocked": False, "measurements": meas}
    label = rec.get("label")
    if isinstance(label, str) and label:
        props["classification"] = {"name": label, "color": list(class_color(label))}
    if "review" in rec and rec["review"] is not None and not isinstance(rec["review"], float):
        props["review"] = bool(rec["review"])
    fid = str(uuid.uuid5(_NS, f"{namespace}:{int(rec['cell_id'])}"))
    return {"type": "Feature", "id": fid, "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": props}


def iter_features(table: CellTable, namespace: str = "") -> Iterator[dict[str, Any]]:
    """GeoJSON features for every cell of ``table``, in table order."""
    classes = table.classes
    cols = list(table.df.columns)
    for row in table.df.itertuples(index=False, name=None):
        yield cell_feature(dict(zip(cols, row, strict=False)), classes, namespace)


def write_geojson(table: CellTable, path: str | os.PathLike, *, namespace: str | None = None) -> Path:
    """Write ``table`` as a QuPath-importable GeoJSON FeatureCollection (atomically).

    Parameters
    ----------
    table : CellTable
        Cells with level-0 polygons (and, when classified, ``label`` / ``prob_*``).
    path : path-like
        Output file, conventionally ``cells.geojson``.
    namespace : str, optional
        Seed of the per-feature UUIDs (default: the slide file name in ``table.meta``).

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    if namespace is None:
        namespace = Path(str(table.meta.get("slide") or table.meta.get("path") or "")).name
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write('{"type": "FeatureCollection", "features": [\n')
            first = True
            for feat in iter_features(table, namespace):
                if not first:
                    f.write(",\n")
                f.write(json.dumps(feat, separators=(",", ":"), allow_nan=False))
                first = False
            f.write("\n]}\n")
    return path


def read_geojson(path: str | os.PathLike) -> dict[str, Any]:
    """Read a GeoJSON file (plain :func:`json.load`), raising a clear error naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable GeoJSON file: {e}") from None


def read_geojson_table(path: str | os.PathLike) -> CellTable:
    """The inverse of :func:`write_geojson`: a :class:`CellTable` from a QuPath-style GeoJSON FeatureCollection.

    Polygons (``[x, y]`` rings, closing vertex dropped) become level-0 (y, x) polygons; the classification name,
    ``prob_<class>`` / ``confidence`` / ``cell_id`` / micron measurements and ``review`` come back when present
    (QuPath's older list form of ``measurements`` is read too).

    Raises
    ------
    leukcore.export.kinds.ResultsError
        Unreadable file, no ``features``, or a feature without a polygon (the message names the file).
    """
    from .kinds import ResultsError

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
