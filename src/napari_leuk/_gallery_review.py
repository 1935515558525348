"""The review actions of the gallery: class keys, the reviewer's name, sign-off and the N-cell differential.
Mixed into :class:`napari_leuk._gallery.GalleryWidget`; no Qt widget is built here.
"""

from __future__ import annotations

from typing import Optional

from leukcore.corrections import REVIEW_LABEL

__all__ = ["GalleryReview", "DIFF_TAB"]

#: the gallery tab of the N-cell differential
DIFF_TAB = "N-cell"


class GalleryReview:
    """Review, sign-off and differential of :class:`~napari_leuk._gallery.GalleryWidget` (uses its state)."""

    def key(self, name: Optional[str]) -> bool:
        """Do what a key does on the cells selected here (or in the viewer); True when it meant something."""
        if name is None or self.review is None:
            return False
        rows = self.selected_rows() or self.review.selected_rows()
        self._on_reviewer(self.reviewer.text())
        return self.review.press(name, rows=rows) is not None

    def _on_reviewer(self, text):
        if self.review is not None and text.strip():
            self.review.corrections.reviewer = text.strip()

    def _on_review_changed(self, rows):
        self.refresh()

    def sign_off(self) -> Optional[dict]:
        """Sign the review (``signoff.json``) and write ``report.html`` in the results folder."""
        from napari.utils.notifications import show_error, show_info, show_warning

        if self.review is None:
            return None
        if self.review.error:
            show_warning(f"Not signed: {self.review.error}")
            return None
        if self.review.results_dir is None or self.review.path is None:
            show_warning(
                "Sign-off needs a results folder: open a `leuk analyze` output folder (its corrections "
                "are saved beside it)."
            )
            return None
        who = self.reviewer.text().strip()
        if not who:
            show_warning("Type the reviewer's name first.")
            return None
        from leukcore.report import sign_off, write_report

        try:
            rec = sign_off(self.review.results_dir, who)
            out = write_report(self.review.results_dir, reviewer=who)
        except Exception as e:
            show_error(f"Sign-off failed: {e}")
            return None
        bp = rec.get("blast_percent")
        show_info(
            f"Signed by {who}: {rec['cells']} cells, {rec['corrections']} corrections"
            + ("" if bp is None else f", blasts {bp:.1f} %")
            + f"; report {out}"
        )
        rec["report"] = str(out)
        return rec

    def count_differential(self, n: Optional[int] = None, order: Optional[str] = None) -> Optional[dict]:
        """The N-cell differential (N cells in random / raster order): shown beside the whole slide, the N cells
        in their own tab (review them there; the numbers follow), recorded in the results folder.
        """
        from napari.utils.notifications import show_error

        if self.review is None:
            return None
        try:
            n = int(n if n is not None else self.diff_n.currentText())
        except ValueError:
            show_error("N must be a whole number (100 or 200 by convention).")
            return None
        order = order or self.diff_order.currentText()
        from leukcore.differential import differential

        self.diff = differential(self.review.table(), n=n, order=order)
        self.refresh()
        self.select_tab(DIFF_TAB)
        return self.diff

    def _show_differential(self):
        from leukcore.differential import differential, record_differential

        d = self.diff = differential(
            self.review.table(), n=self.diff["n"], order=self.diff["order"], seed=self.diff["seed"]
        )
        s, w = d["sample"], d["whole_slide"]
        names = list(self.review.classes) + [REVIEW_LABEL]

        def pct(b, k):
            v = (b["percent"] or {}).get(k)
            return "-" if v is None else f"{v:.1f}"

        def n(k):
            return s["review"] if k == REVIEW_LABEL else s["counts"].get(k, 0)

        rows = "".join(
            f"<tr><td>{k}</td><td align=right>{n(k)}</td><td align=right>{pct(s, k)}</td>"
            f"<td align=right>{pct(w, k)}</td></tr>"
            for k in names
        )
        bp = lambda b: "-" if b["blast_percent"] is None else f"{b['blast_percent']:.1f}"  # noqa: E731
        self.diff_label.setText(
            f"<b>{d['counted']}-cell differential ({d['order']})</b> vs whole slide ({w['cells']} cells)"
            f"<table cellspacing=0 cellpadding=3><tr><th>class</th><th>n</th><th>%</th><th>slide %</th></tr>{rows}"
            f"<tr><td>blast %</td><td></td><td align=right>{bp(s)}</td><td align=right>{bp(w)}</td></tr></table>"
        )
        if self.review.results_dir is not None:
            try:
                record_differential(self.review.results_dir, d, reviewer=self.reviewer.text().strip() or None)
            except OSError:
                pass
