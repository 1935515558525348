"""CellTable -> napari layers: colours per class, features, class edits, review filter.

No Qt here: these helpers build napari layer-data tuples and mutate layers, so
they can be unit-tested and benchmarked apart from the widget.

Three representations are supported (``kind``):

``"shapes"``
    one polygon per cell (outline in the class colour, translucent face);
    exact outlines, slowest to add (triangulation).
``"points"``
    one point per cell at its centroid, sized by its area; fastest.
``"labels"``
    a lazy multiscale label image (cells rasterised per chunk on demand)
    with a :class:`napari.utils.colormaps.DirectLabelColormap` mapping
    ``cell_id`` to its class colour.

``benchmarks/bench_napari_layers.py`` measures them; see ``docs/napari.md``.
:data:`DEFAULT_KIND` is the one the widget uses, and :data:`SHAPES_LIMIT`
switches to points above that many cells.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from leukcore.results import CellTable, class_color

__all__ = [
    "CELLS_LAYER_NAME",
    "DEFAULT_KIND",
    "SHAPES_LIMIT",
    "LOW_CONF_DEFAULT",
    "class_rgba",
    "features_frame",
    "cells_layer_data",
    "choose_kind",
    "table_from_layer",
    "set_cell_class",
    "recolor",
    "show_only_low_confidence",
    "describe_cell",
    "cell_index_at",
    "rasterize_labels",
    "labels_colormap",
]

CELLS_LAYER_NAME = "cells"
#: representation used by the widget when the table is small enough (see the benchmark)
DEFAULT_KIND = "shapes"
#: above this many cells the widget shows points (polygons are too slow to add / draw)
SHAPES_LIMIT = 2000
#: confidence below which a cell is "low confidence" when the table has no ``review`` column
LOW_CONF_DEFAULT = 0.6
_UNCLASSIFIED = "unclassified"


# ----------------------------------------------------------------- colours
def _labels_of(df) -> np.ndarray:
    if "label" in df.columns:
        lab = df["label"].astype(object).to_numpy()
        return np.array(
            [_UNCLASSIFIED if (v is None or (isinstance(v, float) and math.isnan(v))) else str(v) for v in lab],
            dtype=object,
        )
    return np.full(len(df), _UNCLASSIFIED, dtype=object)


def class_rgba(labels: Sequence[str], alpha: float = 1.0) -> np.ndarray:
    """(N, 4) float RGBA in [0, 1] for class names, from :func:`leukcore.results.class_color`."""
    labels = list(labels)
    out = np.empty((len(labels), 4), dtype=np.float32)
    cache: dict[str, tuple] = {}
    for i, name in enumerate(labels):
        c = cache.get(name)
        if c is None:
            r, g, b = class_color(str(name))
            c = cache[name] = (r / 255.0, g / 255.0, b / 255.0, float(alpha))
        out[i] = c
    return out


def features_frame(table: CellTable):
    """The per-cell table as a napari ``features`` frame (no polygon column, label always present)."""
    df = table.df.drop(columns=["polygon"], errors="ignore").copy()
    df["label"] = _labels_of(table.df)
    if "review" not in df.columns:
        conf = df["confidence"].to_numpy(dtype=float) if "confidence" in df.columns else np.ones(len(df))
        df["review"] = conf < LOW_CONF_DEFAULT
    df["review"] = df["review"].fillna(False).astype(bool)
    if "edited" not in df.columns:
        df["edited"] = False
    return df.reset_index(drop=True)


def choose_kind(n_cells: int, kind: str = "auto") -> str:
    """Resolve ``"auto"`` to ``"shapes"`` up to :data:`SHAPES_LIMIT` cells, else ``"points"``."""
    if kind != "auto":
        if kind not in ("shapes", "points", "labels"):
            raise ValueError(f"unknown cells layer kind {kind!r}: use auto, shapes, points or labels")
        return kind
    return DEFAULT_KIND if n_cells <= SHAPES_LIMIT else "points"


def _scale(table: CellTable, scale) -> tuple[float, float]:
    if scale is not None:
        return tuple(float(s) for s in scale)
    mpp = table.meta.get("mpp")
    try:
        mpp = float(mpp)
    except (TypeError, ValueError):
        mpp = None
    return (mpp, mpp) if mpp and math.isfinite(mpp) and mpp > 0 else (1.0, 1.0)


def _polygons(table: CellTable) -> list[np.ndarray]:
    polys = []
    for p, cy, cx in zip(table.df["polygon"], table.df["centroid_y"], table.df["centroid_x"], strict=False):
        a = None if p is None or isinstance(p, float) else np.asarray(p, dtype=np.float32).reshape(-1, 2)
        if a is None or len(a) < 3:  # degenerate: a small square around the centroid
            a = np.array([[cy - 2, cx - 2], [cy - 2, cx + 2], [cy + 2, cx + 2], [cy + 2, cx - 2]], np.float32)
        polys.append(a)
    return polys


def cells_layer_data(
    table: CellTable,
    kind: str = "auto",
    *,
    scale=None,
    name: str = CELLS_LAYER_NAME,
    shape: Optional[Sequence[int]] = None,
) -> tuple:
    """A napari ``LayerDataTuple`` ``(data, kwargs, layer_type)`` showing ``table`` coloured by class.

    Parameters
    ----------
    table : CellTable
        Cells in level-0 pixels.
    kind : {"auto", "shapes", "points", "labels"}
        Representation (see the module doc).
    scale : (float, float), optional
        Layer scale; defaults to ``(mpp, mpp)`` from ``table.meta`` (so it overlays the slide layer).
    shape : (int, int), optional
        Level-0 slide shape, needed for ``kind="labels"`` (defaults to ``table.meta["shape"]``).
    """
    kind = choose_kind(len(table), kind)
    feats = features_frame(table)
    rgba = class_rgba(feats["label"])
    meta = {
        "leuk_meta": dict(table.meta),
        "leuk_kind": kind,
        "leuk_polygons": list(table.df["polygon"]) if "polygon" in table.df else [],
    }
    common = {"name": name, "scale": _scale(table, scale), "features": feats, "metadata": meta}
    if scale is None and common["scale"] != (1.0, 1.0):
        common["units"] = ("um", "um")  # as the reader's slide layers
    if kind == "shapes":
        face = rgba.copy()
        face[:, 3] = 0.15
        return (
            _polygons(table),
            {
                **common,
                "shape_type": "polygon",
                "edge_color": rgba,
                "face_color": face,
                "edge_width": 3,
                "opacity": 1.0,
            },
            "shapes",
        )
    if kind == "points":
        pts = feats[["centroid_y", "centroid_x"]].to_numpy(dtype=np.float64).reshape(-1, 2)
        area = feats["area_px"].to_numpy(dtype=np.float64) if "area_px" in feats else np.full(len(feats), 200.0)
        size = 2.0 * np.sqrt(np.nan_to_num(area, nan=200.0).clip(16, None) / np.pi)
        face = rgba.copy()
        face[:, 3] = 0.0
        return (
            pts,
            {
                **common,
                "size": size,
                "face_color": face,
                "border_color": rgba,
                "border_width": 0.12,
                "border_width_is_relative": True,
                "opacity": 1.0,
                "symbol": "disc",
            },
            "points",
        )
    # labels
    shp = tuple(shape) if shape is not None else tuple(table.meta.get("shape") or ())[:2]
    if len(shp) != 2:
        raise ValueError("kind='labels' needs the slide shape (pass shape= or set table.meta['shape'])")
    data = rasterize_labels(table, shp)
    return (data, {**common, "colormap": labels_colormap(feats), "opacity": 0.8, "multiscale": True}, "labels")


def labels_colormap(feats):
    """DirectLabelColormap: cell_id -> class colour (0 transparent)."""
    from napari.utils.colormaps import DirectLabelColormap

    rgba = class_rgba(feats["label"])
    cmap = {None: np.zeros(4, np.float32), 0: np.zeros(4, np.float32)}
    cmap.update({int(i): c for i, c in zip(feats["cell_id"].to_numpy(), rgba, strict=False)})
    return DirectLabelColormap(color_dict=cmap)


def rasterize_labels(table: CellTable, shape: Sequence[int], chunk: int = 1024, min_size: int = 1024) -> list:
    """Lazy multiscale label pyramid (level 0 first, 2x steps) of the cells' polygons.

    Each chunk is drawn on demand (:func:`leukcore.export.labels.rasterize_chunk`, the rasteriser of
    ``labels.ome.zarr``) from the cells whose bounding box meets it, so nothing the size of the slide is
    ever allocated.
    """
    from leukcore.export.labels import rasterize_chunk

    H, W = int(shape[0]), int(shape[1])
    polys = _polygons(table)
    ids = table.df["cell_id"].to_numpy(dtype=np.int64) if len(table) else np.zeros(0, np.int64)
    boxes = (
        np.array([[p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()] for p in polys]).reshape(-1, 4)
        if polys
        else np.zeros((0, 4))
    )

    levels = []
    ds = 1
    while True:
        h, w = int(math.ceil(H / ds)), int(math.ceil(W / ds))

        def block(y0, x0, bh, bw, ds=ds):
            Y0, X0, Y1, X1 = y0 * ds, x0 * ds, (y0 + bh) * ds, (x0 + bw) * ds
            sel = np.nonzero((boxes[:, 0] < Y1) & (boxes[:, 2] >= Y0) & (boxes[:, 1] < X1) & (boxes[:, 3] >= X0))[0]
            return rasterize_chunk([polys[i] for i in sel], ids[sel], y0, x0, bh, bw, downsample=ds, dtype=np.int32)

        levels.append(_lazy_blocks(block, (h, w), chunk))
        if max(h, w) <= min_size:
            break
        ds *= 2
    return levels


def _lazy_blocks(fn, shape, chunk):
    import dask.array as da

    def f(block_info=None):
        loc = block_info[None]["array-location"]
        (y0, y1), (x0, x1) = loc
        return fn(y0, x0, y1 - y0, x1 - x0)

    import uuid

    # an explicit name: tokenising the closure would pickle every polygon (seconds for 20k cells)
    return da.map_blocks(
        f,
        dtype=np.int32,
        chunks=da.core.normalize_chunks((chunk, chunk), shape),
        meta=np.zeros((0, 0), np.int32),
        name=f"leuk-labels-{uuid.uuid4().hex}",
    )


# ------------------------------------------------------------ layer access
def table_from_layer(layer) -> CellTable:
    """Rebuild a :class:`CellTable` (with the user's class edits) from a cells layer."""
    df = layer.features.copy()
    polys = layer.metadata.get("leuk_polygons") or []
    if len(polys) == len(df):
        df["polygon"] = polys
    meta = dict(layer.metadata.get("leuk_meta") or {})
    return CellTable(df, meta)


def recolor(layer, rows: Optional[Sequence[int]] = None) -> None:
    """Re-apply class colours from ``layer.features['label']`` (all rows, or only ``rows``)."""
    feats = layer.features
    kind = layer.metadata.get("leuk_kind")
    if kind == "labels":
        layer.colormap = labels_colormap(feats)
        return
    idx = np.arange(len(feats)) if rows is None else np.asarray(list(rows), dtype=int)
    if len(idx) == 0:
        return
    rgba = class_rgba(feats["label"].to_numpy()[idx])
    if kind == "shapes":
        edge = np.asarray(layer.edge_color).copy()
        face = np.asarray(layer.face_color).copy()
        edge[idx] = rgba
        f = rgba.copy()
        f[:, 3] = 0.15
        face[idx] = f
        layer.edge_color = edge
        layer.face_color = face
    elif kind == "points":
        border = np.asarray(layer.border_color).copy()
        border[idx] = rgba
        layer.border_color = border
    layer.refresh()


def set_cell_class(layer, rows: Sequence[int], new_class: str) -> None:
    """Set the class of cells (row indices into ``layer.features``) and recolour them.

    The edited rows get ``edited=True`` and ``review=False``; probabilities are kept
    as the model's output.
    """
    rows = [int(r) for r in rows]
    if not rows:
        return
    feats = layer.features
    n = len(feats)
    bad = [r for r in rows if not 0 <= r < n]
    if bad:
        raise IndexError(f"cell rows {bad} out of range for a layer of {n} cells")
    feats.loc[rows, "label"] = str(new_class)
    feats.loc[rows, "edited"] = True
    feats.loc[rows, "review"] = False
    layer.features = feats
    recolor(layer, rows)


def show_only_low_confidence(layer, only: bool) -> int:
    """Hide (or show again) the confident cells; returns how many cells remain visible."""
    feats = layer.features
    low = feats["review"].to_numpy(dtype=bool) if "review" in feats else np.zeros(len(feats), bool)
    keep = low if only else np.ones(len(feats), bool)
    kind = layer.metadata.get("leuk_kind")
    if kind == "shapes":
        recolor(layer)
        if only:
            edge = np.asarray(layer.edge_color).copy()
            face = np.asarray(layer.face_color).copy()
            edge[~keep, 3] = 0.0
            face[~keep, 3] = 0.0
            layer.edge_color = edge
            layer.face_color = face
    elif kind == "points":
        layer.shown = keep
    elif kind == "labels":
        cmap = labels_colormap(feats)
        if only:
            d = dict(cmap.color_dict)
            for cid in feats["cell_id"].to_numpy()[~keep]:
                d[int(cid)] = np.zeros(4, np.float32)
            from napari.utils.colormaps import DirectLabelColormap

            cmap = DirectLabelColormap(color_dict=d)
        layer.colormap = cmap
    layer.metadata["leuk_low_only"] = bool(only)
    layer.refresh()
    return int(keep.sum())


def cell_index_at(layer, world_pos) -> Optional[int]:
    """Row index of the cell under ``world_pos`` (world coords), or None."""
    kind = layer.metadata.get("leuk_kind")
    if kind == "labels":
        val = layer.get_value(world_pos, world=True)
        if isinstance(val, tuple):
            val = val[-1]
        if val is None or int(val) == 0:
            return None
        hits = np.nonzero(layer.features["cell_id"].to_numpy() == int(val))[0]
        return int(hits[0]) if len(hits) else None
    val = layer.get_value(world_pos, world=True)
    if isinstance(val, tuple):
        val = val[0]
    return None if val is None else int(val)


def describe_cell(feats, row: int) -> str:
    """One line for the status bar: id, class, confidence and probabilities of one cell."""
    r = feats.iloc[int(row)]
    parts = [f"cell {int(r['cell_id'])}: {r['label']}"]
    if "confidence" in feats and not _isnan(r.get("confidence")):
        parts.append(f"confidence {float(r['confidence']):.2f}")
    probs = [(c[5:], float(r[c])) for c in feats.columns if c.startswith("prob_") and not _isnan(r[c])]
    if probs:
        parts.append(", ".join(f"p({k})={v:.2f}" for k, v in probs))
    if bool(r.get("review", False)):
        parts.append("LOW CONFIDENCE")
    if bool(r.get("edited", False)):
        parts.append("edited")
    return " | ".join(parts)


def _isnan(v: Any) -> bool:
    try:
        return v is None or math.isnan(float(v))
    except (TypeError, ValueError):
        return False
