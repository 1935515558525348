"""Review of a cells layer: the reviewer's corrections, key bindings, undo / redo (no Qt here).

A skin over :class:`leukcore.corrections.Corrections` (the core owns the logic): a :class:`Review` ties one
napari cells layer to a ``Corrections``; every change (a key, the gallery, *Set class of selected*) goes
through ``Corrections.set`` / ``.undo`` / ``.redo``, whose listener writes the reviewed call of the changed
cells back into ``layer.features`` (:func:`leukcore.corrections.apply_corrections` of just those rows:
``label`` / ``review`` are the reviewed call, ``model_label`` / ``model_review`` the model's, ``reviewer_label``
the reviewer's) and recolours them (:func:`._layers.recolor`).

When the layer came from a results folder (the reader puts ``leuk_results_dir`` in its metadata) the
corrections are ``RESULTS/corrections.parquet``, restored on opening and rewritten atomically on every change;
otherwise (a run of the widget) they live in memory.

Keys (bound on the cells layer: they act while it is the active layer; the gallery takes the same keys):
``1`` .. ``9`` the model's classes in order, ``0`` or ``R`` *review* (unidentified), ``Backspace`` back to the
model's call, ``Control-Z`` undo, ``Control-Shift-Z`` / ``Control-Y`` redo.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from leukcore.corrections import REVIEW_LABEL, Corrections, CorrectionsError, apply_corrections, review_groups
from leukcore.results import CellTable

from . import _layers as L

__all__ = [
    "Review",
    "review_for",
    "results_dir_of",
    "key_action",
    "REVIEW_KEYS",
    "CLEAR_KEYS",
    "UNDO_KEYS",
    "REDO_KEYS",
    "REVIEW_COLUMNS",
]

#: keys that put the selected cells in ``review`` (unidentified)
REVIEW_KEYS = ("0", "R")
#: keys that take the selected cells back to the model's call
CLEAR_KEYS = ("Backspace",)
UNDO_KEYS = ("Control-Z",)
REDO_KEYS = ("Control-Shift-Z", "Control-Y")
#: feature columns the review writes (the reviewed call and both calls)
REVIEW_COLUMNS = ("label", "review", "model_label", "model_review", "reviewer_label", "reviewer")

_REVIEWS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def results_dir_of(layer) -> Optional[Path]:
    """The results folder a cells layer was read from (``None`` for a widget run or a loose table)."""
    md = layer.metadata or {}
    d = md.get("leuk_results_dir")
    if d and Path(d).is_dir():
        return Path(d)
    return None


def key_action(key: str, classes: Sequence[str]):
    """What a key does: ``("set", label)``, ``("clear", None)``, ``("undo", None)``, ``("redo", None)`` or None.

    ``1`` .. ``9`` are the classes in order (``classes[0]`` is ``1``).
    """
    if key in UNDO_KEYS:
        return ("undo", None)
    if key in REDO_KEYS:
        return ("redo", None)
    if key in REVIEW_KEYS or key == "r":
        return ("set", REVIEW_LABEL)
    if key in CLEAR_KEYS:
        return ("clear", None)
    if len(key) == 1 and key.isdigit() and 1 <= int(key) <= min(9, len(classes)):
        return ("set", classes[int(key) - 1])
    return None


class Review:
    """The review state of one cells layer (see the module doc).

    Attributes
    ----------
    layer : napari layer
        The cells layer (features hold the reviewed calls).
    corrections : leukcore.corrections.Corrections
        The core's state; ``corrections.path`` is ``corrections.parquet`` when saved beside results.
    listeners : list of callables
        Called with the changed row positions after every change (counts, gallery).
    error : str or None
        Why stored corrections were not restored (they belong to another run); the review then starts
        afresh in memory and the file is left alone.
    """

    def __init__(self, layer, reviewer: Optional[str] = None):
        self.layer = layer
        self.listeners: list[Callable[[list[int]], None]] = []
        self.error: Optional[str] = None
        table = L.table_from_layer(layer)
        self.results_dir = results_dir_of(layer)
        summary = (layer.metadata or {}).get("leuk_summary") or {}
        corr = None
        if self.results_dir is not None:
            try:
                corr = Corrections.open(self.results_dir, reviewer=reviewer, table=table, summary=summary)
            except CorrectionsError as e:
                self.error = str(e)
        if corr is None:
            corr = Corrections(table, summary, path=None, reviewer=reviewer)
        self.corrections = corr
        ids = layer.features["cell_id"].to_numpy(np.int64)
        self._row_of = {int(c): i for i, c in enumerate(ids)}
        self._apply(None)
        corr.listeners.append(self._on_changed)

    # ------------------------------------------------------------ state
    @property
    def classes(self) -> list:
        return list(self.corrections.classes)

    @property
    def path(self) -> Optional[Path]:
        return self.corrections.path

    def table(self) -> CellTable:
        """The reviewed table (the layer's features: ``label`` / ``review`` are the reviewed calls)."""
        return L.table_from_layer(self.layer)

    def groups(self) -> dict:
        """Gallery groups: ``{class: rows, ..., "review": rows}``, least sure first (core's ``review_groups``)."""
        f = self.layer.features
        cols = [c for c in ("cell_id", "label", "review", "confidence") if c in f.columns]
        return review_groups(CellTable(f[cols], {"classes": self.classes}))

    def rows_of(self, cell_ids) -> list[int]:
        return [self._row_of[int(c)] for c in cell_ids if int(c) in self._row_of]

    def cell_ids(self, rows) -> list[int]:
        ids = self.layer.features["cell_id"].to_numpy(np.int64)
        return [int(ids[int(r)]) for r in rows]

    def selected_rows(self) -> list[int]:
        return sorted(int(i) for i in (getattr(self.layer, "selected_data", ()) or ()))

    # ------------------------------------------------------------ editing (all through the core)
    def set(self, rows, label: Optional[str]) -> list[int]:
        """Give cells (row positions) the reviewer's class, ``"review"``, or None (the model's call)."""
        ids = self.cell_ids(rows)
        if not ids:
            return []
        return self.rows_of(self.corrections.set(ids, label))

    def set_selected(self, label: Optional[str]) -> list[int]:
        return self.set(self.selected_rows(), label)

    def undo(self) -> list[int]:
        return self.rows_of(self.corrections.undo())

    def redo(self) -> list[int]:
        return self.rows_of(self.corrections.redo())

    def press(self, key: str, rows=None) -> Optional[list[int]]:
        """Do what ``key`` does (:func:`key_action`) on ``rows`` (default the selected cells); None when the key
        means nothing.
        """
        act = key_action(key, self.classes)
        if act is None:
            return None
        what, label = act
        if what == "undo":
            return self.undo()
        if what == "redo":
            return self.redo()
        rows = self.selected_rows() if rows is None else list(rows)
        return self.set(rows, None if what == "clear" else label)

    # ------------------------------------------------------------ features <- corrections
    def _apply(self, cell_ids) -> list[int]:
        f = self.layer.features
        if cell_ids is None:
            rows = np.arange(len(f))
        else:
            rows = np.asarray(self.rows_of(cell_ids), dtype=int)
            if not len(rows):
                return []
        meta = {"classes": self.classes}
        sub = f.iloc[rows].copy()
        if "model_label" in sub.columns and sub["model_label"].isna().any():
            sub = sub.drop(columns=[c for c in ("model_label", "model_review") if c in sub.columns])
        if "model_label" not in sub.columns and "review" not in sub.columns:
            sub["review"] = False
        rev = apply_corrections(CellTable(sub.reset_index(drop=True), meta), self.corrections).df
        idx = f.index[rows]
        old_label = f["label"].to_numpy(object)[rows]
        changed = any(c not in f.columns for c in REVIEW_COLUMNS)
        for c in REVIEW_COLUMNS:
            obj = c in ("reviewer_label", "reviewer", "model_label", "label")
            vals = rev[c].to_numpy(object if obj else bool)
            if c in f.columns and not changed:
                cur = f[c].to_numpy(object if obj else bool)[rows]
                same = (
                    (cur == vals)
                    | (np.array([v is None or v != v for v in cur]) & np.array([v is None or v != v for v in vals]))
                    if obj
                    else cur == vals
                )
                if np.all(same):
                    continue
            changed = True
            if c not in f.columns:
                f[c] = None if obj and c != "label" else False
            if f[c].dtype != object and obj:
                f[c] = f[c].astype(object)
            f.loc[idx, c] = vals
        edited = rev["reviewer_label"].notna().to_numpy()
        if "edited" not in f.columns or not np.array_equal(f["edited"].to_numpy(bool)[rows], edited):
            f.loc[idx, "edited"] = edited
            changed = True
        if changed:  # a first attach to a layer the reader already reviewed changes nothing
            f["review"] = f["review"].astype(bool)
            f["model_review"] = f["model_review"].astype(bool)
            self.layer.features = f
        recol = rows[old_label != rev["label"].to_numpy(object)]
        if cell_ids is not None:
            recol = rows
        if len(recol):
            L.recolor(self.layer, recol.tolist())
        if self.layer.metadata.get("leuk_low_only"):
            L.show_only_low_confidence(self.layer, True)
        return rows.tolist()

    def _on_changed(self, cell_ids):
        rows = self._apply(cell_ids)
        for fn in list(self.listeners):
            fn(rows)

    # ------------------------------------------------------------ key bindings
    def bind_keys(self) -> None:
        """Bind the review keys on the cells layer (they override the layer's mode shortcuts 1..9)."""
        keys = [str(i) for i in range(1, min(9, len(self.classes)) + 1)]
        keys += list(REVIEW_KEYS) + list(CLEAR_KEYS) + list(UNDO_KEYS) + list(REDO_KEYS)
        me = weakref.ref(self)
        for k in keys:

            def handler(layer, k=k):
                r = me()
                if r is not None:
                    r.press(k)

            self.layer.bind_key(k, handler, overwrite=True)


def review_for(layer, reviewer: Optional[str] = None, *, create: bool = True) -> Optional[Review]:
    """The :class:`Review` of a cells layer (one per layer, shared by the widget and the gallery); created
    (and its keys bound) on first use; None for a layer without classified cells.
    """
    r = _REVIEWS.get(layer)
    if r is not None or not create:
        return r
    f = getattr(layer, "features", None)
    if f is None or "label" not in f.columns or "cell_id" not in f.columns or not len(f):
        return None
    meta = (layer.metadata or {}).get("leuk_meta") or {}
    if not (meta.get("classes") or any(str(c).startswith("prob_") for c in f.columns)):
        return None  # cells found but not classified (leuk detect): nothing to review
    r = Review(layer, reviewer=reviewer)
    r.bind_keys()
    _REVIEWS[layer] = r
    return r
