"""A reviewer's corrections of a slide's results: data beside the results, undo / redo, reviewed tables.

A person verifies the model's calls (the napari gallery, or any code) and moves wrong cells to their class,
or to ``review`` (*unidentified*: a cell nobody can call).  The corrections are data, saved beside the
results as ``corrections.parquet`` (atomically, on every change), one row per corrected cell:

=====================  ========  ====================================================================
column                 type      meaning
=====================  ========  ====================================================================
``cell_id``            int64     the cell (``cells.parquet`` ``cell_id``)
``centroid_y/_x``      float64   its centroid, level-0 px (checks the id still names the same cell)
``model_label``        str       the model's call when the correction was made
``reviewer_label``     str       the reviewer's class, or ``review`` (unidentified)
``reviewer``           str       who
``time``               str       when (ISO 8601, UTC)
``slide``              str       slide file name
``slide_path``         str       slide path as analysed (training re-reads crops from it)
``slide_fingerprint``  str       sha256 of the slide's content fingerprint (size + content hashes)
``model``              str       classifier name
``model_sha256``       str       classifier weights sha256 (as read by the run)
``results_digest``     str       the run's ``provenance.digest`` (input + settings + models)
=====================  ========  ====================================================================

so a correction is tied to what it corrects: a folder re-analysed with other classifier weights or from
another slide content, or whose cell ids no longer name the same cells (centroid, model's call), refuses its old
corrections (:class:`CorrectionsError`) rather than applying them to other cells.  A re-run of the same slide
content with the same weights (the cells are deterministic) keeps its review, wherever the slide now lies.

Python use::

    from leukcore.corrections import Corrections, apply_corrections

    rev = Corrections.open("out/", reviewer="jdoe")      # restores corrections.parquet when present
    rev.set([12, 40], "ALL")                            # one undoable step; saved at once
    rev.set([7], "review")                              # unidentified
    rev.undo(); rev.redo()
    reviewed = rev.reviewed()                           # CellTable: label/review = the reviewed call
    reviewed.summary()["blast_percent"]                 # over confidently classified (not review) cells

The reviewed table (:func:`apply_corrections`) keeps both calls for every cell: ``model_label`` /
``model_review`` (the model's label and its low-confidence flag), ``reviewer_label`` (the reviewer's class
or ``review``; None where the reviewer left the model's call), and ``label`` / ``review`` set to the reviewed
result: the reviewer's class where given (``review`` False), else the model's call.  A cell the reviewer
marked ``review`` keeps the model's label in ``label`` with ``review`` True, so counts and the blast
percentage come from :class:`~leukcore.results.CellTable` exactly as for the model's calls (review cells are
out of the blast percentage's numerator and denominator).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np

from .results import CellTable, atomic_path

__all__ = ["CORRECTIONS_NAME", "REVIEW_LABEL", "COLUMNS", "Correction", "Corrections", "CorrectionsError",
           "apply_corrections", "read_corrections", "write_corrections", "corrections_digest", "slide_key",
           "now_iso", "find_corrections_folders", "load_reviewed", "training_rows", "correction_crops", "review_groups",
           "SLIDE_CELL_KIND", "empty_corrections_frame", "corrections_context"]

#: file name of the corrections beside a slide's results
CORRECTIONS_NAME = "corrections.parquet"
#: the reviewer's "unidentified" group (not a class of any model)
REVIEW_LABEL = "review"
COLUMNS = ["cell_id", "centroid_y", "centroid_x", "model_label", "reviewer_label", "reviewer", "time", "slide",
           "slide_path", "slide_fingerprint", "model", "model_sha256", "results_digest"]
_FORMAT_VERSION = 1
#: a stored centroid may differ from the table's by this much (px) and still name the same cell
_CENTROID_TOL = 1.0


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


def _frame_of(rows: Iterable[Correction]):
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

    if isinstance(corrections, Corrections):
        meta = {**corrections.file_meta(), **dict(meta or {})}
        df = corrections.frame()
    elif hasattr(corrections, "columns"):
        df = corrections
    else:
        df = _frame_of(corrections)
    path = Path(path)
    if path.is_dir():
        path = path / CORRECTIONS_NAME
    table = pa.Table.from_pandas(df[COLUMNS].reset_index(drop=True), preserve_index=False)
    md = dict(table.schema.metadata or {})
    md[b"leukcore_corrections"] = json.dumps({"version": _FORMAT_VERSION, "review_label": REVIEW_LABEL,
                                              **dict(meta or {})}, sort_keys=True, default=str).encode()
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
        raise CorrectionsError(f"{p}: cell ids corrected twice: "
                               f"{sorted(set(df.loc[df['cell_id'].duplicated(), 'cell_id'].tolist()))[:10]}")
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
    df = corrections.frame() if isinstance(corrections, Corrections) else corrections
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
    return {"slide": sl.get("name") or (Path(str(path)).name if path else None),
            "slide_path": str(path) if path else None,
            "slide_fingerprint": slide_key(prov.get("input")),
            "model": clf.get("name") or meta.get("classifier"),
            "model_sha256": clf.get("sha256"),
            "results_digest": prov.get("digest")}


def _check_tied(df, table: CellTable, ctx: Mapping[str, Any], where: str) -> None:
    """Raise :class:`CorrectionsError` when stored corrections are not of these results."""
    if not len(df):
        return
    # the run digest is recorded, not compared: it also covers the slide's path and mtime and the settings,
    # and a re-run of the same slide content with the same weights gives the same cells (checked cell by cell)
    for key, what in (("model_sha256", "classifier weights"), ("slide_fingerprint", "slide")):
        cur = ctx.get(key)
        got = {v for v in df[key].tolist() if v is not None and v == v}
        if cur and got and got != {cur}:
            raise CorrectionsError(f"{where}: corrections were made on another {what} "
                                   f"({sorted(got)[0][:12]}, these results: {cur[:12]}); move the file away "
                                   "to review these results afresh")
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
            raise CorrectionsError(f"{where}: the model's calls changed since the corrections were made "
                                   f"(cells {df['cell_id'].to_numpy()[diff][:10].tolist()})")


# ------------------------------------------------------------------ the reviewed table
def _as_label_map(corrections) -> tuple[dict[int, str], dict[int, str]]:
    """({cell_id: reviewer_label}, {cell_id: reviewer}) of any accepted corrections form."""
    if corrections is None:
        return {}, {}
    if isinstance(corrections, Corrections):
        return ({c: r.reviewer_label for c, r in corrections.items()},
                {c: r.reviewer for c, r in corrections.items()})
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
    if "model_label" in df.columns:        # already reviewed: start again from the model's calls
        df["label"] = df["model_label"]
        df["review"] = df["model_review"]
    model_label = df["label"].astype(object).to_numpy()
    model_review = (df["review"].astype(bool).to_numpy() if "review" in df.columns
                    else np.zeros(len(df), bool))
    allowed = set(table.classes) | {REVIEW_LABEL}
    bad = sorted({v for v in labels.values() if v not in allowed})
    if bad:
        raise CorrectionsError(f"reviewer labels {bad} are not classes of these results "
                               f"({', '.join(table.classes)} or {REVIEW_LABEL})")
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

    df["reviewer_label"] = pd.Series(rl, dtype=object, index=df.index)     # None where not corrected
    df["reviewer"] = pd.Series(rw, dtype=object, index=df.index)
    df["label"] = label
    df["review"] = review
    out = CellTable(df, table.meta)
    out.meta["review_state"] = {"corrected": int(has.sum()),
                                "reviewers": sorted({str(v) for v in rw[has] if v is not None})}
    return out


# ------------------------------------------------------------------ the editable state + history
class Corrections:
    """The corrections of one results table, with undo / redo (pure Python; the napari widget's model).

    Parameters
    ----------
    table : CellTable
        The model's results (classified).
    summary : dict, optional
        The folder's ``summary.json`` (ties corrections to slide, model and run).
    path : path-like, optional
        ``corrections.parquet`` to keep up to date: written atomically after every change when ``autosave``.
    reviewer : str, optional
        Default reviewer name of new corrections (``$USER`` when not given).
    rows : iterable of Correction, optional
        Existing corrections (checked against the table).

    Every change (:meth:`set`, :meth:`clear`, :meth:`undo`, :meth:`redo`) calls each function in
    :attr:`listeners` with the list of changed cell ids.
    """

    def __init__(self, table: CellTable, summary: Optional[Mapping[str, Any]] = None, *,
                 path: Optional[str | os.PathLike] = None, reviewer: Optional[str] = None,
                 rows: Iterable[Correction] = (), autosave: bool = True):
        if not table.is_classified:
            raise CorrectionsError("corrections need classified results (this table has no label column)")
        self.table = table
        self.summary = dict(summary or {})
        self.path = Path(path) if path is not None else None
        self.autosave = autosave
        self.reviewer = reviewer or os.environ.get("USER") or os.environ.get("USERNAME") or "reviewer"
        self.context = corrections_context(table, self.summary)
        df = table.df
        model_col = "model_label" if "model_label" in df.columns else "label"
        self._model = dict(zip(df["cell_id"].astype(np.int64).tolist(), df[model_col].astype(object).tolist(), strict=False))
        self._yx = dict(zip(df["cell_id"].astype(np.int64).tolist(),
                            zip(df["centroid_y"].astype(float).tolist(), df["centroid_x"].astype(float).tolist(), strict=False), strict=False))
        self.classes = list(table.classes)
        self._rows: dict[int, Correction] = {}
        for r in rows:
            self._rows[int(r.cell_id)] = r
        self._undo: list[list[tuple[int, Optional[Correction], Optional[Correction]]]] = []
        self._redo: list[list[tuple[int, Optional[Correction], Optional[Correction]]]] = []
        self.listeners: list[Callable[[list[int]], None]] = []

    # ---------------------------------------------------------------- open / save
    @classmethod
    def open(cls, results: str | os.PathLike, *, reviewer: Optional[str] = None, autosave: bool = True,
             table: Optional[CellTable] = None, summary: Optional[Mapping[str, Any]] = None) -> "Corrections":
        """The corrections of a results folder (``corrections.parquet`` restored when present).

        ``table`` / ``summary`` may be given when already read (the plugin's layer data); otherwise the
        folder is read with :func:`leukcore.export.kinds.read_results`.

        Raises
        ------
        CorrectionsError
            When the stored corrections belong to another run (slide, model or cells differ).
        """
        p = Path(results)
        folder = p if p.is_dir() else p.parent
        if table is None or summary is None:
            from .export.kinds import read_results

            t, s = read_results(p)
            table = table if table is not None else t
            summary = summary if summary is not None else s
        self = cls(table, summary, path=folder / CORRECTIONS_NAME, reviewer=reviewer, autosave=autosave)
        df = read_corrections(folder)
        _check_tied(df, table, self.context, str(folder / CORRECTIONS_NAME))
        for r in df.itertuples(index=False):
            d = {k: (None if (isinstance(v, float) and v != v) else v) for k, v in r._asdict().items()}
            d["cell_id"] = int(d["cell_id"])
            d["centroid_y"], d["centroid_x"] = float(r.centroid_y), float(r.centroid_x)
            self._rows[d["cell_id"]] = Correction(**d)
        bad = sorted({r.reviewer_label for r in self._rows.values()} - set(self.classes) - {REVIEW_LABEL})
        if bad:
            raise CorrectionsError(f"{folder / CORRECTIONS_NAME}: reviewer labels {bad} are not classes of "
                                   f"these results ({', '.join(self.classes)} or {REVIEW_LABEL})")
        return self

    def file_meta(self) -> dict:
        return {"classes": self.classes, **{k: v for k, v in self.context.items() if v is not None}}

    def save(self, path: Optional[str | os.PathLike] = None) -> Path:
        """Write ``corrections.parquet`` atomically (to ``path`` or the folder's file)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise CorrectionsError("no path to save the corrections to")
        return write_corrections(self, target)

    # ---------------------------------------------------------------- reading
    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, cell_id) -> bool:
        return int(cell_id) in self._rows

    def __iter__(self):
        return iter(sorted(self._rows))

    def items(self):
        return sorted(self._rows.items())

    def get(self, cell_id) -> Optional[Correction]:
        return self._rows.get(int(cell_id))

    def model_label(self, cell_id) -> str:
        return self._model[int(cell_id)]

    def label(self, cell_id) -> str:
        """The reviewed call of a cell: the reviewer's class or ``review``, else the model's label."""
        r = self._rows.get(int(cell_id))
        return r.reviewer_label if r is not None else self._model[int(cell_id)]

    def frame(self):
        """The corrections as a DataFrame (``COLUMNS``), in cell order."""
        return _frame_of(self._rows.values())

    def digest(self) -> str:
        return corrections_digest(self)

    def reviewed(self) -> CellTable:
        """:func:`apply_corrections` of the table with these corrections."""
        return apply_corrections(self.table, self)

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    # ---------------------------------------------------------------- editing
    def _commit(self, step, record: bool = True) -> list[int]:
        if not step:
            return []
        for cid, _before, after in step:
            if after is None:
                self._rows.pop(cid, None)
            else:
                self._rows[cid] = after
        if record:
            self._undo.append(step)
            self._redo.clear()
        changed = [cid for cid, _, _ in step]
        if self.autosave and self.path is not None:
            self.save()
        for f in list(self.listeners):
            f(changed)
        return changed

    def _ids(self, cell_ids) -> list[int]:
        if isinstance(cell_ids, (int, np.integer)):
            cell_ids = [cell_ids]
        out, seen = [], set()
        for c in cell_ids:
            c = int(c)
            if c not in self._model:
                raise CorrectionsError(f"no cell {c} in these results")
            if c not in seen:
                seen.add(c)
                out.append(c)
        return out

    def set(self, cell_ids, label: Optional[str], *, reviewer: Optional[str] = None,
            time: Optional[str] = None) -> list[int]:
        """Give cells the reviewer's class (or ``review``; None clears), as one undoable step.

        Returns the cell ids that changed (cells already carrying that correction are left alone).
        """
        if label is None:
            return self.clear(cell_ids)
        label = str(label)
        if label not in self.classes and label != REVIEW_LABEL:
            raise CorrectionsError(f"{label!r} is not a class of these results "
                                   f"({', '.join(self.classes)} or {REVIEW_LABEL})")
        who = reviewer or self.reviewer
        when = time or now_iso()
        step = []
        for c in self._ids(cell_ids):
            before = self._rows.get(c)
            if before is not None and before.reviewer_label == label:
                continue
            y, x = self._yx[c]
            after = Correction(cell_id=c, centroid_y=y, centroid_x=x, model_label=self._model[c],
                               reviewer_label=label, reviewer=who, time=when, **self.context)
            step.append((c, before, after))
        return self._commit(step)

    def clear(self, cell_ids) -> list[int]:
        """Remove the corrections of cells (back to the model's call), as one undoable step."""
        step = [(c, self._rows[c], None) for c in self._ids(cell_ids) if c in self._rows]
        return self._commit(step)

    def undo(self) -> list[int]:
        """Take back the last step; the changed cell ids ([] when there is nothing to undo)."""
        if not self._undo:
            return []
        step = self._undo.pop()
        self._redo.append(step)
        return self._commit([(c, a, b) for c, b, a in reversed(step)], record=False)

    def redo(self) -> list[int]:
        """Do again the last undone step; the changed cell ids ([] when there is nothing to redo)."""
        if not self._redo:
            return []
        step = self._redo.pop()
        self._undo.append(step)
        return self._commit(step, record=False)


def review_groups(table: CellTable) -> dict[str, np.ndarray]:
    """The gallery's groups of a (reviewed) table: ``{class: row positions, ..., "review": row positions}``.

    A cell in review (``review`` True: the model's low-confidence flag, or the reviewer's ``review``) is only in
    the ``review`` group; each group is sorted least sure first (``confidence`` ascending, then ``cell_id``).
    Every class of the table has a group (empty arrays included), ``review`` last.
    """
    df = table.df
    n = len(df)
    rev = df["review"].astype(bool).to_numpy() if "review" in df.columns else np.zeros(n, bool)
    lab = df["label"].astype(object).to_numpy() if "label" in df.columns else np.full(n, None, object)
    conf = df["confidence"].to_numpy(np.float64) if "confidence" in df.columns else np.zeros(n)
    order = np.lexsort((df["cell_id"].to_numpy(), conf))
    out = {c: order[(lab[order] == c) & ~rev[order]] for c in table.classes}
    out[REVIEW_LABEL] = order[rev[order]]
    return out


# ------------------------------------------------------------------ folders
def load_reviewed(results: str | os.PathLike) -> tuple[CellTable, CellTable, dict, Any]:
    """``(model table, reviewed table, summary, corrections frame)`` of a results folder.

    The reviewed table is :func:`apply_corrections` of the folder's corrections (the model's calls when there
    are none); raises :class:`CorrectionsError` when the corrections belong to another run.
    """
    from .export.kinds import read_results

    p = Path(results)
    folder = p if p.is_dir() else p.parent
    table, summary = read_results(p)
    df = read_corrections(folder)
    if table.is_classified:
        _check_tied(df, table, corrections_context(table, summary), str(folder / CORRECTIONS_NAME))
        reviewed = apply_corrections(table, df)
    else:
        reviewed = table
    return table, reviewed, summary, df


def find_corrections_folders(root: str | os.PathLike, max_depth: int = 3) -> list[Path]:
    """Results folders holding ``corrections.parquet``: ``root`` itself, or below it (``leuk batch`` output,
    a lab's archive), up to ``max_depth`` levels down; sorted.
    """
    root = Path(root)
    if (root / CORRECTIONS_NAME).is_file():
        return [root]
    out = []
    base = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).parts) - base
        if CORRECTIONS_NAME in filenames:
            out.append(Path(dirpath))
        if depth >= max_depth:
            dirnames[:] = []
        dirnames[:] = [d for d in dirnames if not d.endswith(".zarr") and not d.startswith(".")]
    return sorted(out)


# ------------------------------------------------------------------ corrections as training data
#: ``kind`` of a training row that is one cell of a slide (crop re-read from the slide at its centroid)
SLIDE_CELL_KIND = "slide-cell"


def _resolve_slide(folder: Path, table: CellTable, summary: Mapping[str, Any],
                   slides: Optional[str | os.PathLike]) -> Optional[str]:
    from .export.kinds import find_results_slide

    p = find_results_slide(folder, table, summary)
    if p is None and slides is not None:
        name = (summary.get("slide") or {}).get("name") or table.meta.get("slide")
        if name and (Path(slides) / name).exists():
            p = str(Path(slides) / name)
    return p


def training_rows(root: str | os.PathLike, *, slides: Optional[str | os.PathLike] = None,
                  check_slide: bool = True, report: Optional[dict] = None):
    """Training rows of every reviewed results folder at or below ``root``: one per corrected cell.

    The label is the reviewer's class; cells the reviewer put in ``review`` are skipped.  Columns are the
    dataset readers' (``path`` = the slide, ``label``, ``source`` = ``corrections``, ``subject`` None,
    ``sha256`` = a key of slide content + cell centroid (byte-identical cells of two folders de-duplicate;
    two labels for one cell conflict), ``group`` = that key, ``kind`` = ``"slide-cell"``, ``mpp`` = the
    results' pixel size) plus ``centroid_y``, ``centroid_x``, ``cell_id``, ``model_label``,
    ``results`` (the folder).  The slide is the one the summary names (or found by name beside the folder or in
    ``slides``); with ``check_slide`` its content fingerprint must equal the one the corrections were made on.

    Raises
    ------
    CorrectionsError
        No corrections below ``root``, a slide not found or changed, corrections of another run.
    """
    import pandas as pd

    from .export.kinds import read_results
    from .provenance import input_fingerprint

    folders = find_corrections_folders(root)
    if not folders:
        raise CorrectionsError(f"{root}: no {CORRECTIONS_NAME} at or below this folder (review a results "
                               "folder first)")
    frames, rep = [], {"folders": [], "cells": 0, "skipped_review": 0}
    for folder in folders:
        table, summary = read_results(folder)
        df = read_corrections(folder)
        ctx = corrections_context(table, summary)
        _check_tied(df, table, ctx, str(folder / CORRECTIONS_NAME))
        keep = df[df["reviewer_label"] != REVIEW_LABEL]
        rep["skipped_review"] += int(len(df) - len(keep))
        if not len(keep):
            continue
        slide = _resolve_slide(folder, table, summary, slides)
        if slide is None:
            raise CorrectionsError(f"{folder}: slide {(summary.get('slide') or {}).get('path')} not found "
                                   "(moved? give its folder as `slides:` in the dataset entry)")
        if check_slide and ctx.get("slide_fingerprint"):
            now = slide_key(input_fingerprint(slide))
            if now != ctx["slide_fingerprint"]:
                raise CorrectionsError(f"{folder}: slide {slide} is not the file these results were computed "
                                       "from (its content fingerprint differs)")
        mpp = (summary.get("mpp") or {}).get("value") or table.meta.get("mpp")
        if not mpp:
            raise CorrectionsError(f"{folder}: pixel size unknown; crops need it")
        pos = {int(c): i for i, c in enumerate(table.df["cell_id"].to_numpy(np.int64))}
        rows = [pos[int(c)] for c in keep["cell_id"]]
        cy = table.df["centroid_y"].to_numpy(np.float64)[rows]
        cx = table.df["centroid_x"].to_numpy(np.float64)[rows]
        base = ctx.get("slide_fingerprint") or str(Path(slide).resolve())
        keys = [hashlib.sha256(f"{base}|{y:.2f}|{x:.2f}".encode()).hexdigest() for y, x in zip(cy, cx, strict=False)]
        frames.append(pd.DataFrame({
            "path": str(slide), "label": keep["reviewer_label"].astype(str).to_numpy(), "source": "corrections",
            "subject": None, "sha256": keys, "group": keys, "kind": SLIDE_CELL_KIND, "mpp": float(mpp),
            "centroid_y": cy, "centroid_x": cx,
            "cell_id": keep["cell_id"].to_numpy(np.int64), "model_label": keep["model_label"].to_numpy(object),
            "results": str(folder)}))
        rep["folders"].append({"results": str(folder), "slide": str(slide), "cells": int(len(keep)),
                               "model": ctx.get("model"), "model_sha256": ctx.get("model_sha256"),
                               "corrections_sha256": corrections_digest(df)})
        rep["cells"] += int(len(keep))
    if report is not None:
        report.update(rep)
    if not frames:
        raise CorrectionsError(f"{root}: every corrected cell is in {REVIEW_LABEL!r}: nothing to train on")
    return pd.concat(frames, ignore_index=True)


def correction_crops(rows, spec) -> tuple[np.ndarray, np.ndarray]:
    """``(crops uint8 (N, S, S, 3), centroids (N, 2))`` of :func:`training_rows` rows, read from their slides
    with the classifier's crop code (:func:`leukcore.classify.extract_crops`), in the rows' order.  A masking
    spec (``mask: true``) takes the cells' polygons from their results folders.
    """
    from .classify.crops import extract_crops
    from .export.kinds import read_results
    from .io import open_slide

    S = spec.size
    out = np.zeros((len(rows), S, S, 3), np.uint8)
    cents = np.zeros((len(rows), 2), np.float64)
    if not len(rows):
        return out, cents
    rows = rows.reset_index(drop=True)
    for (path, mpp), g in rows.groupby(["path", "mpp"], sort=False):
        t = CellTable(g[["centroid_y", "centroid_x"]].reset_index(drop=True), {"mpp": float(mpp)})
        t.df["polygon"] = None
        if spec.mask:
            polys = {}
            for res in g["results"].unique():
                rt, _ = read_results(res)
                polys[res] = dict(zip(rt.df["cell_id"].astype(int), rt.df["polygon"], strict=False))
            t.df["polygon"] = [polys[r][int(c)] for r, c in zip(g["results"], g["cell_id"], strict=False)]
        with open_slide(path, mpp=float(mpp)) as slide:
            out[g.index.to_numpy()] = extract_crops(slide, t, spec, mpp=float(mpp))
        cents[g.index.to_numpy()] = g[["centroid_y", "centroid_x"]].to_numpy(np.float64)
    return out, cents
