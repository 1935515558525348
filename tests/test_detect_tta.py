"""Test-time augmentation of the detector: the maps of flipped / transposed tiles mapped back."""

import numpy as np
import pytest
import torch

from leukcore.detect.model import _DIHEDRAL, Detector, _transform, _untransform, _untransform_rays
from leukcore.detect.net import build_network


@pytest.mark.parametrize("t,v,h", _DIHEDRAL)
def test_ray_order_matches_star_dist(t, v, h):
    """Undoing a transform on star_dist of the transformed labels gives star_dist of the labels."""
    from stardist import star_dist

    yy, xx = np.mgrid[:48, :40]
    lab = np.zeros((48, 40), np.uint16)
    lab[((yy - 22) ** 2 / 150 + (xx - 17) ** 2 / 40) < 1] = 1  # a tilted, lopsided object
    lab[12:18, 17:34] = 1
    d = star_dist(lab, 32)
    x = torch.from_numpy(lab.astype(np.float32))[None, None]
    lab_t = _transform(x, t, v, h)[0, 0].numpy().astype(np.uint16)
    d_t = torch.from_numpy(star_dist(np.ascontiguousarray(lab_t), 32)).permute(2, 0, 1)[None]
    back = _untransform_rays(d_t, t, v, h)[0].permute(1, 2, 0).numpy()
    assert back.shape == d.shape
    np.testing.assert_allclose(back[lab > 0], d[lab > 0], atol=1e-3)
    np.testing.assert_array_equal(_untransform(_transform(x, t, v, h), t, v, h), x)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    arch = {"type": "stardist-unet", "n_rays": 32, "channels": [8, 16], "head_channels": 8}
    card = {"name": "tiny", "task": "detection", "architecture": arch, "input": {"mpp": 0.5}}
    return Detector.from_network(build_network(arch), card, device="cpu")


def test_tta8_maps_are_equivariant(tiny):
    """With all 8 transforms averaged, flipping the input flips the maps (rays re-ordered) exactly."""
    rng = np.random.default_rng(1)
    x = rng.random((1, 32, 48, 3), dtype=np.float32)
    tiny.tta = 8
    try:
        p, d = tiny.predict_maps(x)
        pf, df = tiny.predict_maps(np.ascontiguousarray(x[:, :, ::-1]))
        pt, dt = tiny.predict_maps(np.ascontiguousarray(x.transpose(0, 2, 1, 3)))
    finally:
        tiny.tta = 1
    n = 32
    k = np.arange(n)
    np.testing.assert_allclose(pf[:, :, ::-1], p, atol=1e-5)
    np.testing.assert_allclose(df[:, :, ::-1][..., (n // 2 - k) % n], d, atol=1e-4)
    np.testing.assert_allclose(pt.transpose(0, 2, 1), p, atol=1e-5)
    np.testing.assert_allclose(dt.transpose(0, 2, 1, 3)[..., (n // 4 - k) % n], d, atol=1e-4)
    # without TTA the untrained net is not equivariant, so the test above can fail
    p1, _ = tiny.predict_maps(x)
    p1f, _ = tiny.predict_maps(np.ascontiguousarray(x[:, :, ::-1]))
    assert np.abs(p1f[:, :, ::-1] - p1).max() > 1e-4


def test_tta_is_the_mean_of_the_transformed_passes(tiny):
    rng = np.random.default_rng(2)
    x = rng.random((2, 16, 24, 3), dtype=np.float32)
    p1, d1 = tiny.predict_maps(x)
    pf, df = tiny.predict_maps(np.ascontiguousarray(x[:, :, ::-1]))
    tiny.tta = 2
    try:
        p2, d2 = tiny.predict_maps(x)
    finally:
        tiny.tta = 1
    k = np.arange(32)
    np.testing.assert_allclose(p2, (p1 + pf[:, :, ::-1]) / 2, atol=1e-5)
    np.testing.assert_allclose(d2, (d1 + df[:, :, ::-1][..., (16 - k) % 32]) / 2, atol=1e-4)


def test_bad_tta(tiny):
    tiny.tta = 3
    try:
        with pytest.raises(ValueError, match="tta must be one of"):
            tiny.predict_maps(np.zeros((1, 16, 16, 3), np.float32))
    finally:
        tiny.tta = 1


def test_tta_keeps_seams_exact_with_the_shipped_model():
    """Averaging flipped tiles must not make the cells depend on the tiling: a 2 x 2 mosaic of
    bundled four-class fields gives the same cells with small and large tiles."""
    from pathlib import Path

    from scipy.spatial import cKDTree

    from leukcore.detect import detect_cells
    from leukcore.detect.data import read_rgb
    from leukcore.io import Slide
    from leukcore.models.registry import WEIGHTS_DIR

    if not (WEIGHTS_DIR / "wbc-stardist.yaml").exists():
        pytest.skip("wbc-stardist weights not shipped")
    sample = Path(__file__).resolve().parents[1] / "src" / "leukcore" / "data" / "sample" / "all4class"
    fields = [read_rgb(f) for f in sorted(sample.glob("*/*.jpg"))[:4]]
    h = min(f.shape[0] for f in fields)
    w = min(f.shape[1] for f in fields)
    top = np.concatenate([fields[0][:h, :w], fields[1][:h, :w]], axis=1)
    bottom = np.concatenate([fields[2][:h, :w], fields[3][:h, :w]], axis=1)
    slide = Slide.from_array(np.concatenate([top, bottom], axis=0), mpp=0.53)
    det = Detector.load("wbc-stardist", device="cpu")
    det.tta = 8
    small = detect_cells(slide, det, tile_size=128, skip_empty=False)
    large = detect_cells(slide, det, tile_size=1024, skip_empty=False)
    assert len(small) >= 8 and len(small) == len(large)
    a = small.df[["centroid_y", "centroid_x"]].to_numpy()
    d, _ = cKDTree(large.df[["centroid_y", "centroid_x"]].to_numpy()).query(a)
    assert d.max() < 1.0
    assert small.meta["detector"]["tta"] == 8  # recorded with the results
