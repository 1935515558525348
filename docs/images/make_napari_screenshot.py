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
    ap.add_argument("--zoom", type=float, default=2.5, help="zoom in on the selected cell (1 = whole slide)")
    ap.add_argument(
        "--cell",
        type=int,
        default=None,
        help="row of the cell to select (default: a confident cell near the middle of the densest field)",
    )
    args = ap.parse_args(argv)

    from qtpy.QtWidgets import QApplication

    import napari
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
    if args.cell is not None:
        i = args.cell
    else:  # the confident cell with the most neighbours within 60 um
        import numpy as np

        yx = f[["centroid_y_um", "centroid_x_um"]].to_numpy()
        near = (np.hypot(*(yx[:, None, :] - yx[None, :, :]).transpose(2, 0, 1)) < 60).sum(1)
        score = near + (f["confidence"].to_numpy() if "confidence" in f else 0)
        i = int(np.argmax(score))
    layer.selected_data = {i}
    from napari_leuk._layers import describe_cell

    w.cell_info.setText(describe_cell(f, i))
    viewer.layers.selection.active = layer
    viewer.reset_view()
    if args.zoom > 1:  # centre on the selected cell, closer in, so the outlines show
        scene = getattr(viewer, "scene", None)
        cam = scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera
        s = layer.scale[-1]
        cam.center = (float(f["centroid_y"][i]) * s, float(f["centroid_x"][i]) * s)
        cam.zoom = cam.zoom * args.zoom
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
