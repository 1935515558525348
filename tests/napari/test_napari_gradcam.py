"""Grad-CAM of the selected cell: heat map placed over the cell's crop (tiny untrained model)."""

import numpy as np
import pytest

pytestmark = pytest.mark.napari


def test_gradcam_layer_is_placed_over_the_crop():
    from napari_leuk._gradcam import gradcam_layer_data

    heat = np.zeros((32, 32), np.float32)
    data, kw, lt = gradcam_layer_data(
        heat, (400.0, 600.0), crop_um=16.0, mpp=0.5, layer_scale=(0.5, 0.5), layer_translate=(10.0, 0.0)
    )
    assert lt == "image" and kw["contrast_limits"] == [0.0, 1.0]
    # crop = 32 level-0 px around the centroid -> world (um) top-left = (384*0.5 + 10, 584*0.5)
    np.testing.assert_allclose(kw["translate"], (202.0, 292.0))
    np.testing.assert_allclose(kw["scale"], (0.5, 0.5))  # 32 px of 0.5 um over 32 heat pixels


@pytest.fixture
def tiny_card(tmp_path):
    import torch

    from leukcore.classify import CropSpec
    from leukcore.classify.network import build_network
    from leukcore.models.registry import save_model

    torch.manual_seed(0)
    arch = "tf_efficientnet_lite0"
    net = build_network(arch, 2)
    spec = CropSpec(size=32, crop_um=16.0, mode="rgb")
    card = {
        "name": "tiny",
        "task": "classification",
        "version": 1,
        "architecture": {"name": arch, "num_classes": 2},
        "input": spec.to_card(),
        "classes": ["ALL", "normal"],
    }
    return save_model(net.state_dict(), card, tmp_path / "m", "tiny")


@pytest.mark.slow
def test_gradcam_button_adds_heat_map_layer(viewer_widget, qtbot, notes, fake_analyze_cls, tiny_card):
    viewer, w = viewer_widget
    w.model_path.setText(str(tiny_card))
    w.model_combo.setCurrentText("model file...")
    fake = fake_analyze_cls(n_tiles=1, per_tile=3)
    w.analyze = fake
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=20000)
    assert fake.calls[-1]["classifier"] == str(tiny_card)
    layer = w.cells_layer
    layer.selected_data = {1}
    n = len(viewer.layers)
    w.gradcam_btn.click()
    qtbot.waitUntil(lambda: len(viewer.layers) == n + 1, timeout=60000)
    assert not notes["error"], notes["error"]
    cam = viewer.layers[-1]
    assert cam.name.startswith("Grad-CAM cell 2") and cam.data.shape == (32, 32)
    assert 0.0 <= cam.data.min() and cam.data.max() <= 1.0
    r = layer.features.iloc[1]
    centre = np.asarray(cam.translate) + np.asarray(cam.scale) * 16
    np.testing.assert_allclose(centre, (r.centroid_y * 0.5, r.centroid_x * 0.5), atol=1e-3)
    assert "Grad-CAM" not in w.image_combo.currentText()
