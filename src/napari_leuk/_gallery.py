"""The cell gallery dock widget: thumbnails per class and ``review``, one-key reclassify, sign-off, N-cell differential.

A skin over leukcore: groups and their order are :func:`leukcore.corrections.review_groups` (least sure first),
thumbnails :func:`leukcore.report.cell_thumbnails` (24 um crops at 96 px, read from the slide only for the
page shown), edits :class:`._review.Review` (``leukcore.corrections.Corrections``), the sign-off
:func:`leukcore.report.sign_off` + :func:`leukcore.report.write_report`, the differential
:func:`leukcore.differential.differential` / :func:`~leukcore.differential.record_differential`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Optional

import numpy as np
from qtpy.QtCore import QSize, Qt
from qtpy.QtGui import QColor, QIcon, QImage, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTabBar,
    QVBoxLayout,
    QWidget,
)

from leukcore.results import CellTable, class_color

from . import guard_pyside_none
from ._gallery_review import DIFF_TAB, GalleryReview
from ._review import review_for

guard_pyside_none()  # Qt is loaded now (see napari_leuk.guard_pyside_none)

__all__ = ["GalleryWidget", "PAGE_SIZE", "THUMB_PX", "cells_layers", "qt_key_name"]

#: thumbnails per page (only these are read from the slide)
PAGE_SIZE = 48
THUMB_PX = 96
#: thumbnails kept in memory (cell id -> icon), least recently used dropped first
CACHE_SIZE = 1500
KEYS_HELP = "keys: 1..{n} class, 0 / R review, Backspace model's call, Ctrl+Z undo, Ctrl+Shift+Z / Ctrl+Y redo"


def cells_layers(viewer) -> list:
    """The viewer's cells layers (classified, from this plugin's reader or widget)."""
    return [ly for ly in viewer.layers if "leuk_kind" in (ly.metadata or {}) and "label" in getattr(ly, "features", {})]


def qt_key_name(event) -> Optional[str]:
    """napari-style key name of a Qt key event (``"1"``, ``"R"``, ``"Control-Z"``, ...)."""
    k = event.key()
    mods = event.modifiers()
    ctrl = bool(mods & (Qt.ControlModifier | Qt.MetaModifier))
    shift = bool(mods & Qt.ShiftModifier)
    if Qt.Key_0 <= k <= Qt.Key_9 and not ctrl:
        return str(k - Qt.Key_0)
    if k == Qt.Key_Backspace or k == Qt.Key_Delete:
        return "Backspace"
    if Qt.Key_A <= k <= Qt.Key_Z:
        ch = chr(k)
        if ctrl:
            return f"Control-{'Shift-' if shift else ''}{ch}"
        return ch
    return None


#: a slide whose full-resolution level has at most this many pixels is read once and kept in memory
#: (``extract_crops`` would otherwise read the whole level again for every page)
IN_MEMORY_PIXELS = 16_000_000


def _in_memory_if_small(slide):
    """The slide itself, or (small slides) an in-memory copy of its full-resolution level: pages then crop from
    memory instead of re-reading the level each time.
    """
    import dask.array as da

    from leukcore.io import Slide

    H, W = (int(v) for v in slide.shape[:2])
    if H * W > IN_MEMORY_PIXELS:
        return slide
    a = np.asarray(slide.levels[0].compute() if hasattr(slide.levels[0], "compute") else slide.levels[0])
    return Slide.from_array(da.from_array(a, chunks=a.shape), mpp=slide.mpp, path=slide.path)


class _List(QListWidget):
    def __init__(self, gallery):
        super().__init__()
        self._gallery = gallery

    def keyPressEvent(self, event):
        if not self._gallery.key(qt_key_name(event)):
            super().keyPressEvent(event)


class GalleryWidget(GalleryReview, QWidget):
    """Thumbnails of a cells layer's cells, a tab per class plus ``review`` (least sure first).

    Click a thumbnail: the viewer centres on the cell and selects it; a selection in the viewer is highlighted
    here when it is on the page.  Keys (in the gallery or on the active cells layer): see
    :mod:`._review`.
    """

    def __init__(self, napari_viewer, layer=None, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.layer = None
        self.review = None
        self.groups: dict = {}
        self.tab_names: list = []
        self.page = 0
        self.diff: Optional[dict] = None
        self._slide = None
        self._slide_key = None
        self._icons: "OrderedDict[int, QIcon]" = OrderedDict()
        self._syncing = False
        self._build()
        ev = self.viewer.layers.events
        ev.inserted.connect(self._on_layers_changed)
        ev.removed.connect(self._on_layers_changed)
        self.set_layer(layer if layer is not None else self._pick_layer())

    # ------------------------------------------------------------------ UI
    def _build(self):
        lay = QVBoxLayout(self)
        self.title = QLabel("no cells layer")
        self.title.setWordWrap(True)
        lay.addWidget(self.title)
        top = QHBoxLayout()
        self.reviewer = QLineEdit(os.environ.get("USER") or os.environ.get("USERNAME") or "")
        self.reviewer.setPlaceholderText("reviewer's name (signs the review)")
        self.reviewer.textChanged.connect(self._on_reviewer)
        top.addWidget(QLabel("reviewer"))
        top.addWidget(self.reviewer, 1)
        lay.addLayout(top)
        self.tabs = QTabBar()
        self.tabs.setExpanding(False)
        self.tabs.currentChanged.connect(lambda _i: self.show_page(0))
        lay.addWidget(self.tabs)
        self.list = _List(self)
        self.list.setViewMode(QListView.IconMode)
        self.list.setIconSize(QSize(THUMB_PX, THUMB_PX))
        self.list.setGridSize(QSize(THUMB_PX + 8, THUMB_PX + 22))
        self.list.setResizeMode(QListView.Adjust)
        self.list.setMovement(QListView.Static)
        self.list.setUniformItemSizes(True)
        self.list.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.list.setMinimumHeight(3 * (THUMB_PX + 22) + 8)
        self.list.itemClicked.connect(self._on_item_clicked)
        self.list.itemSelectionChanged.connect(self._on_list_selection)
        lay.addWidget(self.list, 1)
        nav = QHBoxLayout()
        self.prev_btn = QPushButton("< page")
        self.next_btn = QPushButton("page >")
        self.page_label = QLabel("")
        self.prev_btn.clicked.connect(lambda: self.show_page(self.page - 1))
        self.next_btn.clicked.connect(lambda: self.show_page(self.page + 1))
        nav.addWidget(self.prev_btn)
        nav.addWidget(self.page_label, 1)
        nav.addWidget(self.next_btn)
        lay.addLayout(nav)
        self.help = QLabel("")
        self.help.setWordWrap(True)
        lay.addWidget(self.help)

        row = QHBoxLayout()
        self.undo_btn = QPushButton("Undo")
        self.redo_btn = QPushButton("Redo")
        self.undo_btn.clicked.connect(lambda: self.key("Control-Z"))
        self.redo_btn.clicked.connect(lambda: self.key("Control-Shift-Z"))
        self.signoff_btn = QPushButton("Sign off")
        self.signoff_btn.clicked.connect(lambda: self.sign_off())
        row.addWidget(self.undo_btn)
        row.addWidget(self.redo_btn)
        row.addWidget(self.signoff_btn)
        lay.addLayout(row)
        drow = QHBoxLayout()
        self.diff_n = QComboBox()
        self.diff_n.addItems(["100", "200"])
        self.diff_n.setEditable(True)
        self.diff_order = QComboBox()
        self.diff_order.addItems(["random", "raster"])
        self.diff_btn = QPushButton("Differential")
        self.diff_btn.clicked.connect(lambda: self.count_differential())
        drow.addWidget(QLabel("N"))
        drow.addWidget(self.diff_n)
        drow.addWidget(self.diff_order)
        drow.addWidget(self.diff_btn)
        lay.addLayout(drow)
        self.diff_label = QLabel("")
        self.diff_label.setWordWrap(True)
        self.diff_label.setTextFormat(Qt.RichText)
        lay.addWidget(self.diff_label)

    # ------------------------------------------------------------ layer
    def _pick_layer(self):
        active = self.viewer.layers.selection.active
        layers = cells_layers(self.viewer)
        if active in layers:
            return active
        return layers[-1] if layers else None

    def _on_layers_changed(self, *_):
        if self.layer is not None and self.layer in self.viewer.layers:
            return
        self.set_layer(self._pick_layer())

    def set_layer(self, layer):
        """Show the cells of ``layer`` (None: nothing)."""
        if self.layer is not None:
            try:
                self.layer.selected_data.events.items_changed.disconnect(self._on_layer_selection)
            except Exception:
                pass
            if self.review is not None and self._on_review_changed in self.review.listeners:
                self.review.listeners.remove(self._on_review_changed)
        self.layer, self.review, self.diff = layer, None, None
        self._slide, self._icons = None, OrderedDict()
        self.diff_label.setText("")
        if layer is not None:
            self.review = review_for(layer, reviewer=self.reviewer.text() or None)
        if self.review is None:
            self.layer = None
            self.title.setText("no classified cells layer: open a results folder or run the finder")
        else:
            self._on_reviewer(self.reviewer.text())
            self.review.listeners.append(self._on_review_changed)
            layer.selected_data.events.items_changed.connect(self._on_layer_selection)
            where = self.review.path if self.review.path is not None else "in memory (not saved)"
            self.title.setText(f"{layer.name}: corrections {where}")
            self.help.setText(
                KEYS_HELP.format(n=min(9, len(self.review.classes)))
                + "; "
                + ", ".join(f"{i + 1} {c}" for i, c in enumerate(self.review.classes[:9]))
            )
            if self.review.error:
                from napari.utils.notifications import show_warning

                show_warning(f"{self.review.error}; reviewing afresh in memory")
        for w in (self.undo_btn, self.redo_btn, self.signoff_btn, self.diff_btn):
            w.setEnabled(self.review is not None)
        self.refresh()

    # ------------------------------------------------------------ groups, tabs, pages
    def refresh(self):
        """Regroup (after a change) and redraw the tab titles and the current page."""
        cur = self.current_tab()
        self.groups = self.review.groups() if self.review is not None else {}
        if self.diff is not None:
            self.groups[DIFF_TAB] = np.asarray(self.review.rows_of(self.diff["cell_ids"]), int)
        names = list(self.groups)
        self.tabs.blockSignals(True)
        while self.tabs.count():
            self.tabs.removeTab(0)
        for n in names:
            i = self.tabs.addTab(f"{n} ({len(self.groups[n])})")
            if self.review is not None and n in self.review.classes:
                self.tabs.setTabTextColor(i, QColor(*class_color(n)))
        self.tab_names = names
        if cur in names:
            self.tabs.setCurrentIndex(names.index(cur))
        self.tabs.blockSignals(False)
        self.show_page(self.page)
        if self.diff is not None:
            self._show_differential()

    def current_tab(self) -> Optional[str]:
        i = self.tabs.currentIndex()
        return self.tab_names[i] if 0 <= i < len(self.tab_names) else None

    def select_tab(self, name: str):
        self.tabs.setCurrentIndex(self.tab_names.index(name))

    def tab_counts(self) -> dict:
        return {n: int(len(g)) for n, g in self.groups.items()}

    def n_pages(self) -> int:
        g = self.groups.get(self.current_tab())
        return max(1, -(-len(g) // PAGE_SIZE)) if g is not None else 1

    def page_rows(self) -> list:
        g = self.groups.get(self.current_tab())
        if g is None:
            return []
        return [int(r) for r in g[self.page * PAGE_SIZE : (self.page + 1) * PAGE_SIZE]]

    def show_page(self, page: int):
        """Show page ``page`` of the current tab (thumbnails read for this page only)."""
        self.page = int(min(max(page, 0), self.n_pages() - 1))
        rows = self.page_rows()
        self._syncing = True
        self.list.clear()
        if rows:
            icons = self.icons(rows)
            f = self.layer.features
            ids = f["cell_id"].to_numpy(np.int64)
            conf = f["confidence"].to_numpy(float) if "confidence" in f else np.full(len(f), np.nan)
            lab = f["label"].to_numpy(object)
            rl = f["reviewer_label"].to_numpy(object) if "reviewer_label" in f else np.full(len(f), None)
            for r, icon in zip(rows, icons, strict=False):
                mark = "*" if rl[r] is not None and rl[r] == rl[r] else ""
                text = f"{ids[r]} {conf[r]:.2f}{mark}" if conf[r] == conf[r] else f"{ids[r]}{mark}"
                it = QListWidgetItem(icon, text)
                it.setData(Qt.UserRole, int(r))
                it.setToolTip(
                    f"cell {ids[r]}: {lab[r]} (model {f['model_label'].iat[r]}"
                    + (f", reviewer {rl[r]}" if mark else "")
                    + ")"
                    if "model_label" in f
                    else ""
                )
                self.list.addItem(it)
        self._syncing = False
        self._highlight_selection()
        self.page_label.setText(f"page {self.page + 1} / {self.n_pages()}")
        self.prev_btn.setEnabled(self.page > 0)
        self.next_btn.setEnabled(self.page + 1 < self.n_pages())

    # ------------------------------------------------------------ thumbnails
    def slide(self):
        """The slide the cells were found on, opened once (lazily): the cells' slide path, else the viewer's
        RGB image layer under them.
        """
        if self._slide is not None:
            return self._slide
        meta = (self.layer.metadata or {}).get("leuk_meta") or {}
        mpp = meta.get("mpp")
        path = meta.get("path") or meta.get("slide_path")
        from leukcore.io import Slide, open_slide

        if isinstance(path, str) and os.path.exists(path):
            self._slide = _in_memory_if_small(open_slide(path, mpp=mpp or None))
            return self._slide
        from napari.layers import Image

        for ly in self.viewer.layers:
            if isinstance(ly, Image) and ly.rgb:
                p = (ly.metadata or {}).get("leuk_slide_path")
                if p and os.path.exists(p):
                    self._slide = _in_memory_if_small(open_slide(p, mpp=mpp or None))
                else:
                    data = ly.data[0] if ly.multiscale else ly.data
                    self._slide = Slide.from_array(data, mpp=mpp or float(ly.scale[-1]))
                return self._slide
        return None

    def icons(self, rows) -> list:
        """Icons of cells (row positions): cached ones, the rest read in one call of ``cell_thumbnails``."""
        from leukcore.report import cell_thumbnails

        f = self.layer.features
        ids = f["cell_id"].to_numpy(np.int64)
        need = [r for r in rows if int(ids[r]) not in self._icons]
        if need:
            slide = self.slide()
            if slide is None:
                imgs = np.full((len(need), THUMB_PX, THUMB_PX, 3), 128, np.uint8)
            else:
                meta = (self.layer.metadata or {}).get("leuk_meta") or {}
                t = CellTable(f[["cell_id", "centroid_y", "centroid_x"]], {"mpp": meta.get("mpp")})
                imgs = cell_thumbnails(slide, t, need, size=THUMB_PX)
            for r, im in zip(need, imgs, strict=False):
                im = np.ascontiguousarray(im)
                q = QImage(im.data, im.shape[1], im.shape[0], 3 * im.shape[1], QImage.Format_RGB888).copy()
                self._icons[int(ids[r])] = QIcon(QPixmap.fromImage(q))
            while len(self._icons) > CACHE_SIZE:
                self._icons.popitem(last=False)
        out = []
        for r in rows:
            c = int(ids[r])
            self._icons.move_to_end(c)
            out.append(self._icons[c])
        return out

    # ------------------------------------------------------------ selection both ways
    def selected_rows(self) -> list:
        return sorted(int(it.data(Qt.UserRole)) for it in self.list.selectedItems())

    def _on_item_clicked(self, item):
        self.focus_cell(int(item.data(Qt.UserRole)))

    def focus_cell(self, row: int, select: bool = True):
        """Centre the viewer on a cell (row position) and (optionally) select it."""
        f = self.layer.features
        y, x = float(f["centroid_y"].iat[row]), float(f["centroid_x"].iat[row])
        world = self.layer.data_to_world((y, x))
        scene = getattr(self.viewer, "scene", None)  # napari >= 0.9: viewer.scene.camera
        cam = scene.camera if scene is not None and hasattr(scene, "camera") else self.viewer.camera
        cam.center = tuple(float(v) for v in world[-2:])
        if select and not self._syncing:
            rows = self.selected_rows() or [row]
            self.layer.selected_data = set(rows)
            self.viewer.layers.selection.active = self.layer

    def _on_list_selection(self):
        if self._syncing or self.layer is None:
            return
        rows = self.selected_rows()
        if rows:
            self._syncing = True
            try:
                self.layer.selected_data = set(rows)
            finally:
                self._syncing = False

    def _on_layer_selection(self, *_):
        if not self._syncing:
            self._highlight_selection()

    def _highlight_selection(self):
        if self.layer is None:
            return
        sel = {int(i) for i in self.layer.selected_data}
        self._syncing = True
        try:
            for i in range(self.list.count()):
                it = self.list.item(i)
                it.setSelected(int(it.data(Qt.UserRole)) in sel)
        finally:
            self._syncing = False
