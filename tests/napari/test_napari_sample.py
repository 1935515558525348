"""The npe2 manifest, the sample smear, and a full run of the real pipeline on it."""
import numpy as np
import pytest

from leukcore.results import class_color

pytestmark = pytest.mark.napari


def _models_shipped():
    try:
        from leukcore.models import list_models

        return {"wbc-stardist", "all-binary"} <= set(list_models())
    except Exception:
        return False


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
    if not _models_shipped():
        pytest.skip("shipped models (wbc-stardist, all-binary) not available yet")
    from napari_leuk._widget import LeukWidget

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("leukcore", "sample-smear")
    w = LeukWidget(viewer)
    viewer.window.add_dock_widget(w, name="leuk")
    w.device_combo.setCurrentIndex(0)
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=300_000)
    assert not notes["error"], notes["error"]
    layer = w.cells_layer
    assert layer is not None and len(layer.features) >= 10   # 32 real fields, most with a white cell
    f = layer.features
    assert set(f["label"]) <= {"ALL", "normal"}
    edge = np.asarray(layer.edge_color if layer.metadata["leuk_kind"] == "shapes" else layer.border_color)
    for i in range(len(f)):
        np.testing.assert_allclose(edge[i, :3], np.array(class_color(f["label"][i])) / 255, atol=1e-6)
    c = w.counts.as_dict()
    assert c["total"] == len(f)
    assert c["ALL"] == int((f["label"] == "ALL").sum()) and c["normal"] == int((f["label"] == "normal").sum())
    assert w.progress.format() == "done"
