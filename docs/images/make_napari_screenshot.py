"""Make docs/images/napari-leuk.png: the plugin on the sample smear after a real run.

Needs a display (real or virtual)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/images/make_napari_screenshot.py

Opens the bundled sample smear, docks the widget, runs the shipped models
(``--model``, default all-binary) on the whole slide, selects one cell so its
class / probabilities show, and saves a screenshot of the whole window.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-binary", choices=["all-binary", "all-4class"])
    ap.add_argument("--out", default=str(Path(__file__).with_name("napari-leuk.png")))
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_leuk._widget import LeukWidget

    viewer = napari.Viewer(show=True, title="napari-leuk: sample smear")
    viewer.window._qt_window.resize(1600, 1000)
    viewer.open_sample("leukcore", "sample-smear")
    w = LeukWidget(viewer)
    viewer.window.add_dock_widget(w, name="Leukemia cell finder", area="right")
    w.model_combo.setCurrentText(args.model)
    w.run()
    t0 = time.time()
    while w.worker is not None:
        QApplication.processEvents()
        time.sleep(0.05)
        if time.time() - t0 > args.timeout:
            raise SystemExit("timed out waiting for the analysis")
    print(f"run took {time.time() - t0:.1f} s; counts: {w.counts.as_dict()}")
    layer = w.cells_layer
    if layer is None:
        raise SystemExit("no cells found: nothing to show")
    f = layer.features
    i = int(f["confidence"].idxmax()) if "confidence" in f else 0
    layer.selected_data = {i}
    from napari_leuk._layers import describe_cell

    w.cell_info.setText(describe_cell(f, i))
    viewer.layers.selection.active = layer
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    img = viewer.screenshot(canvas_only=False, flash=False)
    from PIL import Image

    Image.fromarray(img).save(args.out)
    print(f"wrote {args.out} {img.shape}")
    viewer.close()


if __name__ == "__main__":
    main()
