"""Analysis regions: current view, shapes (bounding box + polygon mask)."""

import numpy as np
import pytest

from leukcore.regions import clip_region
from napari_leuk._regions import RegionError, cells_in_shapes, shapes_region, view_region, world_to_level0


def test_world_to_level0_uses_scale_and_translate():
    np.testing.assert_allclose(world_to_level0([[10, 20]], (0.5, 0.25), (5, 0)), [[10, 80]])


def test_view_region_centre_zoom_canvas():
    # centre (100 um, 200 um), zoom 2 screen px per um, canvas 400 x 800 px -> 200 x 400 um seen
    box = view_region((100, 200), 2.0, (400, 800), (0.5, 0.5), (10000, 10000))
    assert box == (0, 0, 400, 800)
    box = view_region((1000, 1000), 2.0, (400, 800), (0.5, 0.5), (10000, 10000))
    assert box == (1800, 1600, 2200, 2400)


def test_view_region_clips_and_rejects_outside():
    assert view_region((0, 0), 1.0, (100, 100), (1, 1), (30, 30)) == (0, 0, 30, 30)
    with pytest.raises(RegionError, match="does not meet the slide"):
        view_region((-500, -500), 1.0, (100, 100), (1, 1), (30, 30))
    with pytest.raises(RegionError):
        clip_region((5, 5, 5, 9), (10, 10), rounding="outward")


def test_shapes_region_bbox_and_polygon_mask():
    tri = np.array([[10.0, 10.0], [10.0, 60.0], [60.0, 10.0]])  # world (um), image scale 0.5
    rect = np.array([[200.0, 200.0], [200.0, 210.0], [210.0, 210.0], [210.0, 200.0]])
    box = shapes_region([tri, rect], (0.5, 0.5), (1000, 1000))
    assert box == (20, 20, 421, 421)
    pts = np.array([[30, 30], [110, 110], [410, 410], [600, 600]], float)  # level-0 px
    inside = cells_in_shapes(pts, [tri, rect], (0.5, 0.5), shape_types=["polygon", "rectangle"])
    assert inside.tolist() == [True, False, True, False]
    ell = np.array([[0.0, 0.0], [0.0, 100.0], [100.0, 100.0], [100.0, 0.0]])
    assert cells_in_shapes(np.array([[100, 100], [5, 5]]), [ell], (0.5, 0.5), shape_types=["ellipse"]).tolist() == [
        True,
        False,
    ]
    with pytest.raises(RegionError, match="empty"):
        shapes_region([], (1, 1), (10, 10))
