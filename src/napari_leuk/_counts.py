"""Counts per class (and ALL / blast percentage) with the class-colour legend.

:func:`count_rows` is plain logic (no Qt here); :mod:`._counts_table` shows it as a Qt table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from leukcore.results import class_color

__all__ = ["CountRow", "count_rows", "blast_percent"]


@dataclass(frozen=True)
class CountRow:
    name: str
    count: int
    percent: Optional[float]
    rgb: tuple


def count_rows(labels: Sequence[str], classes: Sequence[str] = ()) -> list[CountRow]:
    """One row per class (the model's classes first, zeros included, then any other label seen)."""
    labels = [str(v) for v in labels]
    n = len(labels)
    names = list(classes) + sorted(set(labels) - set(classes))
    vals, cnts = np.unique(np.asarray(labels, dtype=object), return_counts=True) if n else ([], [])
    c = dict(zip(vals, cnts, strict=False))
    return [CountRow(k, int(c.get(k, 0)), (100.0 * c.get(k, 0) / n) if n else None, class_color(k)) for k in names]


def blast_percent(labels: Sequence[str], review: Optional[Sequence[bool]] = None) -> Optional[float]:
    """Percentage of cells in a blast / ALL class over the cells not in review (None with none);
    the core's rule (:func:`leukcore.results.blast_percent`).
    """
    from leukcore.results import blast_percent as _core

    return _core(labels, review)
