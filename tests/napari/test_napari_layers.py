"""CellTable -> napari layer data: colours per class, features, edits, review filter, labels raster."""

import numpy as np
import pytest

from leukcore.results import class_color

pytestmark = pytest.mark.napari


def _layer(table, kind):
    from napari.layers import Layer

    from napari_leuk._layers import cells_layer_data

    data, kw, lt = cells_layer_data(table, kind)
    return Layer.create(data, kw, lt)


@pytest.mark.parametrize("kind", ["shapes", "points", "labels"])
def test_layer_colours_and_features_follow_classes(table_factory, kind):
    tab = table_factory(10)
    layer = _layer(tab, kind)
    assert list(layer.features["cell_id"]) == list(tab.df["cell_id"])
    assert list(layer.features["label"]) == list(tab.df["label"])
    assert "polygon" not in layer.features.columns
    assert tuple(layer.scale) == (0.5, 0.5)
    want = np.array([np.array(class_color(c)) / 255 for c in tab.df["label"]])
    if kind == "shapes":
        got = np.asarray(layer.edge_color)[:, :3]
    elif kind == "points":
        got = np.asarray(layer.border_color)[:, :3]
    else:
        got = np.array([layer.colormap.color_dict[int(i)][:3] for i in tab.df["cell_id"]])
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("kind", ["shapes", "points", "labels"])
def test_set_cell_class_updates_features_and_colour(table_factory, kind):
    from napari_leuk._layers import set_cell_class, table_from_layer

    tab = table_factory(6)
    layer = _layer(tab, kind)
    assert layer.features.loc[0, "label"] == "ALL"
    set_cell_class(layer, [0], "normal")
    assert layer.features.loc[0, "label"] == "normal"
    assert bool(layer.features.loc[0, "edited"]) and not bool(layer.features.loc[1, "edited"])
    want = np.array(class_color("normal")) / 255
    if kind == "shapes":
        np.testing.assert_allclose(np.asarray(layer.edge_color)[0, :3], want, atol=1e-6)
    elif kind == "points":
        np.testing.assert_allclose(np.asarray(layer.border_color)[0, :3], want, atol=1e-6)
    else:
        np.testing.assert_allclose(layer.colormap.color_dict[int(tab.df.cell_id[0])][:3], want, atol=1e-6)
    t2 = table_from_layer(layer)
    assert t2.df.loc[0, "label"] == "normal" and len(t2.df.loc[0, "polygon"]) == 16
    with pytest.raises(IndexError):
        set_cell_class(layer, [99], "ALL")


def test_low_confidence_filter_hides_confident_cells(table_factory):
    from napari_leuk._layers import show_only_low_confidence

    tab = table_factory(8, conf=[1, 5])
    pts = _layer(tab, "points")
    assert show_only_low_confidence(pts, True) == 2
    assert list(np.nonzero(pts.shown)[0]) == [1, 5]
    assert show_only_low_confidence(pts, False) == 8 and pts.shown.all()
    sh = _layer(tab, "shapes")
    show_only_low_confidence(sh, True)
    alpha = np.asarray(sh.edge_color)[:, 3]
    assert (alpha[[1, 5]] == 1).all() and (np.delete(alpha, [1, 5]) == 0).all()


def test_choose_kind_switches_to_points_for_many_cells():
    from napari_leuk._layers import SHAPES_LIMIT, choose_kind

    assert choose_kind(10) == "shapes"
    assert choose_kind(SHAPES_LIMIT + 1) == "points"
    assert choose_kind(10, "labels") == "labels"
    with pytest.raises(ValueError, match="unknown cells layer kind"):
        choose_kind(10, "voxels")


def test_labels_raster_is_lazy_and_puts_ids_at_centroids(table_factory):
    from napari_leuk._layers import rasterize_labels

    tab = table_factory(5, size=3000)
    levels = rasterize_labels(tab, (3000, 3000), chunk=1024, min_size=1024)
    assert [lv.shape for lv in levels] == [(3000, 3000), (1500, 1500), (750, 750)]
    for _, r in tab.df.iterrows():
        y, x = int(r.centroid_y), int(r.centroid_x)
        assert int(levels[0][y, x].compute()) == r.cell_id
        assert int(levels[1][y // 2, x // 2].compute()) == r.cell_id
    assert int(levels[0][0, 0].compute()) == 0


def test_describe_cell_names_class_probs_confidence(table_factory):
    from napari_leuk._layers import describe_cell, features_frame

    f = features_frame(table_factory(4, conf=[2]))
    s = describe_cell(f, 2)
    assert "cell 3" in s and "confidence 0.50" in s and "p(ALL)=0.50" in s and "LOW CONFIDENCE" in s


def test_unclassified_table_gets_unclassified_colour(table_factory):
    from leukcore.results import CellTable
    from napari_leuk._layers import class_rgba, features_frame

    tab = table_factory(3)
    det_only = CellTable(
        tab.df[[c for c in tab.df.columns if c not in ("label", "confidence", "review") and not c.startswith("prob_")]],
        {"mpp": 0.5},
    )
    f = features_frame(det_only)
    assert set(f["label"]) == {"unclassified"}
    np.testing.assert_allclose(class_rgba(["unclassified"])[0, :3], np.array(class_color("unclassified")) / 255)
