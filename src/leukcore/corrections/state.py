"""The editable review state of a results folder (:class:`Corrections`: set, clear, undo / redo, saved at
every change) and :func:`review_groups`.  See :mod:`leukcore.corrections`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np

from ..results import CellTable
from .files import (
    CORRECTIONS_NAME,
    REVIEW_LABEL,
    Correction,
    CorrectionsError,
    apply_corrections,
    check_tied,
    corrections_context,
    corrections_digest,
    frame_of,
    now_iso,
    read_corrections,
    write_corrections,
)

__all__ = ["Corrections", "review_groups"]


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

    def __init__(
        self,
        table: CellTable,
        summary: Optional[Mapping[str, Any]] = None,
        *,
        path: Optional[str | os.PathLike] = None,
        reviewer: Optional[str] = None,
        rows: Iterable[Correction] = (),
        autosave: bool = True,
    ):
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
        self._model = dict(
            zip(df["cell_id"].astype(np.int64).tolist(), df[model_col].astype(object).tolist(), strict=False)
        )
        self._yx = dict(
            zip(
                df["cell_id"].astype(np.int64).tolist(),
                zip(df["centroid_y"].astype(float).tolist(), df["centroid_x"].astype(float).tolist(), strict=False),
                strict=False,
            )
        )
        self.classes = list(table.classes)
        self._rows: dict[int, Correction] = {}
        for r in rows:
            self._rows[int(r.cell_id)] = r
        self._undo: list[list[tuple[int, Optional[Correction], Optional[Correction]]]] = []
        self._redo: list[list[tuple[int, Optional[Correction], Optional[Correction]]]] = []
        self.listeners: list[Callable[[list[int]], None]] = []

    # ---------------------------------------------------------------- open / save
    @classmethod
    def open(
        cls,
        results: str | os.PathLike,
        *,
        reviewer: Optional[str] = None,
        autosave: bool = True,
        table: Optional[CellTable] = None,
        summary: Optional[Mapping[str, Any]] = None,
    ) -> "Corrections":
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
            from ..export.kinds import read_results

            t, s = read_results(p)
            table = table if table is not None else t
            summary = summary if summary is not None else s
        self = cls(table, summary, path=folder / CORRECTIONS_NAME, reviewer=reviewer, autosave=autosave)
        df = read_corrections(folder)
        check_tied(df, table, self.context, str(folder / CORRECTIONS_NAME))
        for r in df.itertuples(index=False):
            d = {k: (None if (isinstance(v, float) and v != v) else v) for k, v in r._asdict().items()}
            d["cell_id"] = int(d["cell_id"])
            d["centroid_y"], d["centroid_x"] = float(r.centroid_y), float(r.centroid_x)
            self._rows[d["cell_id"]] = Correction(**d)
        bad = sorted({r.reviewer_label for r in self._rows.values()} - set(self.classes) - {REVIEW_LABEL})
        if bad:
            raise CorrectionsError(
                f"{folder / CORRECTIONS_NAME}: reviewer labels {bad} are not classes of "
                f"these results ({', '.join(self.classes)} or {REVIEW_LABEL})"
            )
        return self

    def file_meta(self) -> dict:
        """The file-level metadata written with the corrections: classes and what they are tied to."""
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
        """``(cell_id, Correction)`` pairs, by cell id."""
        return sorted(self._rows.items())

    def get(self, cell_id) -> Optional[Correction]:
        """The correction of ``cell_id``, or None."""
        return self._rows.get(int(cell_id))

    def model_label(self, cell_id) -> str:
        """The model's call of ``cell_id``."""
        return self._model[int(cell_id)]

    def label(self, cell_id) -> str:
        """The reviewed call of a cell: the reviewer's class or ``review``, else the model's label."""
        r = self._rows.get(int(cell_id))
        return r.reviewer_label if r is not None else self._model[int(cell_id)]

    def frame(self):
        """The corrections as a DataFrame (``COLUMNS``), in cell order."""
        return frame_of(self._rows.values())

    def digest(self) -> str:
        """sha256 of the corrections (:func:`~leukcore.corrections.files.corrections_digest`)."""
        return corrections_digest(self)

    def reviewed(self) -> CellTable:
        """:func:`apply_corrections` of the table with these corrections."""
        return apply_corrections(self.table, self)

    @property
    def can_undo(self) -> bool:
        """Whether there is a step to undo."""
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        """Whether there is an undone step to redo."""
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

    def set(
        self, cell_ids, label: Optional[str], *, reviewer: Optional[str] = None, time: Optional[str] = None
    ) -> list[int]:
        """Give cells the reviewer's class (or ``review``; None clears), as one undoable step.

        Returns the cell ids that changed (cells already carrying that correction are left alone).
        """
        if label is None:
            return self.clear(cell_ids)
        label = str(label)
        if label not in self.classes and label != REVIEW_LABEL:
            raise CorrectionsError(
                f"{label!r} is not a class of these results ({', '.join(self.classes)} or {REVIEW_LABEL})"
            )
        who = reviewer or self.reviewer
        when = time or now_iso()
        step = []
        for c in self._ids(cell_ids):
            before = self._rows.get(c)
            if before is not None and before.reviewer_label == label:
                continue
            y, x = self._yx[c]
            after = Correction(
                cell_id=c,
                centroid_y=y,
                centroid_x=x,
                model_label=self._model[c],
                reviewer_label=label,
                reviewer=who,
                time=when,
                **self.context,
            )
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
