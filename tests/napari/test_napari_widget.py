"""The dock widget on a real (virtual-display) viewer: run, progress, cancel, errors, edits, exports."""

import numpy as np
import pytest

from leukcore.results import class_color

pytestmark = pytest.mark.napari


def _run(w, qtbot, timeout=20000):
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=timeout)


def test_run_adds_coloured_cells_layer_and_counts(viewer_widget, qtbot, notes, fake_analyze_cls):
    viewer, w = viewer_widget
    fake = fake_analyze_cls(n_tiles=4, per_tile=3, delay=0.05)
    w.analyze = fake
    seen = []
    orig = w._on_progress
    w._on_progress = lambda ev: (seen.append((ev.done, ev.total, ev.cells)), orig(ev))
    _run(w, qtbot)
    assert fake.calls[0]["classifier"] == "all-binary" and fake.calls[0]["region"] is None
    assert seen and seen[-1] == (4, 4, 12)  # tiles done / total, cells found so far
    layer = w.cells_layer
    assert layer is not None and layer in viewer.layers and layer.name == "cells"
    assert len(layer.features) == 12
    np.testing.assert_allclose(np.asarray(layer.edge_color)[0, :3], np.array(class_color("ALL")) / 255)
    np.testing.assert_allclose(np.asarray(layer.edge_color)[1, :3], np.array(class_color("normal")) / 255)
    assert tuple(layer.scale) == tuple(viewer.layers["slide"].scale)
    c = w.counts.as_dict()
    assert c["ALL"] == 6 and c["normal"] == 6 and c["total"] == 12 and c["blast_percent"] == 50.0
    assert not notes["error"] and any("12 white cells" in m for m in notes["info"])
    assert w.run_btn.isEnabled() and not w.cancel_btn.isEnabled()


def test_edit_class_updates_colour_and_counts(viewer_widget, qtbot, notes, fake_analyze_cls):
    viewer, w = viewer_widget
    w.analyze = fake_analyze_cls(n_tiles=2, per_tile=2)
    _run(w, qtbot)
    layer = w.cells_layer
    assert w.counts.as_dict()["ALL"] == 2
    layer.selected_data = {0}  # an ALL cell
    w.class_combo.setCurrentText("normal")
    w.set_class_btn.click()
    assert layer.features.loc[0, "label"] == "normal"
    np.testing.assert_allclose(np.asarray(layer.edge_color)[0, :3], np.array(class_color("normal")) / 255)
    c = w.counts.as_dict()
    assert c["ALL"] == 1 and c["normal"] == 3 and c["blast_percent"] == 25.0


def test_cancel_mid_run_keeps_finished_tiles(viewer_widget, qtbot, notes, fake_analyze_cls):
    viewer, w = viewer_widget
    w.analyze = fake_analyze_cls(n_tiles=200, per_tile=2, delay=0.02)
    w.run()
    qtbot.waitUntil(lambda: w.progress.maximum() == 200 and w.progress.value() >= 3, timeout=10000)
    assert w.cancel_btn.isEnabled()
    w.cancel_btn.click()
    qtbot.waitUntil(lambda: w.worker is None, timeout=10000)
    n = len(w.cells_layer.features)
    assert 6 <= n < 400
    assert any("Cancelled" in m and str(n) in m for m in notes["warning"])


def test_errors_become_notifications(viewer_widget, qtbot, notes, fake_analyze_cls):
    from leukcore.io import CorruptSlideError

    viewer, w = viewer_widget
    w.analyze = fake_analyze_cls(error=CorruptSlideError("/x/broken.svs", "truncated tile 3"))
    _run(w, qtbot)
    assert any("Cannot read the slide" in m and "broken.svs" in m for m in notes["error"])
    assert w.cells_layer is None and w.run_btn.isEnabled()
    w.analyze = fake_analyze_cls(error=MemoryError())
    _run(w, qtbot)
    assert any("Out of memory" in m for m in notes["error"])


def test_no_cells_warns(viewer_widget, qtbot, notes, fake_analyze_cls):
    viewer, w = viewer_widget
    w.analyze = fake_analyze_cls(n_tiles=3, per_tile=0)
    _run(w, qtbot)
    assert any("No white cells found" in m for m in notes["warning"])
    assert w.cells_layer is None and not w.export_btn.isEnabled()


def test_unreadable_slide_layer_path_notifies(viewer_widget, qtbot, notes, tmp_path):
    viewer, w = viewer_widget
    bad = tmp_path / "broken.ome.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 20)
    viewer.layers["slide"].metadata["leuk_slide_path"] = str(bad)
    _run(w, qtbot, timeout=60000)  # the real pipeline opens the file and fails
    assert any("broken.ome.tif" in m for m in notes["error"])


def test_regions_current_view_and_shapes(viewer_widget, qtbot, notes, fake_analyze_cls):
    viewer, w = viewer_widget
    fake = fake_analyze_cls(n_tiles=1, per_tile=12)
    w.analyze = fake
    cam = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    cam.center = (250.0, 250.0)  # world = microns (mpp 0.5)
    cam.zoom = 4.0
    w.region_combo.setCurrentText("current view")
    _run(w, qtbot)
    y0, x0, y1, x1 = fake.calls[-1]["region"]
    assert y0 < 500 < y1 and x0 < 500 < x1 and (y1 - y0) < 2000
    # a drawn triangle: region = its bounding box, cells = those inside it
    tri = np.array([[0.0, 0.0], [0.0, 1000.0], [1000.0, 0.0]])
    viewer.add_shapes([tri], shape_type="polygon", name="roi")
    w.region_combo.setCurrentText("shapes layer")
    w.shapes_combo.setCurrentText("roi")
    _run(w, qtbot)
    assert fake.calls[-1]["region"] == (0, 0, 2000, 2000)
    f = w.cells_layer.features
    assert 0 < len(f) < 12
    assert ((f.centroid_y + f.centroid_x) * 0.5 <= 1000).all()


def test_low_confidence_toggle_and_exports(viewer_widget, qtbot, notes, fake_analyze_cls, tmp_path):
    from leukcore.results import CellTable

    viewer, w = viewer_widget
    w.analyze = fake_analyze_cls(n_tiles=2, per_tile=3)
    _run(w, qtbot)
    layer = w.cells_layer
    layer.features.loc[[1, 4], "review"] = True
    w.low_conf.setChecked(True)
    alpha = np.asarray(layer.edge_color)[:, 3]
    assert (alpha[[1, 4]] > 0).all() and (alpha[[0, 2, 3, 5]] == 0).all()
    w.low_conf.setChecked(False)
    assert (np.asarray(layer.edge_color)[:, 3] > 0).all()
    layer.selected_data = {2}
    w.set_selected_class(new_class="ALL")
    p = w.export_table(str(tmp_path / "cells.parquet"))
    back = CellTable.read_parquet(p)
    assert len(back) == 6 and back.df.loc[2, "label"] == "ALL" and bool(back.df.loc[2, "edited"])
    assert w.export_table(str(tmp_path / "cells.geojson")).exists()
    assert w.export_table(str(tmp_path / "cells.csv")).exists()
    shot = w.screenshot(str(tmp_path / "shot.png"))
    from PIL import Image

    img = np.asarray(Image.open(shot))
    assert img.std() > 5  # not a blank / black picture
    cols = {tuple(c) for c in img[:200, :400, :3].reshape(-1, 3)}
    assert class_color("ALL") in cols  # the legend swatch


def test_device_choice_lists_available_devices(viewer_widget):
    from leukcore.device import available_devices

    _, w = viewer_widget
    names = [w.device_combo.itemData(i) for i in range(w.device_combo.count())]
    assert names[0] == "auto"
    assert all(d.name in names for d in available_devices())
    assert w.device() == "auto"


def test_hover_and_click_show_class_probabilities_confidence(viewer_widget, qtbot, notes, fake_analyze_cls):
    from types import SimpleNamespace

    viewer, w = viewer_widget
    w.analyze = fake_analyze_cls(n_tiles=1, per_tile=4)
    _run(w, qtbot)
    layer = w.cells_layer
    r = layer.features.iloc[2]
    pos = (r.centroid_y * 0.5, r.centroid_x * 0.5)  # world = um
    viewer.cursor.position = pos
    w._on_mouse_move(viewer, None)
    text = w.cell_info.text()
    assert f"cell {int(r.cell_id)}: {r.label}" in text and "confidence 0.95" in text and "p(normal)=" in text
    viewer.cursor.position = (1.0, 1.0)  # background: the last text stays
    w._on_mouse_move(viewer, None)
    assert w.cell_info.text() == text
    layer.mode = "pan_zoom"
    layer.selected_data = set()
    w._on_click(layer, SimpleNamespace(position=pos))
    assert w.selected_rows() == [2]


def test_a_runs_caveats_become_warnings(viewer_widget, qtbot, notes, fake_analyze_cls):
    """An unreliable pixel size or a stain unlike training is said in napari, not only in summary.json."""
    from leukcore.caveats import run_caveats

    viewer, w = viewer_widget
    caveats = run_caveats(
        {"value": 0.31, "source": "estimated", "reliable": False, "reason": "rulers disagree"},
        {"applied": True, "distance": 2.6, "unlike_training": True},
    )
    w.analyze = fake_analyze_cls(n_tiles=2, per_tile=2, caveats=caveats)
    _run(w, qtbot)
    assert any("pixel size uncertain: rulers disagree" in m for m in notes["warning"])
    assert any("stain unlike the detector's training slides (2.6" in m for m in notes["warning"])
    assert "see the warnings" in w.status.text()
    w.analyze = fake_analyze_cls(n_tiles=2, per_tile=2)
    notes["warning"].clear()
    _run(w, qtbot)
    assert not notes["warning"] and "see the warnings" not in w.status.text()
