"""The npe2 manifest, the sample smear, and a full run of the real pipeline on it."""

import numpy as np
import pytest

from leukcore.results import class_color

pytestmark = pytest.mark.napari


def _shipped_classifier():
    """``all-binary`` or else ``all-4class`` when shipped with ``wbc-stardist``; None otherwise."""
    try:
        from leukcore.models import list_models

        names = set(list_models())
    except Exception:
        return None
    if "wbc-stardist" not in names:
        return None
    return next((m for m in ("all-binary", "all-4class") if m in names), None)


def test_manifest_contributions_are_discovered():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    mf = pm.get_manifest("leukcore")
    cmds = {c.id for c in mf.contributions.commands}
    assert {"leukcore.get_reader", "leukcore.sample_slide", "leukcore.analysis_widget"} <= cmds
    pats = set(mf.contributions.readers[0].filename_patterns)
    assert {"*.ome.tif", "*.svs", "*.ndpi", "*.ome.zarr", "*.png", "*.parquet", "*.geojson"} <= pats
    assert mf.contributions.sample_data[0].key == "sample-smear"


def test_sample_smear_opens_as_multiscale_with_mpp(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("leukcore", "sample-smear")
    img = layers[0]
    assert img.multiscale and img.rgb and len(img.data) >= 2
    assert tuple(img.scale) == (0.25, 0.25)
    assert img.metadata["leuk_slide_path"].endswith(".ome.tif")


def test_widget_contribution_docks(make_napari_viewer):
    viewer = make_napari_viewer()
    dw, widget = viewer.window.add_plugin_dock_widget("leukcore", "Leukemia cell finder")
    from napari_leuk._widget import LeukWidget

    assert isinstance(widget, LeukWidget)


@pytest.mark.slow
def test_full_run_on_sample_slide(make_napari_viewer, qtbot, notes):
    model = _shipped_classifier()
    if model is None:
        pytest.skip("shipped models (wbc-stardist + all-binary or all-4class) not available yet")
    from napari_leuk._widget import LeukWidget, model_classes

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("leukcore", "sample-smear")
    w = LeukWidget(viewer)
    viewer.window.add_dock_widget(w, name="leuk")
    w.device_combo.setCurrentIndex(0)
    w.model_combo.setCurrentText(model)
    live = []  # class counts shown after each progress event, i.e. while the run is going
    on_progress = w._on_progress

    def spy(ev):
        on_progress(ev)
        live.append(dict(w.counts.as_dict()))

    w._on_progress = spy
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=300_000)
    assert not notes["error"], notes["error"]
    layer = w.cells_layer
    assert layer is not None and len(layer.features) >= 10  # 32 real fields, most with a white cell
    f = layer.features
    classes = model_classes(model)
    assert set(f["label"]) <= set(classes)
    edge = np.asarray(layer.edge_color if layer.metadata["leuk_kind"] == "shapes" else layer.border_color)
    for i in range(len(f)):
        np.testing.assert_allclose(edge[i, :3], np.array(class_color(f["label"][i])) / 255, atol=1e-6)
    c = w.counts.as_dict()
    assert c["total"] == len(f)
    assert all(c[k] == int((f["label"] == k).sum()) for k in classes)
    assert sum(c[k] for k in classes) == len(f)
    assert w.progress.format() == "done"
    # counts updated as classified batches arrived, before the layer existed
    seen = [sum(d.get(k, 0) for k in classes) for d in live]
    assert any(0 < n for n in seen), "class counts never updated during the run"


@pytest.fixture
def tiny_models(tmp_path):
    """An untrained tiny detector that can find nothing (probability threshold above 1) and a tiny classifier."""
    import torch

    from leukcore.classify import CropSpec
    from leukcore.classify.network import build_network as build_clf
    from leukcore.detect.net import build_network as build_det
    from leukcore.models.registry import save_model

    torch.manual_seed(0)
    arch = {"n_rays": 8, "channels": [8, 16], "head_channels": 8}
    det_card = {
        "name": "tiny-det",
        "version": 1,
        "task": "detection",
        "architecture": arch,
        "input": {"mpp": 0.5},
        "thresholds": {"prob": 1.01, "nms": 0.4},
    }
    det = save_model(build_det(arch).state_dict(), det_card, tmp_path / "det", "tiny-det")
    clf_card = {
        "name": "tiny",
        "task": "classification",
        "version": 1,
        "architecture": {"name": "tf_efficientnet_lite0", "num_classes": 2},
        "input": CropSpec(size=32, crop_um=16.0, mode="rgb").to_card(),
        "classes": ["ALL", "normal"],
    }
    clf = save_model(build_clf("tf_efficientnet_lite0", 2).state_dict(), clf_card, tmp_path / "clf", "tiny")
    return str(det), str(clf)


@pytest.mark.slow
def test_real_pipeline_progress_and_no_cells_warning(make_napari_viewer, qtbot, notes, tiny_models):
    """The widget drives the real analyze_slide: tile progress reaches the bar; nothing found -> a warning."""
    from napari_leuk._widget import LeukWidget

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("leukcore", "sample-smear")
    w = LeukWidget(viewer)
    viewer.window.add_dock_widget(w, name="leuk")
    w.detector = tiny_models[0]
    w.model_path.setText(tiny_models[1])
    w.model_combo.setCurrentText("model file...")
    events = []
    orig = w._on_progress
    w._on_progress = lambda ev: (events.append(ev), orig(ev))
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=300_000)
    assert not notes["error"], notes["error"]
    det = [e for e in events if e.stage == "detect"]
    assert det and det[-1].done == det[-1].total > 0
    assert any("No white cells found" in m for m in notes["warning"])
    assert w.cells_layer is None and w.progress.format() == "done"
