"""The one per-cell results table.

Every producer (detector, classifier, pipeline) returns a :class:`CellTable`
and every consumer (napari overlay, counts, CSV / Parquet / GeoJSON / label
exports, summaries) reads one.  It is a thin wrapper around a
:class:`pandas.DataFrame` with a fixed column vocabulary plus a ``meta`` dict.

Columns
-------
cell_id : int64
    1-based, unique within a table (also the label value in label images).
centroid_y, centroid_x : float64
    Centroid in level-0 pixels.
centroid_y_um, centroid_x_um : float64
    Centroid in microns (NaN when the slide's pixel size is unknown).
bbox_y0, bbox_x0, bbox_y1, bbox_x1 : int64
    Bounding box in level-0 pixels, half-open.
area_px, area_um2 : float64
    Polygon area in level-0 pixels / square microns (NaN when mpp unknown).
score : float32
    Detection probability.
polygon : object
    ``(K, 2)`` float32 arrays of (y, x) vertices in level-0 pixels.
label : str            (after classification)
confidence : float32   (after classification; max class probability)
prob_<class> : float32 (after classification; one column per class)
review : bool          (after classification; confidence below threshold, or unlike training)
ood_score : float32    (a model with OOD statistics; :mod:`leukcore.classify.ood`)
review_reason : str    (with ``ood_score``: "ood", "low_confidence" or "")

``meta`` holds slide path, mpp, level-0 shape, model names and versions,
``partial`` (True when a run was cancelled) and timings.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "CellTable",
    "DETECTION_COLUMNS",
    "CLASS_COLORS",
    "BLAST_CLASSES",
    "blast_percent",
    "held_for_review",
    "class_color",
    "atomic_path",
    "polygon_area",
    "json_default",
]

DETECTION_COLUMNS = [
    "cell_id",
    "centroid_y",
    "centroid_x",
    "centroid_y_um",
    "centroid_x_um",
    "bbox_y0",
    "bbox_x0",
    "bbox_y1",
    "bbox_x1",
    "area_px",
    "area_um2",
    "score",
    "polygon",
]

#: RGB colours (0-255) per class name; unknown classes get a stable fallback.
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "ALL": (228, 26, 28),
    "normal": (77, 175, 74),
    "Benign": (77, 175, 74),
    "Early": (255, 127, 0),
    "Pre": (228, 26, 28),
    "Pro": (152, 78, 163),
    "unclassified": (255, 255, 51),
}

#: class names counted as leukemic blasts in summaries
BLAST_CLASSES = frozenset({"ALL", "Early", "Pre", "Pro"})
#: confidence below which a cell is left for review when the model card names no threshold
DEFAULT_REVIEW_THRESHOLD = 0.6

_FALLBACK = [(55, 126, 184), (166, 86, 40), (247, 129, 191), (153, 153, 153), (0, 206, 209)]


def class_color(name: str) -> tuple[int, int, int]:
    """Stable RGB colour for a class name."""
    if name in CLASS_COLORS:
        return CLASS_COLORS[name]
    h = sum(ord(c) for c in str(name))
    return _FALLBACK[h % len(_FALLBACK)]


def blast_percent(labels, review=None, *, fraction: bool = False) -> float | None:
    """Percentage (or ``fraction``) of cells in a blast class among those not in ``review``.

    The one rule behind the summary, the CLI, the overlay and napari: cells flagged for review are
    left out of both numerator and denominator.  None when no cell is left.
    """
    lab = np.asarray(list(labels), dtype=object)
    if review is not None:
        lab = lab[~np.asarray(list(review), dtype=bool)]
    if not len(lab):
        return None
    f = float(np.isin(lab.astype(str), list(BLAST_CLASSES)).mean())
    return f if fraction else 100.0 * f


def held_for_review(confidence, labels, review_threshold: float, blast_threshold=None, one_cell=True) -> np.ndarray:
    """Boolean per decision: held for review (no call) on confidence alone.

    The one rule behind a cell's ``review`` (:meth:`CellTable.set_classification`), an image's
    (:func:`leukcore.field.classify_image`) and the field accuracy that chooses the field rule
    (:mod:`leukcore.train.evaluate`): the top probability ``confidence`` below ``review_threshold``, or
    a blast call (``labels`` in :data:`BLAST_CLASSES`) below ``blast_threshold``.  The blast threshold
    was chosen on single cells, so it applies only where ``one_cell`` (a decision from one cell; a
    field's label pools several cells' evidence and keeps the plain threshold).

    Parameters
    ----------
    confidence : array of float
        Top class probability per decision.
    labels : array of str
        The model's call per decision.
    review_threshold : float
        Below it, every call is held.
    blast_threshold : float, optional
        Below it, a one-cell blast call is held.
    one_cell : bool or array of bool
        Whether each decision rests on one cell.
    """
    conf = np.asarray(confidence, np.float64).reshape(-1)
    held = conf < float(review_threshold)
    if blast_threshold is not None and conf.size:
        blast = np.isin(np.asarray(list(labels), dtype=object).astype(str), list(BLAST_CLASSES))
        held |= blast & np.asarray(one_cell, bool) & (conf < float(blast_threshold))
    return held


def polygon_area(poly: np.ndarray) -> float:
    """Shoelace area of a (K, 2) polygon."""
    p = np.asarray(poly, dtype=np.float64)
    if len(p) < 3:
        return 0.0
    y, x = p[:, 0], p[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


class atomic_path:
    """Context manager giving a temporary sibling path, renamed into place on success.

    A failed or interrupted write leaves no file under the final name.

    Examples
    --------
    >>> with atomic_path("out/cells.csv") as tmp:   # doctest: +SKIP
    ...     df.to_csv(tmp)
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            if self.tmp.is_dir():
                import shutil

                shutil.rmtree(self.tmp, ignore_errors=True)
            elif self.tmp.exists():
                self.tmp.unlink()
        return False


def json_default(o):
    """``json.dumps(default=...)`` for numpy scalars and arrays and paths (meta, summaries)."""
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


#: old private name, still imported by ``cli/detect.py`` (owned by the detection-speed work, issue 17)
_json_default = json_default


class CellTable:
    """Per-cell results: a DataFrame with the columns described in the module doc.

    Parameters
    ----------
    df : pandas.DataFrame
        Must hold at least the detection columns (missing ones are added empty).
    meta : dict, optional
        Slide path, ``mpp``, ``shape``, model info, ``partial``, ``classes``...
    """

    def __init__(self, df=None, meta: Mapping[str, Any] | None = None):
        import pandas as pd

        if df is None:
            df = pd.DataFrame({c: [] for c in DETECTION_COLUMNS})
        df = df.copy()
        for c in DETECTION_COLUMNS:
            if c not in df.columns:
                df[c] = np.nan if c != "polygon" else None
        self.df = df.reset_index(drop=True)
        self.meta: dict[str, Any] = dict(meta or {})
        self.meta.setdefault("partial", False)

    # ------------------------------------------------------------------ build
    @classmethod
    def from_detections(
        cls,
        centroids: np.ndarray,
        polygons: Sequence[np.ndarray],
        scores: np.ndarray,
        mpp: float | None = None,
        meta: Mapping[str, Any] | None = None,
        start_id: int = 1,
    ) -> "CellTable":
        """Build a table from level-0 centroids (N, 2), polygons (list of (K, 2)) and scores."""
        import pandas as pd

        n = len(scores)
        centroids = np.asarray(centroids, dtype=np.float64).reshape(n, 2)
        polys = [np.asarray(p, dtype=np.float32).reshape(-1, 2) for p in polygons]
        if n:
            y0 = np.array([np.floor(p[:, 0].min()) for p in polys], dtype=np.int64)
            x0 = np.array([np.floor(p[:, 1].min()) for p in polys], dtype=np.int64)
            y1 = np.array([np.ceil(p[:, 0].max()) + 1 for p in polys], dtype=np.int64)
            x1 = np.array([np.ceil(p[:, 1].max()) + 1 for p in polys], dtype=np.int64)
            area = np.array([polygon_area(p) for p in polys], dtype=np.float64)
        else:
            y0 = x0 = y1 = x1 = np.zeros(0, np.int64)
            area = np.zeros(0)
        m = float(mpp) if mpp else math.nan
        df = pd.DataFrame(
            {
                "cell_id": np.arange(start_id, start_id + n, dtype=np.int64),
                "centroid_y": centroids[:, 0],
                "centroid_x": centroids[:, 1],
                "centroid_y_um": centroids[:, 0] * m,
                "centroid_x_um": centroids[:, 1] * m,
                "bbox_y0": y0,
                "bbox_x0": x0,
                "bbox_y1": y1,
                "bbox_x1": x1,
                "area_px": area,
                "area_um2": area * m * m,
                "score": np.asarray(scores, dtype=np.float32),
                "polygon": pd.Series(polys, dtype=object),
            }
        )
        meta = dict(meta or {})
        meta.setdefault("mpp", mpp)
        return cls(df, meta)

    @classmethod
    def concat(
        cls, tables: Iterable["CellTable"], meta: Mapping[str, Any] | None = None, renumber: bool = True
    ) -> "CellTable":
        """Concatenate tables (e.g. per-tile chunks); renumber ``cell_id`` 1..N."""
        import pandas as pd

        tables = list(tables)
        frames = [t.df for t in tables if len(t)]
        df = pd.concat(frames, ignore_index=True) if frames else None
        out_meta = dict(tables[0].meta) if tables else {}
        out_meta.update(meta or {})
        out = cls(df, out_meta)
        if renumber:
            out.df["cell_id"] = np.arange(1, len(out.df) + 1, dtype=np.int64)
        return out

    def sorted(self) -> "CellTable":
        """Deterministic order (by centroid y, then x), ids renumbered 1..N."""
        df = self.df.sort_values(["centroid_y", "centroid_x"], kind="mergesort").reset_index(drop=True)
        df["cell_id"] = np.arange(1, len(df) + 1, dtype=np.int64)
        return CellTable(df, self.meta)

    def copy(self) -> "CellTable":
        """A copy: the frame copied, the meta copied through JSON (tuples come back as lists)."""
        return CellTable(self.df.copy(), json.loads(json.dumps(self.meta, default=json_default)))

    # ------------------------------------------------------------- properties
    def __len__(self) -> int:
        return len(self.df)

    def __repr__(self) -> str:
        return f"<CellTable: {len(self)} cells, classes={self.classes}, partial={self.partial}>"

    @property
    def partial(self) -> bool:
        """Whether the table covers only part of the slide (``meta["partial"]``, e.g. a cancelled run)."""
        return bool(self.meta.get("partial", False))

    @property
    def classes(self) -> list[str]:
        """Class names of the classifier that labelled the table ([] before classification)."""
        if self.meta.get("classes"):
            return list(self.meta["classes"])
        return [c[5:] for c in self.df.columns if c.startswith("prob_")]

    @property
    def is_classified(self) -> bool:
        """Whether the table has class labels (a ``label`` column)."""
        return "label" in self.df.columns

    def prob_columns(self) -> list[str]:
        """The names of the class probability columns (``prob_<class>``), in class order."""
        return [f"prob_{c}" for c in self.classes]

    def set_classification(
        self,
        probabilities: np.ndarray,
        classes: Sequence[str],
        review_threshold: float = DEFAULT_REVIEW_THRESHOLD,
        blast_threshold: float | None = None,
        ood_score: np.ndarray | None = None,
        ood_threshold: float | None = None,
    ) -> None:
        """Attach class probabilities (N, C); sets label, confidence, prob_*, review.

        ``review``: confidence below ``review_threshold``, or a blast call below
        ``blast_threshold`` (a blast needs more certainty than a normal cell; never silently
        a blast), or (a model with OOD statistics) ``ood_score`` above ``ood_threshold``: a cell
        unlike the model's training cells.  With an OOD score the table gains ``ood_score`` and
        ``review_reason`` (``"ood"``, ``"low_confidence"`` or ``""``; OOD first).
        """
        probs = np.asarray(probabilities, dtype=np.float32).reshape(len(self), len(classes))
        idx = probs.argmax(axis=1) if len(self) else np.zeros(0, int)
        self.df["label"] = np.array(list(classes), dtype=object)[idx] if len(self) else np.array([], dtype=object)
        self.df["confidence"] = probs.max(axis=1) if len(self) else np.zeros(0, np.float32)
        for j, c in enumerate(classes):
            self.df[f"prob_{c}"] = probs[:, j]
        review = held_for_review(self.df["confidence"], self.df["label"], review_threshold, blast_threshold)
        if ood_score is not None and ood_threshold is not None:
            score = np.asarray(ood_score, np.float32).reshape(len(self))
            ood = np.asarray(score > float(ood_threshold), bool)
            self.df["ood_score"] = score
            self.df["review_reason"] = np.where(ood, "ood", np.where(review, "low_confidence", ""))
            review = review | ood
            self.meta["ood_threshold"] = float(ood_threshold)
        self.df["review"] = review
        self.meta["classes"] = list(classes)
        self.meta["review_threshold"] = float(review_threshold)
        if blast_threshold is not None:
            self.meta["blast_threshold"] = float(blast_threshold)

    # --------------------------------------------------------------- summaries
    def counts(self) -> dict[str, int]:
        """Cells per class (all classes listed, zeros included); ``{"cells": N}`` if unclassified."""
        if not self.is_classified:
            return {"cells": len(self)}
        vc = self.df["label"].value_counts()
        return {c: int(vc.get(c, 0)) for c in self.classes}

    def confident_counts(self) -> dict[str, int]:
        """Cells per class among the confidently classified ones (``review`` False)."""
        if not self.is_classified:
            return {"cells": len(self)}
        ok = ~self.df["review"].astype(bool) if "review" in self.df else np.ones(len(self), bool)
        vc = self.df.loc[ok, "label"].value_counts()
        return {c: int(vc.get(c, 0)) for c in self.classes}

    def blast_fraction(self, confident_only: bool = True) -> float | None:
        """Fraction of cells in a blast / ALL class.

        By default over the **confidently classified** cells: a cell in ``review`` (below the
        model's calibrated confidence, or unlike its training cells) is never counted as a
        blast, nor as normal; it waits for a person.  ``confident_only=False``: over every cell.
        None before classification or with no (confident) cell.
        """
        return blast_percent(
            self.df["label"] if self.is_classified else [],
            self.df["review"] if confident_only and "review" in self.df else None,
            fraction=True,
        )

    def review_reasons(self) -> dict[str, int]:
        """Cells in review by reason: ``ood`` (unlike the training cells), ``low_confidence``, and
        ``other`` (e.g. not reached by a cancelled run); ``{}`` for a table without reasons.
        """
        if "review_reason" not in self.df or "review" not in self.df:
            return {}
        r = self.df.loc[self.df["review"].astype(bool), "review_reason"].astype(str)
        n_ood, n_low = int((r == "ood").sum()), int((r == "low_confidence").sum())
        return {"ood": n_ood, "low_confidence": n_low, "other": int(len(r) - n_ood - n_low)}

    def summary(self) -> dict[str, Any]:
        """The table's numbers as a JSON-able dict: ``cells``, ``partial``, ``counts``.

        Once classified also the blast percentage (over confident cells and over all cells), the ``review``
        count, ``review_reasons`` (with OOD scores) and ``confident_counts``.
        """
        s = {"cells": len(self), "partial": self.partial, "counts": self.counts()}
        if self.is_classified:
            bf, ba = self.blast_fraction(), self.blast_fraction(confident_only=False)
            s["blast_percent"] = None if bf is None else round(100 * bf, 3)
            s["blast_percent_all_cells"] = None if ba is None else round(100 * ba, 3)
            s["review"] = int(self.df["review"].sum()) if "review" in self.df else 0
            if "review_reason" in self.df:
                s["review_reasons"] = self.review_reasons()
            s["confident_counts"] = self.confident_counts()
            s["blast_percent_basis"] = "confidently classified cells (review cells excluded)"
        return s

    # ------------------------------------------------------------------ I/O
    def _flat_frame(self):
        df = self.df.copy()
        df["polygon"] = [
            json.dumps(np.round(np.asarray(p, dtype=np.float64), 2).tolist())
            if p is not None and not (isinstance(p, float))
            else "[]"
            for p in df["polygon"]
        ]
        return df

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write CSV atomically; polygons as JSON ``[[y, x], ...]`` strings."""
        path = Path(path)
        with atomic_path(path) as tmp:
            self._flat_frame().to_csv(tmp, index=False, float_format="%.6g")
        return path

    def to_parquet(self, path: str | os.PathLike) -> Path:
        """Write Parquet atomically; polygons as ``list<list<float>>``; meta in schema metadata."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        df = self.df.copy()
        df["polygon"] = [
            np.asarray(p, dtype=np.float32).tolist() if p is not None and not isinstance(p, float) else []
            for p in df["polygon"]
        ]
        table = pa.Table.from_pandas(df, preserve_index=False)
        md = dict(table.schema.metadata or {})
        md[b"leukcore"] = json.dumps(self.meta, default=json_default).encode()
        table = table.replace_schema_metadata(md)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return path

    @classmethod
    def read_parquet(cls, path: str | os.PathLike) -> "CellTable":
        """The table of a Parquet file written by :meth:`to_parquet` (meta from its schema metadata)."""
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        md = table.schema.metadata or {}
        meta = json.loads(md.get(b"leukcore", b"{}"))
        df = table.to_pandas()
        df["polygon"] = [np.asarray([list(v) for v in p], dtype=np.float32).reshape(-1, 2) for p in df["polygon"]]
        return cls(df, meta)

    @classmethod
    def read_csv(cls, path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> "CellTable":
        """The table of a CSV file written by :meth:`to_csv`, with ``meta`` (a CSV holds none)."""
        import pandas as pd

        df = pd.read_csv(path)
        if "polygon" in df.columns:
            df["polygon"] = [np.asarray(json.loads(p), dtype=np.float32).reshape(-1, 2) for p in df["polygon"]]
        return cls(df, meta)

    def meta_json(self) -> str:
        """The meta as indented JSON, keys sorted (numpy values and paths converted)."""
        return json.dumps(self.meta, default=json_default, indent=2, sort_keys=True)
