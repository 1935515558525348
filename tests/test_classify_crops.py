"""Crop geometry: microns -> pixels at any mpp, pyramid level choice, masking, padding, errors."""

import numpy as np
import pytest

from leukcore.classify import CropSpec, extract_crops
from leukcore.classify.crops import crops_from_array
from leukcore.classify.inputs import lightness, preprocess
from leukcore.io.slide import Slide
from leukcore.results import CellTable


def _disk_image(n=400, cy=200, cx=150, r=20, colour=(120, 40, 160)):
    img = np.full((n, n, 3), 230, np.uint8)
    yy, xx = np.mgrid[:n, :n]
    img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = colour
    return img


def _table(cents, mpp, r=20.0):
    polys = []
    for y, x in cents:
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        polys.append(np.stack([y + r * np.sin(t), x + r * np.cos(t)], 1).astype(np.float32))
    return CellTable.from_detections(np.asarray(cents, float), polys, np.ones(len(cents)), mpp=mpp)


def test_crop_is_centred_and_scaled_in_microns():
    img = _disk_image(r=20)
    spec = CropSpec(size=40, crop_um=40.0, mode="rgb")  # 40 um at 0.5 um/px = 80 px -> 40 px
    crops = crops_from_array(img, [[200, 150]], spec, mpp=0.5)
    c = crops[0]
    assert c.shape == (40, 40, 3)
    assert tuple(c[20, 20]) == (120, 40, 160)  # centre on the disk
    # disk radius 20 px at 0.5 um/px = 10 um = 10 output px (40 px for 40 um)
    row = (c[20, :, 1] < 100).sum()
    assert 18 <= row <= 22
    assert tuple(c[0, 0]) == (230, 230, 230)


def test_same_physical_crop_at_two_pixel_sizes():
    img = _disk_image(n=400, r=30)
    half = img[::2, ::2].copy()  # same scene at twice the pixel size
    spec = CropSpec(size=32, crop_um=40.0, mode="rgb")
    a = crops_from_array(img, [[200, 150]], spec, mpp=0.5)[0].astype(int)
    b = crops_from_array(half, [[100, 75]], spec, mpp=1.0)[0].astype(int)
    assert np.abs(a - b).mean() < 12


def test_reads_coarser_pyramid_level_for_large_crops(monkeypatch):
    img = _disk_image(n=2400, cy=1200, cx=1200, r=100)
    slide = Slide.from_array(img, mpp=0.25, min_size=256, chunk=512)
    assert slide.n_levels >= 3
    spec = CropSpec(size=32, crop_um=100.0, mode="rgb")  # 400 px at level 0 -> ds 12.5 -> level 3 (ds 8)
    levels = []
    orig = Slide.read_region

    def spy(self, level, y, x, h, w):
        levels.append(level)
        return orig(self, level, y, x, h, w)

    monkeypatch.setattr(Slide, "read_region", spy)
    monkeypatch.setattr("leukcore.classify.crops._MATERIALISE_PIXELS", 0)
    crops = extract_crops(slide, _table([[1200, 1200]], 0.25), spec)
    assert levels and min(levels) >= 2
    assert tuple(crops[0, 16, 16]) == (120, 40, 160)


def test_mask_blackens_background_and_out_of_bounds_is_white():
    img = _disk_image(r=20)
    spec = CropSpec(size=40, crop_um=40.0, mode="rgb", mask=True)
    slide = Slide.from_array(img, mpp=0.5)
    t = _table([[200, 150], [5, 5]], 0.5)
    crops = extract_crops(slide, t, spec)
    assert tuple(crops[0, 0, 0]) == (0, 0, 0) and tuple(crops[0, 20, 20]) == (120, 40, 160)
    nomask = extract_crops(slide, t, spec, masks=False)
    assert tuple(nomask[1, 0, 0]) == (255, 255, 255)  # outside the slide: white padding
    assert tuple(nomask[0, 0, 0]) == (230, 230, 230)
    sub = extract_crops(slide, t, spec, masks=False, rows=[1])
    assert np.array_equal(sub[0], nomask[1])


def test_missing_mpp_is_a_clear_error():
    slide = Slide.from_array(_disk_image(), mpp=None)
    with pytest.raises(ValueError, match="mpp"):
        extract_crops(slide, _table([[200, 150]], None), CropSpec())
    out = extract_crops(slide, _table([[200, 150]], None), CropSpec(size=16), mpp=0.5)
    assert out.shape == (1, 16, 16, 3)


def test_lstd_input_is_invariant_to_lightness_affine_changes():
    rng = np.random.default_rng(0)
    crops = rng.integers(40, 200, size=(3, 24, 24, 3)).astype(np.uint8)
    spec = CropSpec(size=24, mode="lstd")
    a = preprocess(crops, spec)
    # a grey-level affine change (contrast 0.8, brightness +20) of a grey image
    grey = np.repeat(crops[..., :1], 3, axis=-1)
    g2 = np.clip(grey.astype(float) * 0.8 + 20, 0, 255).astype(np.uint8)
    L1, L2 = lightness(grey), lightness(g2)
    assert not np.allclose(L1, L2)
    p1, p2 = preprocess(grey, spec), preprocess(g2, spec)
    assert np.corrcoef(p1.ravel(), p2.ravel())[0, 1] > 0.99
    assert a.shape == (3, 3, 24, 24) and a.dtype == np.float32
    assert abs(float(a[:, 0].mean())) < 1e-3  # standardised per crop
    rgb = preprocess(crops, CropSpec(size=24, mode="rgb"))
    assert rgb.min() >= -1 and rgb.max() <= 1


def test_preprocess_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        preprocess(np.zeros((1, 8, 8, 3), np.float32), CropSpec(size=8))
    with pytest.raises(ValueError):
        CropSpec(mode="hsv")
