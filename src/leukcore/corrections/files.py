"""Corrections as data: the ``corrections.parquet`` format, reading and writing it, what a correction is
tied to, and the reviewed table (:func:`apply_corrections`).  See :mod:`leukcore.corrections`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from ..results import CellTable, atomic_path

__all__ = [
    "CORRECTIONS_NAME",
    "REVIEW_LABEL",
    "COLUMNS",
    "Correction",
    "CorrectionsError",
    "apply_corrections",
    "read_corrections",
    "write_corrections",
    "corrections_digest",
    "slide_key",
    "now_iso",
    "empty_corrections_frame",
    "corrections_context",
    "frame_of",
    "check_tied",
]


#: file name of the corrections beside a slide's results
CORRECTIONS_NAME = "corrections.parquet"
#: the reviewer's "unidentified" group (not a class of any model)
REVIEW_LABEL = "review"
COLUMNS = [
    "cell_id",
    "centroid_y",
    "centroid_x",
    "model_label",
    "reviewer_label",
    "reviewer",
    "time",
    "slide",
    "slide_path",
    "slide_fingerprint",
    "model",
    "model_sha256",
    "results_digest",
]
_FORMAT_VERSION = 1
#: a stored centroid may differ from the table's by this much (px) and still name the same cell
_CENTROID_TOL = 1.0


def _is_state(obj) -> bool:
    """Whether ``obj`` is a :class:`~leukcore.corrections.state.Corrections` (imported here only when asked)."""
    from .state import Corrections

    return isinstance(obj, Corrections)


class CorrectionsError(ValueError):
    """Corrections that cannot be read or do not belong to the results they sit beside."""


def now_iso() -> str:
    """The current time, ISO 8601 UTC to the second (``2026-12-01T10:20:00+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def slide_key(input_fp: Optional[Mapping[str, Any]]) -> Optional[str]:
    """sha256 of a slide's content fingerprint (:func:`leukcore.provenance.input_fingerprint`): kind, size and
    content hashes, without path or mtime (a copied slide keeps its key).  None when unknown.
    """
    if not input_fp or input_fp.get("kind") in (None, "missing"):
        return None
    keep = {k: input_fp.get(k) for k in ("kind", "size", "meta_sha256", "sample_sha256", "n_files")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Correction:
    """One corrected cell (a row of ``corrections.parquet``)."""

    cell_id: int
    centroid_y: float
    centroid_x: float
    model_label: str
    reviewer_label: str
    reviewer: str
    time: str
    slide: Optional[str] = None
    slide_path: Optional[str] = None
    slide_fingerprint: Optional[str] = None
    model: Optional[str] = None
    model_sha256: Optional[str] = None
    results_digest: Optional[str] = None


# ------------------------------------------------------------------ file I/O
def empty_corrections_frame():
    """An empty corrections frame with the :data:`COLUMNS` and their dtypes."""
    import pandas as pd

    df = pd.DataFrame({c: [] for c in COLUMNS})
    df["cell_id"] = df["cell_id"].astype(np.int64)
    for c in ("centroid_y", "centroid_x"):
        df[c] = df[c].astype(np.float64)
    for c in COLUMNS[3:]:
        df[c] = df[c].astype(object)
    return df


def frame_of(rows: Iterable[Correction]):
    """The corrections of ``rows`` as a DataFrame of :data:`COLUMNS` (by cell id; typed when empty)."""
    import pandas as pd

    rows = sorted(rows, key=lambda r: r.cell_id)
    if not rows:
        return empty_corrections_frame()
    df = pd.DataFrame({c: pd.Series([getattr(r, c) for r in rows], dtype=object) for c in COLUMNS})
    df["cell_id"] = df["cell_id"].astype(np.int64)
    for c in ("centroid_y", "centroid_x"):
        df[c] = df[c].astype(np.float64)
    return df


def write_corrections(corrections, path: str | os.PathLike, *, meta: Optional[Mapping[str, Any]] = None) -> Path:
    """Write corrections (a :class:`Corrections`, a DataFrame or :class:`Correction` rows) atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if _is_state(corrections):
        meta = {**corrections.file_meta(), **dict(meta or {})}
        df = corrections.frame()
    elif hasattr(corrections, "columns"):
        df = corrections
    else:
        df = frame_of(corrections)
    path = Path(path)
    if path.is_dir():
        path = path / CORRECTIONS_NAME
    table = pa.Table.from_pandas(df[COLUMNS].reset_index(drop=True), preserve_index=False)
    md = dict(table.schema.metadata or {})
    md[b"leukcore_corrections"] = json.dumps(
        {"version": _FORMAT_VERSION, "review_label": REVIEW_LABEL, **dict(meta or {})}, sort_keys=True, default=str
    ).encode()
    table = table.replace_schema_metadata(md)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_corrections(path: str | os.PathLike):
    """The corrections of a results folder (or a ``corrections.parquet`` file) as a DataFrame (``COLUMNS``),
    with the file's metadata in ``df.attrs["meta"]``; an empty frame when the folder has none.
    """
    import pyarrow.parquet as pq

    p = Path(path)
    if p.is_dir():
        p = p / CORRECTIONS_NAME
        if not p.is_file():
            return empty_corrections_frame()
    try:
        t = pq.read_table(p)
    except Exception as e:
        raise CorrectionsError(f"{p}: cannot read corrections: {e}") from None
    missing = [c for c in ("cell_id", "model_label", "reviewer_label") if c not in t.column_names]
    if missing:
        raise CorrectionsError(f"{p}: not a corrections file (missing columns {missing})")
    df = t.to_pandas()
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = None
    df = df[COLUMNS].copy()
    df["cell_id"] = df["cell_id"].astype(np.int64)
    if df["cell_id"].duplicated().any():
        raise CorrectionsError(
            f"{p}: cell ids corrected twice: {sorted(set(df.loc[df['cell_id'].duplicated(), 'cell_id'].tolist()))[:10]}"
        )
    md = (t.schema.metadata or {}).get(b"leukcore_corrections")
    df.attrs["meta"] = json.loads(md) if md else {}
    df.attrs["path"] = str(p)
    return df.sort_values("cell_id", kind="mergesort").reset_index(drop=True)


def corrections_digest(corrections) -> str:
    """sha256 of the corrections' content (cell, labels, reviewer, time and what they are tied to), in cell
    order; what a sign-off records.  Accepts a :class:`Corrections`, a DataFrame or a results folder.
    """
    if isinstance(corrections, (str, os.PathLike)):
        corrections = read_corrections(corrections)
    df = corrections.frame() if _is_state(corrections) else corrections
    rows = []
    for r in df[COLUMNS].sort_values("cell_id").itertuples(index=False):
        d = r._asdict()
        d["cell_id"] = int(d["cell_id"])
        for c in ("centroid_y", "centroid_x"):
            d[c] = round(float(d[c]), 3) if d[c] == d[c] and d[c] is not None else None
        rows.append({k: (None if (isinstance(v, float) and v != v) else v) for k, v in d.items()})
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


# ------------------------------------------------------------------ what a correction is tied to
def corrections_context(table: CellTable, summary: Optional[Mapping[str, Any]]) -> dict:
    """What corrections are tied to: slide name / path / fingerprint, classifier and its sha256, run digest."""
    s = dict(summary or {})
    sl = s.get("slide") or {}
    prov = s.get("provenance") or {}
    clf = (s.get("models") or {}).get("classifier") or {}
    meta = table.meta or {}
    path = sl.get("path") or meta.get("slide_path") or meta.get("slide")
    return {
        "slide": sl.get("name") or (Path(str(path)).name if path else None),
        "slide_path": str(path) if path else None,
        "slide_fingerprint": slide_key(prov.get("input")),
        "model": clf.get("name") or meta.get("classifier"),
        "model_sha256": clf.get("sha256"),
        "results_digest": prov.get("digest"),
    }


def check_tied(df, table: CellTable, ctx: Mapping[str, Any], where: str) -> None:
    """Raise :class:`CorrectionsError` when stored corrections are not of these results."""
    if not len(df):
        return
    # the run digest is recorded, not compared: it also covers the slide's path and mtime and the settings,
    # and a re-run of the same slide content with the same weights gives the same cells (checked cell by cell)
    for key, what in (("model_sha256", "classifier weights"), ("slide_fingerprint", "slide")):
        cur = ctx.get(key)
        got = {v for v in df[key].tolist() if v is not None and v == v}
        if cur and got and got != {cur}:
            raise CorrectionsError(
                f"{where}: corrections were made on another {what} "
                f"({sorted(got)[0][:12]}, these results: {cur[:12]}); move the file away "
                "to review these results afresh"
            )
    ids = table.df["cell_id"].to_numpy(np.int64)
    pos = {int(c): i for i, c in enumerate(ids)}
    missing = [int(c) for c in df["cell_id"] if int(c) not in pos]
    if missing:
        raise CorrectionsError(f"{where}: corrections name cells the results do not have: {missing[:10]}")
    rows = np.array([pos[int(c)] for c in df["cell_id"]], dtype=int)
    cy = table.df["centroid_y"].to_numpy(np.float64)[rows]
    cx = table.df["centroid_x"].to_numpy(np.float64)[rows]
    sy, sx = df["centroid_y"].to_numpy(np.float64), df["centroid_x"].to_numpy(np.float64)
    ok = np.isnan(sy) | ((np.abs(sy - cy) <= _CENTROID_TOL) & (np.abs(sx - cx) <= _CENTROID_TOL))
    if not ok.all():
        bad = df["cell_id"].to_numpy()[~ok][:10].tolist()
        raise CorrectionsError(f"{where}: cells {bad} are not where they were when corrected (another run?)")
    if table.is_classified:
        col = "model_label" if "model_label" in table.df.columns else "label"
        lab = table.df[col].to_numpy(object)[rows]
        diff = df["model_label"].to_numpy(object) != lab
        if diff.any():
            raise CorrectionsError(
                f"{where}: the model's calls changed since the corrections were made "
                f"(cells {df['cell_id'].to_numpy()[diff][:10].tolist()})"
            )


# ------------------------------------------------------------------ the reviewed table
def _as_label_map(corrections) -> tuple[dict[int, str], dict[int, str]]:
    """({cell_id: reviewer_label}, {cell_id: reviewer}) of any accepted corrections form."""
    if corrections is None:
        return {}, {}
    if _is_state(corrections):
        return ({c: r.reviewer_label for c, r in corrections.items()}, {c: r.reviewer for c, r in corrections.items()})
    if hasattr(corrections, "columns"):
        ids = corrections["cell_id"].astype(np.int64).tolist()
        who = corrections["reviewer"].tolist() if "reviewer" in corrections else [None] * len(ids)
        return dict(zip(ids, corrections["reviewer_label"].tolist(), strict=False)), dict(zip(ids, who, strict=False))
    if isinstance(corrections, Mapping):
        return {int(k): str(v) for k, v in corrections.items()}, {}
    if isinstance(corrections, (str, os.PathLike)):
        return _as_label_map(read_corrections(corrections))
    rows = list(corrections)
    return {int(r.cell_id): r.reviewer_label for r in rows}, {int(r.cell_id): r.reviewer for r in rows}


def apply_corrections(table: CellTable, corrections=None) -> CellTable:
    """A copy of ``table`` with the reviewer's calls applied; both calls kept for every cell.

    Parameters
    ----------
    table : CellTable
        A classified table (the model's calls in ``label`` / ``review``).  A table that already went through
        this function is taken back to the model's calls first (its ``model_label`` / ``model_review``).
    corrections : Corrections, DataFrame, {cell_id: label}, path or None
        The reviewer's classes (a class of ``table.classes`` or :data:`REVIEW_LABEL`).

    Returns
    -------
    CellTable
        Added columns ``model_label``, ``model_review`` (the model's call), ``reviewer_label`` (None where not
        corrected) and ``reviewer``; ``label`` / ``review`` are the reviewed call (see the module doc), so
        ``counts()``, ``confident_counts()``, ``blast_fraction()`` and ``summary()`` give the reviewed numbers.
        ``meta["review_state"]`` = ``{"corrected": n, "reviewers": [...]}``.
    """
    if not table.is_classified:
        raise CorrectionsError("corrections need classified results (this table has no label column)")
    labels, who = _as_label_map(corrections)
    df = table.df.copy()
    if "model_label" in df.columns:  # already reviewed: start again from the model's calls
        df["label"] = df["model_label"]
        df["review"] = df["model_review"]
    model_label = df["label"].astype(object).to_numpy()
    model_review = df["review"].astype(bool).to_numpy() if "review" in df.columns else np.zeros(len(df), bool)
    allowed = set(table.classes) | {REVIEW_LABEL}
    bad = sorted({v for v in labels.values() if v not in allowed})
    if bad:
        raise CorrectionsError(
            f"reviewer labels {bad} are not classes of these results ({', '.join(table.classes)} or {REVIEW_LABEL})"
        )
    ids = df["cell_id"].to_numpy(np.int64)
    rl = np.array([labels.get(int(c)) for c in ids], dtype=object)
    rw = np.array([who.get(int(c)) for c in ids], dtype=object)
    has = np.array([v is not None for v in rl], bool)
    as_class = has & (rl != REVIEW_LABEL)
    label = model_label.copy()
    label[as_class] = rl[as_class]
    review = model_review.copy()
    review[has] = rl[has] == REVIEW_LABEL
    df["model_label"] = model_label
    df["model_review"] = model_review
    import pandas as pd

    df["reviewer_label"] = pd.Series(rl, dtype=object, index=df.index)  # None where not corrected
    df["reviewer"] = pd.Series(rw, dtype=object, index=df.index)
    df["label"] = label
    df["review"] = review
    out = CellTable(df, table.meta)
    out.meta["review_state"] = {
        "corrected": int(has.sum()),
        "reviewers": sorted({str(v) for v in rw[has] if v is not None}),
    }
    return out
