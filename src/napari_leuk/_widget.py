"""The dock widget: wires leukcore's analysis to napari (no analysis logic here).

Logic lives in :mod:`._layers` (cells layer, colours, edits), :mod:`._regions`
(whole slide / current view / shapes), :mod:`._run` / :mod:`._worker` (progress stream, worker thread),
:mod:`._counts` / :mod:`._counts_table` (counts + legend), :mod:`._export` and :mod:`._gradcam`.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from . import _layers as L
from . import guard_pyside_none
from ._counts_table import make_counts_table
from ._regions import RegionError, cells_in_shapes, shapes_region, view_region
from ._run import friendly_error
from ._widget_actions import WidgetActions
from ._worker import start_analysis

guard_pyside_none()  # Qt is loaded now (see napari_leuk.guard_pyside_none)

__all__ = ["LeukWidget", "model_names", "model_classes"]

#: the shipped classifiers, offered first and in this order; then any other classification model found
#: by :func:`leukcore.models.list_models` (the folders of ``$LEUK_MODEL_PATH``)
MODELS = ["all-binary", "all-4class"]
REGIONS = ["whole slide", "current view", "shapes layer"]
_FILE = "model file..."


def model_names() -> list:
    """Classification models offered by name: :data:`MODELS` first, then the others the registry knows."""
    try:
        from leukcore.models import list_models

        found = list_models("classification")
    except Exception:  # a broken model folder must not break the widget
        found = list(MODELS)
    return [m for m in MODELS if m in found] + [m for m in found if m not in MODELS]


_CARDS: dict = {}


def model_classes(name_or_card: str) -> list:
    """Class names of a classification model, from its card (:class:`leukcore.models.ModelCard`; ``[]`` when the
    card cannot be read).
    """
    if name_or_card not in _CARDS:
        try:
            from leukcore.models import ModelCard

            _CARDS[name_or_card] = ModelCard.load(name_or_card)
        except Exception:
            return []
    return list(_CARDS[name_or_card].classes)


class LeukWidget(WidgetActions, QWidget):
    """Find and classify white cells of the selected slide layer; review, edit, export.

    Attributes
    ----------
    analyze : callable or None
        Override of :func:`leukcore.pipeline.analyze_slide` (tests inject a fake).
    detector : str
        Detector model name or card path (default the shipped ``wbc-stardist``).
    """

    analyze = None
    #: detector name or card (tests use a tiny one)
    detector = "wbc-stardist"

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker = None
        self.cancel_token = None
        self.cells_layer = None
        self.last_result = None
        self._build()
        self._refresh_layers()
        ev = self.viewer.layers.events
        ev.inserted.connect(self._refresh_layers)
        ev.removed.connect(self._refresh_layers)
        self.viewer.mouse_move_callbacks.append(self._on_mouse_move)

    # ------------------------------------------------------------------ UI
    def _build(self):
        lay = QVBoxLayout(self)
        form = QFormLayout()
        self.image_combo = QComboBox()
        form.addRow("image", self.image_combo)
        self.model_combo = QComboBox()
        self.model_combo.addItems(model_names() + [_FILE])
        self.model_path = QLineEdit()
        self.model_path.setPlaceholderText("model card .yaml")
        self.model_path.setVisible(False)
        self.model_combo.currentTextChanged.connect(self._on_model_changed)
        form.addRow("model", self.model_combo)
        form.addRow("", self.model_path)
        self.region_combo = QComboBox()
        self.region_combo.addItems(REGIONS)
        self.shapes_combo = QComboBox()
        self.shapes_combo.setEnabled(False)
        self.region_combo.currentTextChanged.connect(lambda t: self.shapes_combo.setEnabled(t == "shapes layer"))
        form.addRow("region", self.region_combo)
        form.addRow("shapes", self.shapes_combo)
        self.device_combo = QComboBox()
        self._fill_devices()
        form.addRow("device", self.device_combo)
        lay.addLayout(form)

        row = QHBoxLayout()
        self.run_btn = QPushButton("Run")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.run_btn.clicked.connect(self.run)
        self.cancel_btn.clicked.connect(self.cancel)
        row.addWidget(self.run_btn)
        row.addWidget(self.cancel_btn)
        lay.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setFormat("idle")
        self.progress.setTextVisible(True)
        lay.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)

        self.counts = make_counts_table()
        self.counts.setMinimumHeight(150)
        lay.addWidget(self.counts)

        rev = QGroupBox("review")
        rl = QVBoxLayout(rev)
        self.cell_info = QLabel("hover or click a cell")
        self.cell_info.setWordWrap(True)
        rl.addWidget(self.cell_info)
        r1 = QHBoxLayout()
        self.class_combo = QComboBox()
        self.set_class_btn = QPushButton("Set class of selected")
        self.set_class_btn.clicked.connect(self.set_selected_class)
        r1.addWidget(self.class_combo)
        r1.addWidget(self.set_class_btn)
        rl.addLayout(r1)
        self.low_conf = QCheckBox("show only low-confidence cells")
        self.low_conf.toggled.connect(self.toggle_low_confidence)
        rl.addWidget(self.low_conf)
        self.gradcam_btn = QPushButton("Grad-CAM of selected cell")
        self.gradcam_btn.clicked.connect(self.gradcam_selected)
        rl.addWidget(self.gradcam_btn)
        self.gallery_btn = QPushButton("Cell gallery (review, sign off)")
        self.gallery_btn.clicked.connect(lambda: self.open_gallery())
        rl.addWidget(self.gallery_btn)
        lay.addWidget(rev)

        r2 = QHBoxLayout()
        self.export_btn = QPushButton("Export cells...")
        self.export_btn.clicked.connect(lambda: self.export_table())
        self.shot_btn = QPushButton("Screenshot...")
        self.shot_btn.clicked.connect(lambda: self.screenshot())
        r2.addWidget(self.export_btn)
        r2.addWidget(self.shot_btn)
        lay.addLayout(r2)
        lay.addStretch(1)
        self._set_result_controls(False)

    def _fill_devices(self):
        try:
            from leukcore.device import available_devices

            devs = available_devices()
        except Exception:  # torch missing / broken: CPU only
            devs = []
        best = next((d.name for d in devs if d.name.startswith("cuda")), "cpu")
        self.device_combo.addItem(f"auto ({best})", "auto")
        for d in devs:
            self.device_combo.addItem(d.label, d.name)
        if not any(d.name.startswith("cuda") for d in devs):
            self.device_combo.addItem("CUDA (not available)", None)
            item = self.device_combo.model().item(self.device_combo.count() - 1)
            if item is not None:
                item.setEnabled(False)

    def _on_model_changed(self, text):
        self.model_path.setVisible(text == _FILE)
        if text == _FILE and not self.model_path.text():
            path, _ = QFileDialog.getOpenFileName(self, "Model card", "", "Model card (*.yaml *.yml)")
            if path:
                self.model_path.setText(path)

    def _refresh_layers(self, *_):
        from napari.layers import Image, Shapes

        for combo, kind in ((self.image_combo, Image), (self.shapes_combo, Shapes)):
            cur = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            names = [
                ly.name
                for ly in self.viewer.layers
                if isinstance(ly, kind) and not ly.metadata.get("leuk_gradcam") and "leuk_kind" not in ly.metadata
            ]
            combo.addItems(names)
            if cur in names:
                combo.setCurrentText(cur)
            combo.blockSignals(False)
        if self.cells_layer is not None and self.cells_layer not in self.viewer.layers:
            self.cells_layer = None
            self._set_result_controls(False)
        if self.cells_layer is None:  # a results folder opened by the reader: review it here
            from ._gallery import cells_layers

            found = cells_layers(self.viewer)
            if found and self.worker is None:
                self.cells_layer = found[-1]
                self.cells_layer.mouse_drag_callbacks.append(self._on_click)
                self._attach_review()
                self.class_combo.clear()
                self.class_combo.addItems(self._classes())
                self._set_result_controls(True)
                self.gradcam_btn.setEnabled(hasattr(self, "_run_ctx"))
                self.update_counts()

    def _set_result_controls(self, on: bool):
        for w in (
            self.set_class_btn,
            self.class_combo,
            self.low_conf,
            self.gradcam_btn,
            self.export_btn,
            self.shot_btn,
            self.gallery_btn,
        ):
            w.setEnabled(on)

    # ------------------------------------------------------------ settings
    def image_layer(self):
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise ValueError("no image layer: open a slide first (File > Open, or the sample smear)")
        return self.viewer.layers[name]

    def model(self) -> str:
        t = self.model_combo.currentText()
        if t == _FILE:
            p = self.model_path.text().strip()
            if not p:
                raise ValueError("choose a model card file (.yaml)")
            return p
        return t

    def device(self) -> str:
        return self.device_combo.currentData() or "auto"

    def slide_source(self, layer):
        """Path (reader layers) or an in-memory Slide (any other RGB image layer), and the mpp override."""
        from leukcore.io import Slide

        md = layer.metadata or {}
        path = md.get("leuk_slide_path")
        mpp = md.get("mpp") if md.get("mpp_source") == "user" else None
        if path:
            return path, mpp
        if not layer.rgb:
            raise ValueError(f"layer {layer.name!r} is not an RGB image")
        data = layer.data[0] if layer.multiscale else layer.data
        s = float(layer.scale[-1])
        return Slide.from_array(data, mpp=None if s == 1.0 else s, path=layer.name), None

    def region(self, layer) -> tuple:
        """(region box or None, shapes mask info or None) for the chosen region mode."""
        shape = layer.data[0].shape[:2] if layer.multiscale else layer.data.shape[:2]
        mode = self.region_combo.currentText()
        if mode == "whole slide":
            return None, None
        if mode == "current view":
            scene = getattr(self.viewer, "scene", None)  # napari >= 0.9: viewer.scene.camera
            cam = scene.camera if scene is not None and hasattr(scene, "camera") else self.viewer.camera
            canvas = self.viewer.window._qt_viewer.canvas.size if hasattr(self.viewer, "window") else None
            hw = tuple(canvas) if canvas is not None else (1000, 1000)
            return view_region(cam.center[-2:], cam.zoom, hw, layer.scale, shape, layer.translate), None
        name = self.shapes_combo.currentText()
        if not name:
            raise RegionError("no shapes layer: add one and draw the region first")
        sh = self.viewer.layers[name]
        box = shapes_region(
            sh.data,
            layer.scale,
            shape,
            shapes_scale=sh.scale,
            shapes_translate=sh.translate,
            image_translate=layer.translate,
        )
        return box, sh

    # ------------------------------------------------------------------ run
    def run(self):
        if self.worker is not None:
            return
        from napari.utils.notifications import show_error

        from leukcore.progress import CancelToken
        from leukcore.settings import AnalysisSettings

        try:
            layer = self.image_layer()
            source, mpp = self.slide_source(layer)
            box, shapes = self.region(layer)
            model = self.model()
        except Exception as e:
            show_error(str(e))
            return
        analyze = self.analyze
        if analyze is None:
            from leukcore.pipeline import analyze_slide as analyze
        self._run_ctx = {"layer": layer, "shapes": shapes, "model": model, "device": self.device(), "source": source}
        self.cancel_token = CancelToken()
        self._live_labels = []  # labels of the cells classified so far in this run
        self.run_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.progress.setRange(0, 0)
        self.progress.setFormat("starting...")
        self.status.setText("loading models...")
        settings = AnalysisSettings(
            detector=self.detector, classifier=model, device=self.device(), region=box, mpp=mpp or None
        )
        self.worker = start_analysis(
            analyze,
            source,
            cancel=self.cancel_token,
            on_progress=self._on_progress,
            on_done=self._on_done,
            on_error=self._on_error,
            on_finished=self._on_finished,
            settings=settings,
        )

    def cancel(self):
        if self.cancel_token is not None:
            self.cancel_token.cancel()
            self.status.setText("cancelling: finishing the current batch...")
            self.cancel_btn.setEnabled(False)

    def _on_progress(self, ev):
        unit = "tiles" if ev.stage == "detect" else ("cells" if ev.stage == "classify" else "steps")
        if ev.total:
            self.progress.setRange(0, int(ev.total))
            self.progress.setValue(int(min(ev.done, ev.total)))
        else:
            self.progress.setRange(0, 0)
        self.progress.setFormat(f"{ev.stage}: {ev.done} / {ev.total} {unit}")
        self.status.setText(ev.message or f"{ev.cells} cells found so far")
        # the previous run's cells stay on screen until this run's arrive; the counts are this run's,
        # updated live from the labels each classified batch carries
        data = getattr(ev, "data", None) or {}
        live = getattr(self, "_live_labels", None)
        if live is None:
            live = self._live_labels = []
        if ev.stage == "classify" and data.get("labels"):
            live.extend(data["labels"])
        classes = data.get("classes") or model_classes(self._run_ctx["model"])
        self.counts.update_counts(live, classes, found_so_far=int(ev.cells))

    def _on_done(self, result):
        from napari.utils.notifications import show_info, show_warning

        ctx = self._run_ctx
        table = result.table
        shapes = ctx["shapes"]
        if shapes is not None and len(table):
            keep = cells_in_shapes(
                table.df[["centroid_y", "centroid_x"]].to_numpy(),
                shapes.data,
                ctx["layer"].scale,
                shapes_scale=shapes.scale,
                shapes_translate=shapes.translate,
                image_translate=ctx["layer"].translate,
                shape_types=shapes.shape_type,
            )
            table = type(table)(table.df[keep].reset_index(drop=True), table.meta)
        self.last_result = result
        where = {"whole slide": "the slide"}.get(self.region_combo.currentText(), "the region")
        if len(table) == 0:
            show_warning(
                f"No white cells found in {where}"
                + (" (cancelled before any tile finished)" if result.partial else "")
                + "."
            )
            self._show_table(table)
            return
        self._show_table(table)
        n = len(table)
        bp = self.counts.blast
        done = f"{n} white cells" + ("" if bp is None else f", {bp:.1f} % blasts")
        caveats = list((result.summary or {}).get("caveats") or [])
        self.status.setText(
            done + (" (cancelled: partial)" if result.partial else "") + (" - see the warnings" if caveats else "")
        )
        for c in caveats:  # an unreliable pixel size, a stain unlike training (leukcore.caveats)
            show_warning(f"Check: {c}.")
        if result.partial:
            show_warning(f"Cancelled: kept the {n} cells of the finished tiles.")
        else:
            show_info(done + ".")

    def _show_table(self, table):
        from napari.layers import Layer

        layer = self._run_ctx["layer"]
        if self.cells_layer is not None and self.cells_layer in self.viewer.layers:
            self.viewer.layers.remove(self.cells_layer)
            self.cells_layer = None
        if len(table):
            table.meta.setdefault(
                "path", self._run_ctx.get("source") if isinstance(self._run_ctx.get("source"), str) else None
            )
            data, kw, ltype = L.cells_layer_data(
                table, scale=tuple(layer.scale[-2:]), shape=layer.metadata.get("shape")
            )
            kw["translate"] = tuple(layer.translate[-2:])
            kw["units"] = tuple(str(u) for u in layer.units[-2:])  # same world units as the slide
            self.cells_layer = self.viewer.add_layer(Layer.create(data, kw, ltype))
            self.cells_layer.mouse_drag_callbacks.append(self._on_click)
            self._attach_review()
            self.viewer.layers.selection.active = self.cells_layer
        self.class_combo.clear()
        self.class_combo.addItems(self._classes())
        self.low_conf.setChecked(False)
        self._set_result_controls(len(table) > 0)
        self.update_counts()

    def _on_error(self, exc):
        from napari.utils.notifications import show_error

        show_error(friendly_error(exc))
        self.status.setText(f"failed: {exc}")

    def _on_finished(self):
        self.worker = None
        self.cancel_token = None
        self.run_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.progress.setFormat("done")

    # -------------------------------------------------------------- review
    def _classes(self) -> list:
        if self.cells_layer is not None:
            c = (self.cells_layer.metadata.get("leuk_meta") or {}).get("classes")
            if c:
                return list(c)
        t = self.model_combo.currentText()
        return model_classes(t) if t != _FILE else []

    def update_counts(self):
        f = self.cells_layer.features if self.cells_layer is not None else None
        labels = f["label"] if f is not None and "label" in f else []
        review = f["review"] if f is not None and "review" in f else None
        self.counts.update_counts(labels, self._classes(), review=review)
