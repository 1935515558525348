"""estimate_mpp from red cells: synthetic smears of known scale and real fields."""
import numpy as np
import pytest

from leukcore.mpp import MppError, estimate_mpp
from leukcore.detect.data import default_data_dir


def synthetic_smear(diam_px, shape=(400, 400), n=60, seed=0, wbc=True):
    """Pale-pink discs with pale centres on a bright background (+ a purple white cell)."""
    rng = np.random.default_rng(seed)
    img = np.full(shape + (3,), (245, 243, 246), np.uint8)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    r = diam_px / 2
    placed = []
    for _ in range(n * 20):
        if len(placed) >= n:
            break
        cy, cx = rng.uniform(r + 2, shape[0] - r - 2), rng.uniform(r + 2, shape[1] - r - 2)
        rr = r * rng.uniform(0.93, 1.07)
        if any(np.hypot(cy - py, cx - px) < rr + pr + 1 for py, px, pr in placed):
            continue
        placed.append((cy, cx, rr))
        d = np.hypot(yy - cy, xx - cx)
        img[d < rr] = (215, 160, 170)
        img[d < 0.35 * rr] = (230, 200, 205)
    if wbc:
        d = np.hypot(yy - shape[0] / 2, xx - shape[1] / 2)
        img[d < 1.6 * r] = (120, 70, 170)
    return img


@pytest.mark.parametrize("diam", [12, 20, 40])
def test_synthetic_scale_recovered(diam):
    est = estimate_mpp(synthetic_smear(diam, shape=(max(300, diam * 12),) * 2))
    assert est.n_cells >= 5
    assert est.mpp == pytest.approx(7.5 / diam, rel=0.12)
    assert 0 <= est.spread < 0.3
    assert est.method == "rbc-diameter"


def test_blank_image_raises_clear_error():
    with pytest.raises(MppError, match="red cells"):
        estimate_mpp(np.full((200, 200, 3), 255, np.uint8))


def test_wrong_channels_raise():
    with pytest.raises(ValueError, match="RGB"):
        estimate_mpp(np.zeros((50, 50), np.uint8))


def test_slide_input_samples_regions():
    from leukcore.io import Slide

    img = synthetic_smear(16, shape=(600, 600))
    est = estimate_mpp(Slide.from_array(img))
    assert est.mpp == pytest.approx(7.5 / 16, rel=0.12)


DATA = default_data_dir()


@pytest.mark.skipif(not (DATA / "bccd").exists(), reason="real data not available")
def test_real_fields_scales_are_consistent():
    """BCCD RBC boxes are ~80-110 px across: box-derived scale agrees with the red-cell estimate."""
    from leukcore.detect.data import bccd_boxes, bccd_split, read_rgb

    ests, box_d = [], []
    for i in bccd_split(DATA, "test")[:12]:
        img = read_rgb(DATA / "bccd" / "BCCD" / "JPEGImages" / f"{i}.jpg")
        try:
            ests.append(estimate_mpp(img).mpp)
        except MppError:
            continue
        b = bccd_boxes(DATA, i, "RBC")
        full = b[(b[:, 0] > 0) & (b[:, 1] > 0) & (b[:, 2] < 480) & (b[:, 3] < 640)]
        box_d.extend(np.sqrt((full[:, 2] - full[:, 0]) * (full[:, 3] - full[:, 1])).tolist())
    assert len(ests) >= 8
    box_mpp = 7.5 / np.median(box_d)
    # boxes are loose (drawn around the cell, so biased large): agree within 30 %
    assert np.median(ests) == pytest.approx(box_mpp, rel=0.3)
    # four-class fields are ~5x coarser than BCCD
    from leukcore.detect.data import read_rgb as rd
    fc = sorted((DATA / "all4class" / "Original" / "Pro").glob("*.jpg"))[:10]
    fce = [estimate_mpp(rd(f)).mpp for f in fc]
    assert 0.35 < np.median(fce) < 0.75
