"""Make docs/images/napari-leuk-gradcam.png: Grad-CAM of one cell after a real run on the sample smear.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/images/make_napari_gradcam_screenshot.py

Runs all-4class on the sample smear, selects cell row 116 (cell 117), presses
"Grad-CAM of selected cell" and zooms onto it.
"""

import time

from qtpy.QtWidgets import QApplication

import napari
from napari_leuk._layers import describe_cell
from napari_leuk._widget import LeukWidget

v = napari.Viewer(show=True)
v.window._qt_window.resize(1600, 1000)
v.open_sample("leukcore", "sample-smear")
w = LeukWidget(v)
v.window.add_dock_widget(w, name="Leukemia cell finder", area="right")
w.model_combo.setCurrentText("all-4class")


def wait(cond, t=600):
    t0 = time.time()
    while not cond():
        QApplication.processEvents()
        time.sleep(0.05)
        if time.time() - t0 > t:
            raise SystemExit("timeout")


w.run()
wait(lambda: w.worker is None)
L = w.cells_layer
f = L.features
i = 116
L.selected_data = {i}
w.cell_info.setText(describe_cell(f, i))
n = len(v.layers)
t0 = time.time()
w.gradcam_btn.click()
wait(lambda: len(v.layers) == n + 1)
print("gradcam s", time.time() - t0, v.layers[-1].name, v.layers[-1].translate, v.layers[-1].scale)
cam = v.scene.camera
s = L.scale[-1]
cam.center = (float(f["centroid_y"][i]) * s, float(f["centroid_x"][i]) * s)
cam.zoom = 12
for _ in range(20):
    QApplication.processEvents()
    time.sleep(0.05)
from PIL import Image

Image.fromarray(v.screenshot(canvas_only=False, flash=False)).save("docs/images/napari-leuk-gradcam.png")
v.close()
