"""What the dock widget does with a result (Qt): selection, class edits, the review gallery, the
low-confidence filter, Grad-CAM of a cell, table export and screenshots.  Mixed into
:class:`napari_leuk._widget.LeukWidget`.
"""

from __future__ import annotations

from typing import Optional

from qtpy.QtWidgets import QFileDialog

from . import _layers as L

__all__ = ["WidgetActions"]


class WidgetActions:
    """The result actions of :class:`~napari_leuk._widget.LeukWidget` (uses its layers, combos and counts)."""

    def selected_rows(self) -> list:
        if self.cells_layer is None:
            return []
        return sorted(int(i) for i in getattr(self.cells_layer, "selected_data", ()) or ())

    def set_selected_class(self, *_, new_class: Optional[str] = None):
        from napari.utils.notifications import show_warning

        rows = self.selected_rows()
        if not rows:
            show_warning("Select cells first (select tool, or click a cell).")
            return
        rev = self._attach_review()
        if rev is not None:  # through leukcore.corrections: undoable, both calls kept, saved
            rev.set(rows, new_class or self.class_combo.currentText())
            return
        L.set_cell_class(self.cells_layer, rows, new_class or self.class_combo.currentText())
        if self.low_conf.isChecked():
            L.show_only_low_confidence(self.cells_layer, True)
        self.update_counts()

    def _attach_review(self):
        """The cells layer's :class:`._review.Review` (keys bound; counts follow every change)."""
        from ._review import review_for

        rev = review_for(self.cells_layer)
        if rev is not None and not getattr(rev, "_widget_hooked", False):
            rev.listeners.append(lambda rows: self.update_counts())
            rev._widget_hooked = True
        return rev

    def open_gallery(self):
        """Dock the cell gallery (:class:`._gallery.GalleryWidget`) on the cells layer."""
        from ._gallery import GalleryWidget

        g = getattr(self, "gallery", None)
        if g is not None and g.layer is self.cells_layer:
            return g
        self.gallery = GalleryWidget(self.viewer, layer=self.cells_layer)
        self.viewer.window.add_dock_widget(self.gallery, name="cell gallery", area="right")
        return self.gallery

    def toggle_low_confidence(self, on: bool):
        if self.cells_layer is not None:
            n = L.show_only_low_confidence(self.cells_layer, bool(on))
            self.status.setText(f"{n} cells shown" + (" (low confidence)" if on else ""))

    def _on_mouse_move(self, viewer, event):
        if self.cells_layer is None or self.cells_layer not in viewer.layers:
            return
        try:
            i = L.cell_index_at(self.cells_layer, viewer.cursor.position)
        except Exception:
            return
        if i is not None:
            text = L.describe_cell(self.cells_layer.features, i)
            self.cell_info.setText(text)
            viewer.status = text

    def _on_click(self, layer, event):
        if layer.mode not in ("pan_zoom",):
            return
        i = L.cell_index_at(layer, event.position)
        if i is not None:
            mods = getattr(event, "modifiers", None) or ()
            if "Shift" in mods or "Control" in mods:  # add / remove a cell (review several at once)
                layer.selected_data = set(layer.selected_data) ^ {i}
            else:
                layer.selected_data = {i}
            self.cell_info.setText(L.describe_cell(layer.features, i))

    def gradcam_selected(self, *_):
        from napari.utils.notifications import show_error, show_warning

        from ._worker import run_in_thread

        rows = self.selected_rows()
        if not rows:
            show_warning("Select one cell for Grad-CAM.")
            return
        row = rows[0]
        table = L.table_from_layer(self.cells_layer)
        ctx = self._run_ctx

        def work():
            from leukcore.io import open_slide
            from leukcore.loader import load_classifier

            from ._gradcam import cell_gradcam

            clf = load_classifier(ctx["model"], device=ctx["device"])  # loaded once per process (leukcore.loader)
            src = ctx["source"]
            slide = open_slide(src) if isinstance(src, str) else src
            return clf, cell_gradcam(clf, slide, table, row)

        def done(res):
            from napari.layers import Layer

            from ._gradcam import gradcam_layer_data

            clf, heat = res
            r = table.df.iloc[row]
            mpp = table.meta.get("mpp") or 1.0
            layer = ctx["layer"]
            data, kw, lt = gradcam_layer_data(
                heat,
                (r["centroid_y"], r["centroid_x"]),
                clf.spec.crop_um,
                mpp,
                layer.scale,
                layer.translate,
                name=f"Grad-CAM cell {int(r['cell_id'])} ({r['label']})",
            )
            kw["units"] = tuple(str(u) for u in layer.units[-2:])
            self.viewer.add_layer(Layer.create(data, kw, lt))

        w = run_in_thread(work, _connect={"returned": done, "errored": lambda e: show_error(f"Grad-CAM failed: {e}")})
        self._gradcam_worker = w
        return w

    # --------------------------------------------------------------- export
    def export_table(self, path: Optional[str] = None):
        from napari.utils.notifications import show_error, show_info

        from ._export import TABLE_FILTER, export_table

        if self.cells_layer is None:
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export cells", "cells.parquet", TABLE_FILTER)
            if not path:
                return None
        try:
            out = export_table(L.table_from_layer(self.cells_layer), path)
        except Exception as e:
            show_error(f"Export failed: {e}")
            return None
        show_info(f"wrote {out}")
        return out

    def screenshot(self, path: Optional[str] = None):
        from napari.utils.notifications import show_info

        from ._export import save_screenshot

        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Screenshot with legend", "cells.png", "PNG (*.png)")
            if not path:
                return None
        bp = self.counts.blast
        out = save_screenshot(
            self.viewer,
            path,
            {r.name: r.count for r in self.counts.rows},
            title=self.image_combo.currentText(),
            extra=[] if bp is None else [f"ALL / blast: {bp:.1f} %"],
        )
        show_info(f"wrote {out}")
        return out
