"""Romanowsky augmentation of detector training patches (leukcore.detect.augment)."""

from pathlib import Path

import numpy as np
import pytest

from leukcore.detect import augment as A

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "leukcore" / "data" / "sample"


def _field():
    from leukcore.detect.data import read_rgb

    f = sorted((SAMPLE / "bccd").glob("*.jpg"))[0]
    return read_rgb(f)[:160, :160]


def test_optical_density_round_trip_keeps_glass_brighter_than_background():
    img = np.random.default_rng(0).integers(0, 256, (24, 24, 3)).astype(np.uint8)
    bg = np.array([200.0, 210.0, 220.0], np.float32)
    back = A._from_od(A._od(img, bg), bg)
    assert np.abs(back - img).max() < 1.0  # incl. pixels above the background colour


def test_jitter_is_seeded_and_keeps_shape():
    img = _field()
    lab = np.zeros(img.shape[:2], np.int32)
    a = A.romanowsky_jitter(img, lab, np.random.default_rng(5))
    b = A.romanowsky_jitter(img, lab, np.random.default_rng(5))
    assert a.shape == img.shape and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, img)


@pytest.mark.parametrize("target", ["deep-red", "grey-blue", "brown"])
def test_restain_moves_red_cells_towards_the_target_hue(target):
    from leukcore.detect.data import background_color

    img = _field()
    lab = np.zeros(img.shape[:2], np.int32)
    out = A.restain(img, target, lab=lab)
    bg = background_color(img)
    obj = A._regions(img.astype(np.float32), lab, bg)[1]
    assert obj.sum() > 100  # red cells were found
    t = -np.log(np.asarray(A.RBC_PALETTE[target], np.float32) / 255.0)
    od_out = A._od(out.astype(np.float32), background_color(out))[obj].mean(0)
    od_in = A._od(img.astype(np.float32), bg)[obj].mean(0)
    # the channel ratios of the objects' density move towards the target's
    r = lambda v: v / v.sum()
    assert np.abs(r(od_out) - r(t)).sum() < np.abs(r(od_in) - r(t)).sum()


def test_restain_keeps_white_cells_when_asked():
    img = _field()
    lab = np.ones(img.shape[:2], np.int32)  # everything a white cell
    out = A.restain(img, "pink", wbc="as-is", lab=lab)
    assert np.abs(out.astype(int) - img.astype(int)).max() <= 1


def test_mixed_recipe_gives_both_strong_and_mild_patches(monkeypatch):
    """``augment(strength="mixed")``: some patches re-coloured region by region (strong), some not (mild)."""
    import leukcore.detect.augment as aug
    from leukcore.detect.train_data import augment

    img = _field()
    lab = np.zeros(img.shape[:2], np.int32)
    calls = []
    real = aug.romanowsky_jitter

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(aug, "romanowsky_jitter", spy)
    rng = np.random.default_rng(0)
    for _ in range(40):
        out, _ = augment(img, lab, rng, size=96, strength="mixed")
        assert out.shape == (96, 96, 3) and out.dtype == np.uint8
    assert 8 <= len(calls) <= 32
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment(img, lab, rng, strength="wild")
