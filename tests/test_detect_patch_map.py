"""A training patch's colour map computed as a slide's (``leuk train-detector --map-cell-share``)."""

import argparse
import shlex

import numpy as np
import pytest

from leukcore.detect.inputs import field_input
from leukcore.detect.train import DetectorTrainOptions, train_command
from leukcore.detect.train_data import patch_input

#: a stain template (Lab mean, std of stained pixels) like the shipped detector's
TEMPLATE = np.array([[62.0, 22.0, -14.0], [14.0, 9.0, 11.0]], np.float32)
GLASS, RED_CELL, WHITE_CELL = (236, 228, 240), (205, 125, 150), (95, 60, 160)


def _patch(size=128, cell_radius=36):
    """Glass, a grid of red cells and one large white cell (label 1) filling about a quarter of the stained area."""
    yy, xx = np.mgrid[:size, :size]
    img = np.empty((size, size, 3), np.uint8)
    img[:] = GLASS
    red = np.zeros((size, size), bool)
    for cy in range(8, size, 20):
        for cx in range(8, size, 20):
            red |= np.hypot(yy - cy, xx - cx) < 7
    cell = np.hypot(yy - size // 2, xx - size // 2) < cell_radius
    img[red & ~cell] = RED_CELL
    img[cell] = WHITE_CELL
    return img, cell.astype(np.int32), red & ~cell


def _lightness(rgb01, mask):
    from skimage.color import rgb2lab

    return float(rgb2lab(rgb01[mask][None])[0][:, 0].mean())


def test_without_a_share_the_patch_keeps_its_own_map():
    img, lab, _ = _patch()
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(patch_input(img, lab, TEMPLATE, rng, 0.0), field_input(img, TEMPLATE))
    # no template (white balance only): the same input either way
    np.testing.assert_array_equal(patch_input(img, lab, None, rng, 0.15), field_input(img, None))


def test_the_red_cells_set_the_map_as_on_a_slide():
    """With white cells capped at 2 % of the statistics, the red cells' lightness lands on the template's mean
    (as a slide's thumbnail, mostly red cells, maps them); the patch's own map, a third white cell, does not."""
    img, lab, red = _patch()
    own = field_input(img, TEMPLATE)
    slide_like = patch_input(img, lab, TEMPLATE, np.random.default_rng(0), 0.02)
    assert abs(_lightness(slide_like, red) - TEMPLATE[0, 0]) < 2.0
    assert abs(_lightness(own, red) - TEMPLATE[0, 0]) > 4.0
    # the map is the same colour transfer for every pixel: the white cell stays darker than the red cells
    assert _lightness(slide_like, lab > 0) < _lightness(slide_like, red)


def test_a_patch_that_is_all_white_cell_keeps_its_own_map():
    img, lab, _ = _patch(size=64, cell_radius=60)
    got = patch_input(img, lab, TEMPLATE, np.random.default_rng(0), 0.15)
    np.testing.assert_array_equal(got, field_input(img, TEMPLATE))


def test_map_cell_share_is_checked_and_recorded():
    from leukcore.cli.train_detector import register

    with pytest.raises(ValueError, match=r"map_cell_share is a share in \[0, 1\], got 1\.5"):
        DetectorTrainOptions(normalize="reinhard", map_cell_share=1.5).checked()
    # without a stain map the option would do nothing: refused, not ignored
    with pytest.raises(ValueError, match="map_cell_share shapes the stain map's statistics: it needs"):
        DetectorTrainOptions(map_cell_share=0.15).checked()
    assert DetectorTrainOptions(normalize="reinhard", map_cell_share=0.15).checked().map_cell_share == 0.15
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    cmd = train_command("DATA", "RUN", DetectorTrainOptions(normalize="reinhard", map_cell_share=0.15))
    assert parser.parse_args(shlex.split(cmd)[1:]).map_cell_share == 0.15
    assert "--map-cell-share" not in train_command("DATA", "RUN", DetectorTrainOptions())


def test_std_ratio_bounds_reach_the_patches_and_the_command():
    from leukcore.cli.train_detector import register

    img, lab, _ = _patch()
    keep = ((0.5, 1.0, 1.0), (1.0, 1.0, 1.0))
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(
        patch_input(img, lab, TEMPLATE, rng, 0.0, keep), field_input(img, TEMPLATE, None, keep)
    )
    assert not np.array_equal(field_input(img, TEMPLATE, None, keep), field_input(img, TEMPLATE))
    with pytest.raises(ValueError, match="std_ratio_bounds bound the stain map: it needs"):
        DetectorTrainOptions(std_ratio_bounds=keep).checked()
    with pytest.raises(ValueError, match="trains with upper bounds 1"):  # refused before training, not after
        DetectorTrainOptions(normalize="reinhard", std_ratio_bounds=((0.5, 0.5, 0.5), (1.0, 0.8, 1.0))).checked()
    with pytest.raises(ValueError, match="std_ratio_bounds must be"):
        DetectorTrainOptions(normalize="reinhard", std_ratio_bounds=((0.5, 2.0, 1.0), (1.0, 1.0, 1.0))).checked()
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    cmd = train_command("DATA", "RUN", DetectorTrainOptions(normalize="reinhard", std_ratio_bounds=keep))
    assert parser.parse_args(shlex.split(cmd)[1:]).std_ratio_low == [0.5, 1.0, 1.0]
    assert "--std-ratio-low" not in train_command("DATA", "RUN", DetectorTrainOptions())
