"""Review by keyboard on a real (virtual-display) viewer: keys move selected cells, undo / redo, counts and
colours follow, corrections.parquet written beside the results and restored when the folder is reopened."""

import json

import numpy as np
import pytest

from leukcore.results import class_color

pytestmark = pytest.mark.napari


@pytest.fixture
def results_dir(tmp_path, table_factory):
    """A results folder (cells.parquet + summary.json) over a small OME-TIFF slide; 12 cells, ALL / normal
    alternating (cells 2 and 5 low-confidence)."""
    from leukcore.io import write_slide

    img = np.full((2000, 2000, 3), 220, np.uint8)
    img[::50] = 90
    slide_path = write_slide(tmp_path / "s.ome.tif", img, mpp=0.5, tile=256)
    tab = table_factory(12, conf=[2, 5])
    tab.meta["slide"] = "s.ome.tif"
    out = tmp_path / "results"
    tab.to_parquet(out / "cells.parquet")
    (out / "summary.json").write_text(
        json.dumps({"slide": {"path": str(slide_path), "name": "s.ome.tif"}, "mpp": {"value": 0.5}})
    )
    return out


def open_results(viewer, path):
    from napari.layers import Layer

    from napari_leuk._reader import read_results

    layers = [viewer.add_layer(Layer.create(d, kw, lt)) for d, kw, lt in read_results(str(path))]
    return layers[-1]


def _canvas(viewer):
    return viewer.window._qt_viewer.canvas.native


def _press(qtbot, viewer, key, mods=None):
    from qtpy.QtCore import Qt

    w = _canvas(viewer)
    w.setFocus()
    qtbot.keyClick(w, key, mods if mods is not None else Qt.NoModifier)


def test_keys_reclassify_undo_redo_and_save(make_napari_viewer, qtbot, results_dir, notes):
    from qtpy.QtCore import Qt

    from leukcore.corrections import read_corrections
    from napari_leuk._widget import LeukWidget

    viewer = make_napari_viewer(show=True)
    layer = open_results(viewer, results_dir)
    w = LeukWidget(viewer)
    viewer.window.add_dock_widget(w, name="leuk")
    assert w.cells_layer is layer  # the widget adopts the results' cells layer
    c0 = w.counts.as_dict()
    assert c0["ALL"] == 7 and c0["normal"] == 5  # cells 2 and 5 (low confidence) are argmax ALL
    viewer.layers.selection.active = layer
    layer.selected_data = {0, 4}  # two confident ALL cells
    _press(qtbot, viewer, Qt.Key_2)  # 2 = normal (classes ALL, normal)
    f = layer.features
    assert list(f.loc[[0, 4], "label"]) == ["normal", "normal"]
    assert list(f.loc[[0, 4], "model_label"]) == ["ALL", "ALL"]
    assert list(f.loc[[0, 4], "reviewer_label"]) == ["normal", "normal"]
    np.testing.assert_allclose(np.asarray(layer.edge_color)[0, :3], np.array(class_color("normal")) / 255)
    c = w.counts.as_dict()
    assert c["ALL"] == 5 and c["normal"] == 7
    df = read_corrections(results_dir)  # saved at once beside the results
    assert sorted(df["cell_id"]) == sorted(f.loc[[0, 4], "cell_id"]) and set(df["reviewer_label"]) == {"normal"}

    layer.selected_data = {1}
    _press(qtbot, viewer, Qt.Key_0)  # 0 = review (unidentified)
    assert bool(layer.features.loc[1, "review"]) and layer.features.loc[1, "reviewer_label"] == "review"
    assert len(read_corrections(results_dir)) == 3

    _press(qtbot, viewer, Qt.Key_Z, Qt.ControlModifier)  # undo the review key
    assert not bool(layer.features.loc[1, "review"]) and len(read_corrections(results_dir)) == 2
    _press(qtbot, viewer, Qt.Key_Z, Qt.ControlModifier)  # undo the class change
    assert list(layer.features.loc[[0, 4], "label"]) == ["ALL", "ALL"]
    np.testing.assert_allclose(np.asarray(layer.edge_color)[0, :3], np.array(class_color("ALL")) / 255)
    assert w.counts.as_dict()["ALL"] == 7 and len(read_corrections(results_dir)) == 0
    _press(qtbot, viewer, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)  # redo
    assert list(layer.features.loc[[0, 4], "label"]) == ["normal", "normal"]
    _press(qtbot, viewer, Qt.Key_Y, Qt.ControlModifier)  # redo (ctrl-y)
    assert layer.features.loc[1, "reviewer_label"] == "review"
    assert w.counts.as_dict()["ALL"] == 5 and len(read_corrections(results_dir)) == 3
    assert not notes["error"]


def test_reopen_restores_review(make_napari_viewer, qtbot, results_dir):
    from napari_leuk._review import review_for

    viewer = make_napari_viewer(show=True)
    layer = open_results(viewer, results_dir)
    rev = review_for(layer, reviewer="jdoe")
    rev.set([3], "ALL")  # a normal cell -> ALL
    rev.set([7, 9], "review")
    viewer.layers.clear()
    layer2 = open_results(viewer, results_dir)  # the reader applies corrections.parquet
    f = layer2.features
    assert f.loc[3, "label"] == "ALL" and f.loc[3, "model_label"] == "normal" and f.loc[3, "reviewer"] == "jdoe"
    assert bool(f.loc[7, "review"]) and bool(f.loc[9, "review"])
    np.testing.assert_allclose(np.asarray(layer2.edge_color)[3, :3], np.array(class_color("ALL")) / 255)
    rev2 = review_for(layer2)
    assert rev2 is not rev and rev2.error is None and len(rev2.corrections) == 3
    rev2.undo()  # a fresh history: nothing to undo
    assert len(rev2.corrections) == 3
    rev2.set([3], None)  # back to the model's call
    assert layer2.features.loc[3, "label"] == "normal"


def test_set_class_button_goes_through_corrections(viewer_widget, qtbot, notes, fake_analyze_cls):
    viewer, w = viewer_widget
    w.analyze = fake_analyze_cls(n_tiles=2, per_tile=2)
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=20000)
    layer = w.cells_layer
    layer.selected_data = {0}
    w.class_combo.setCurrentText("normal")
    w.set_class_btn.click()
    f = layer.features
    assert f.loc[0, "label"] == "normal" and f.loc[0, "model_label"] == "ALL" and bool(f.loc[0, "edited"])
    from napari_leuk._review import review_for

    rev = review_for(layer)
    assert rev.path is None and rev.corrections.can_undo  # a widget run: corrections in memory
    rev.undo()
    assert layer.features.loc[0, "label"] == "ALL" and w.counts.as_dict()["ALL"] == 2


def test_key_action_table():
    from napari_leuk._review import key_action

    cl = ["Benign", "Early", "Pre", "Pro"]
    assert key_action("1", cl) == ("set", "Benign") and key_action("4", cl) == ("set", "Pro")
    assert key_action("5", cl) is None and key_action("0", cl) == ("set", "review")
    assert key_action("R", cl) == ("set", "review") and key_action("Backspace", cl) == ("clear", None)
    assert key_action("Control-Z", cl) == ("undo", None) and key_action("Control-Y", cl) == ("redo", None)


def test_shift_click_adds_cells_to_the_selection(make_napari_viewer, qtbot, results_dir):
    from types import SimpleNamespace

    from napari_leuk._widget import LeukWidget

    viewer = make_napari_viewer(show=True)
    layer = open_results(viewer, results_dir)
    w = LeukWidget(viewer)
    layer.mode = "pan_zoom"
    f = layer.features

    def at(r):
        return tuple(layer.data_to_world((f.loc[r, "centroid_y"], f.loc[r, "centroid_x"])))

    w._on_click(layer, SimpleNamespace(position=at(2), modifiers=()))
    w._on_click(layer, SimpleNamespace(position=at(6), modifiers=("Shift",)))
    w._on_click(layer, SimpleNamespace(position=at(8), modifiers=("Control",)))
    assert w.selected_rows() == [2, 6, 8]
    w._on_click(layer, SimpleNamespace(position=at(6), modifiers=("Shift",)))  # toggles off
    assert w.selected_rows() == [2, 8]
    w._on_click(layer, SimpleNamespace(position=at(4), modifiers=()))
    assert w.selected_rows() == [4]


def test_stale_corrections_are_refused_not_applied(make_napari_viewer, qtbot, results_dir, notes):
    import pandas as pd

    from leukcore.corrections import read_corrections
    from napari_leuk._review import review_for

    viewer = make_napari_viewer(show=True)
    layer = open_results(viewer, results_dir)
    review_for(layer).set([0], "normal")
    df = read_corrections(results_dir)
    df.loc[0, "centroid_y"] += 50.0  # the cell is not where it was: another run's file
    from leukcore.corrections import write_corrections

    write_corrections(pd.DataFrame(df), results_dir)
    viewer.layers.clear()
    layer2 = open_results(viewer, results_dir)
    assert layer2.features.loc[0, "label"] == "ALL"  # the model's call, with a warning
    assert any("not where they were" in m for m in notes["warning"])
    rev = review_for(layer2)
    assert rev.error and rev.path is None  # reviewed in memory; the file is left alone
    rev.set([1], "ALL")
    assert len(read_corrections(results_dir)) == 1
