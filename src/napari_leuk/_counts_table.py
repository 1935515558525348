"""The counts table of the dock widget (Qt): legend + counts per class, total, blast % and review rows.

The numbers come from :func:`._counts.count_rows` and :func:`._counts.blast_percent` (the core's rules).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from leukcore.results import BLAST_CLASSES

from ._counts import CountRow, blast_percent, count_rows

__all__ = ["make_counts_table"]


def _qt():
    from qtpy.QtGui import QColor
    from qtpy.QtWidgets import QHeaderView, QTableWidget, QTableWidgetItem

    return QColor, QHeaderView, QTableWidget, QTableWidgetItem


def make_counts_table(parent=None):
    """A :class:`CountsTable` (Qt imported when the table is made)."""
    QColor, QHeaderView, QTableWidget, QTableWidgetItem = _qt()

    class CountsTable(QTableWidget):
        """Legend + counts: colour swatch, class, cells, percent; last rows total and blast %."""

        def __init__(self, parent=None):
            super().__init__(0, 3, parent)
            self.setHorizontalHeaderLabels(["class", "cells", "%"])
            self.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
            self.verticalHeader().setVisible(False)
            self.setEditTriggers(QTableWidget.NoEditTriggers)
            self.rows: list[CountRow] = []
            self.blast: Optional[float] = None
            self.total = 0

        def update_counts(
            self,
            labels: Sequence[str],
            classes: Sequence[str] = (),
            found_so_far: Optional[int] = None,
            review: Optional[Sequence[bool]] = None,
        ) -> None:
            self.rows = count_rows(labels, classes)
            self.total = len(list(labels))
            self.blast = blast_percent(labels, review)
            self.n_review = int(np.sum(np.asarray(list(review), bool))) if review is not None else 0
            extra = [("total", str(self.total), "")]
            if any(r.name in BLAST_CLASSES for r in self.rows) or any(c in BLAST_CLASSES for c in classes):
                extra.append(
                    ("ALL / blast % (confident cells)", "", "-" if self.blast is None else f"{self.blast:.1f}")
                )
            if review is not None:
                extra.append(("left for review", str(self.n_review), ""))
            if found_so_far is not None:
                extra.append(("found so far", str(found_so_far), ""))
            self.setRowCount(len(self.rows) + len(extra))
            for i, r in enumerate(self.rows):
                it = QTableWidgetItem(f"\u25a0 {r.name}")
                it.setForeground(QColor(*r.rgb))
                self.setItem(i, 0, it)
                self.setItem(i, 1, QTableWidgetItem(str(r.count)))
                self.setItem(i, 2, QTableWidgetItem("-" if r.percent is None else f"{r.percent:.1f}"))
            for j, (a, b, c) in enumerate(extra):
                i = len(self.rows) + j
                self.setItem(i, 0, QTableWidgetItem(a))
                self.setItem(i, 1, QTableWidgetItem(b))
                self.setItem(i, 2, QTableWidgetItem(c))
            # show every row (no scroll bar): header + rows
            h = self.horizontalHeader().height() + sum(self.rowHeight(i) for i in range(self.rowCount()))
            self.setFixedHeight(h + 2 * self.frameWidth() + 2)

        def as_dict(self) -> dict:
            d = {r.name: r.count for r in self.rows}
            d["total"] = self.total
            d["blast_percent"] = self.blast
            return d

    return CountsTable(parent)
