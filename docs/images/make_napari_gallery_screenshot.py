"""Make docs/images/napari-gallery.png: the cell gallery on the sample smear's results during a review.

Needs a display (real or virtual)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/images/make_napari_gallery_screenshot.py \
        [--results DIR]

Without ``--results`` the sample slide is analysed with the shipped models (wbc-stardist + all-binary, about a
minute on two CPU cores).  The results are copied to a temporary folder and opened through the plugin's reader;
the widget and the gallery are docked, the three least sure cells of the ``review`` tab are called (a
demonstration, not a diagnosis: the first kept as the model called it, the next two moved to the other class),
a 100-cell random differential is counted, the ``review`` tab is shown and its first thumbnail clicked (the
viewer centres on it), and the whole window is saved.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=None, help="results of the sample slide (default: analyse it now)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("napari-gallery.png")))
    ap.add_argument("--zoom", type=float, default=3.0)
    args = ap.parse_args(argv)

    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    import napari
    from napari_leuk._gallery import GalleryWidget
    from napari_leuk._widget import LeukWidget

    with tempfile.TemporaryDirectory(prefix="leuk-gallery-shot-") as tmp:
        res = Path(tmp) / "leukcore-sample"
        if args.results:
            shutil.copytree(args.results, res)
        else:
            from leukcore.pipeline import analyze_slide
            from leukcore.sample import sample_slide_path

            analyze_slide(sample_slide_path(), "wbc-stardist", "all-binary", device="cpu", out_dir=res)
        for f in ("corrections.parquet", "signoff.json", "differential.json", "report.html"):
            (res / f).unlink(missing_ok=True)
        viewer = napari.Viewer(show=True, title="napari-leuk: reviewing the sample smear")
        viewer.window._qt_window.resize(1600, 1000)
        viewer.open(str(res), plugin="leukcore")
        w = LeukWidget(viewer)
        viewer.window.add_dock_widget(w, name="Leukemia cell finder", area="left")
        g = GalleryWidget(viewer, layer=w.cells_layer)
        g.reviewer.setText("demo reviewer")
        dock = viewer.window.add_dock_widget(g, name="cell gallery", area="right")
        viewer.window._qt_window.resizeDocks([dock], [640], Qt.Horizontal)
        rev = g.review
        unsure = [int(r) for r in g.groups["review"][:3]]
        labels = rev.layer.features["label"].to_numpy()
        other = dict(zip(rev.classes, reversed(rev.classes), strict=False))
        for k, r in enumerate(unsure):
            rev.set([r], labels[r] if k == 0 else other[labels[r]])
        g.count_differential(n=100, order="random")
        g.select_tab("review")
        QApplication.processEvents()
        item = g.list.item(0)
        g.list.setCurrentItem(item)
        g.list.itemClicked.emit(item)
        scene = getattr(viewer, "scene", None)
        cam = scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera
        cam.zoom = cam.zoom * args.zoom if cam.zoom else args.zoom
        for _ in range(20):
            QApplication.processEvents()
        g.list.setFocus(Qt.OtherFocusReason)
        viewer.screenshot(args.out, canvas_only=False)
        print("wrote", args.out)
        viewer.close()


if __name__ == "__main__":
    main()
