"""Tiled whole-slide detection with an oracle network: seams, ownership, coordinates, cancel, progress, bad input.

The oracle computes the exact StarDist maps (stardist's ``edt_prob`` / ``star_dist``) of
the purple discs it sees in each tile, so every difference between tilings is the
tiler's fault, not the network's.
"""

import numpy as np
import pytest

from leukcore.detect import detect_cells, iter_detect
from leukcore.io import Slide
from leukcore.progress import CancelToken


class OracleDetector:
    mpp = 0.5
    multiple = 4
    prob_thresh = 0.5
    nms_thresh = 0.4
    max_cell_um = 25.0
    min_area_px = 20.0
    n_rays = 32
    card = {"name": "oracle"}

    def __init__(self):
        self.calls = 0
        self.batch_sizes = []

    def info(self):
        return {"name": "oracle"}

    def predict_maps(self, batch):
        from skimage.measure import label
        from stardist import edt_prob, star_dist

        self.calls += 1
        self.batch_sizes.append(len(batch))
        probs, dists = [], []
        for x in batch:
            m = (x[..., 2] - x[..., 1]) > 0.25
            lab = label(m).astype(np.int32)
            probs.append((edt_prob(lab) ** 4).astype(np.float32))  # peaked: fewer NMS candidates
            dists.append(star_dist(lab, self.n_rays).astype(np.float32))
        return np.stack(probs), np.stack(dists)


def disc_slide(shape=(700, 900), n=40, r=(6, 14), seed=1, scale=1):
    """White background + purple discs at non-overlapping random places; returns image and centres."""
    rng = np.random.default_rng(seed)
    H, W = shape[0] * scale, shape[1] * scale
    img = np.full((H, W, 3), 250, np.uint8)
    yy, xx = np.mgrid[:H, :W]
    cents = []
    for _ in range(n * 50):
        if len(cents) >= n:
            break
        rr = rng.uniform(*r) * scale
        cy, cx = rng.uniform(0, H), rng.uniform(0, W)
        if any(np.hypot(cy - a, cx - b) < rr + c + 6 * scale for a, b, c in cents):
            continue
        cents.append((cy, cx, rr))
        img[np.hypot(yy - cy, xx - cx) < rr] = (120, 60, 180)
    return img, np.array(cents)


def _match(a, b):
    from scipy.spatial import cKDTree

    d, j = cKDTree(b).query(a)
    return d, j


@pytest.fixture(scope="module")
def disc():
    return disc_slide()


def test_all_discs_found_with_level0_coordinates(disc):
    img, cents = disc
    det = OracleDetector()
    t = detect_cells(Slide.from_array(img, mpp=0.5), det, tile_size=128, skip_empty=False)
    # discs cut by the image edge are still found; one cell per disc
    assert len(t) == len(cents)
    d, _ = _match(t.df[["centroid_y", "centroid_x"]].to_numpy(), cents[:, :2])
    inner = (cents[:, 0] > 16) & (cents[:, 1] > 16) & (cents[:, 0] < 684) & (cents[:, 1] < 884)
    assert np.all(d[: len(d)] < 3.0) or np.median(d) < 1.0
    assert t.df["cell_id"].tolist() == list(range(1, len(t) + 1))
    assert t.meta["mpp"] == 0.5 and t.meta["partial"] is False
    # polygon area ~ pi r^2 for interior discs
    dd, j = _match(cents[inner, :2], t.df[["centroid_y", "centroid_x"]].to_numpy())
    area = t.df["area_px"].to_numpy()[j]
    np.testing.assert_allclose(area, np.pi * cents[inner, 2] ** 2, rtol=0.2)


@pytest.mark.parametrize("tiles", [(64, 128, 1024)])
def test_seams_same_cells_for_any_tile_size(disc, tiles):
    img, cents = disc
    res = [
        detect_cells(Slide.from_array(img, mpp=0.5), OracleDetector(), tile_size=ts, skip_empty=False) for ts in tiles
    ]
    ref = res[0].df[["centroid_y", "centroid_x"]].to_numpy()
    for r in res[1:]:
        assert len(r) == len(res[0])
        got = r.df[["centroid_y", "centroid_x"]].to_numpy()
        d, _ = _match(got, ref)
        assert d.max() < 1.0


def test_resampled_level0_coordinates():
    """A 0.25 um/px slide is detected at 0.5 um/px; centroids come back in level-0 pixels."""
    img, cents = disc_slide(shape=(300, 400), n=12, scale=2)
    t = detect_cells(Slide.from_array(img, mpp=0.25), OracleDetector(), tile_size=96, skip_empty=False)
    assert t.meta["working_mpp"] == pytest.approx(0.5)
    assert len(t) == len(cents)
    d, _ = _match(t.df[["centroid_y", "centroid_x"]].to_numpy(), cents[:, :2])
    assert np.median(d) < 2.0
    assert np.isfinite(t.df["centroid_y_um"]).all()
    # and at 0.6 um/px (resampled by interpolation, not a pyramid level)
    t2 = detect_cells(Slide.from_array(img, mpp=0.3), OracleDetector(), tile_size=96, skip_empty=False)
    assert len(t2) == len(cents)
    d, _ = _match(t2.df[["centroid_y", "centroid_x"]].to_numpy(), cents[:, :2])
    assert np.median(d) < 2.5


def test_skip_empty_keeps_cells_and_skips_tiles():
    img = np.full((1024, 1024, 3), 250, np.uint8)
    yy, xx = np.mgrid[:1024, :1024]
    for cy, cx in [(100, 100), (130, 900), (700, 500)]:
        img[np.hypot(yy - cy, xx - cx) < 12] = (120, 60, 180)
    full = detect_cells(Slide.from_array(img, mpp=0.5), OracleDetector(), tile_size=128, skip_empty=False)
    fast = detect_cells(Slide.from_array(img, mpp=0.5), OracleDetector(), tile_size=128, skip_empty=True)
    assert len(full) == len(fast) == 3
    assert fast.meta["tiles_run"] < full.meta["tiles_run"] == full.meta["n_tiles"]
    assert fast.meta["tiles_run"] <= 12


def test_region_and_progress_and_batches(disc):
    img, cents = disc
    events = []
    det = OracleDetector()
    t = detect_cells(
        Slide.from_array(img, mpp=0.5),
        det,
        tile_size=64,
        batch_size=3,
        skip_empty=False,
        region=(100, 200, 400, 600),
        progress=events.append,
    )
    c = t.df[["centroid_y", "centroid_x"]].to_numpy()
    assert ((c[:, 0] >= 99) & (c[:, 0] < 401) & (c[:, 1] >= 199) & (c[:, 1] < 601)).all()
    inside = (cents[:, 0] >= 100) & (cents[:, 0] < 400) & (cents[:, 1] >= 200) & (cents[:, 1] < 600)
    assert abs(len(t) - inside.sum()) <= 2
    assert events[-1].done == events[-1].total == t.meta["tiles_run"]
    assert [e.done for e in events] == sorted(e.done for e in events)
    assert max(det.batch_sizes) <= 3 and sum(det.batch_sizes) == t.meta["tiles_run"]


def test_cancel_returns_partial(disc):
    img, _ = disc
    tok = CancelToken()
    seen = []

    def prog(ev):
        seen.append(ev.done)
        if ev.done >= 30:  # of 80 tiles
            tok.cancel()

    t = detect_cells(
        Slide.from_array(img, mpp=0.5),
        OracleDetector(),
        tile_size=96,
        batch_size=2,
        skip_empty=False,
        progress=prog,
        cancel=tok,
    )
    assert t.partial
    assert max(seen) < 40  # stopped at the next batch boundary
    full = detect_cells(Slide.from_array(img, mpp=0.5), OracleDetector(), tile_size=256, skip_empty=False)
    assert 0 < len(t) < len(full)


def test_iter_detect_chunks_concat_to_whole(disc):
    from leukcore.results import CellTable

    img, _ = disc
    chunks = list(
        iter_detect(Slide.from_array(img, mpp=0.5), OracleDetector(), tile_size=128, batch_size=2, skip_empty=False)
    )
    assert len(chunks) > 1
    whole = CellTable.concat(chunks).sorted()
    ref = detect_cells(Slide.from_array(img, mpp=0.5), OracleDetector(), tile_size=128, skip_empty=False)
    np.testing.assert_allclose(whole.df["centroid_y"], ref.df["centroid_y"])


def test_bad_inputs():
    det = OracleDetector()
    with pytest.raises(ValueError, match="RGB"):
        detect_cells(np.zeros((64, 64), np.uint8), det, mpp=0.5)
    with pytest.raises(ValueError, match="RGB|channel"):
        detect_cells(np.zeros((64, 64, 4), np.uint8), det, mpp=0.5)
    with pytest.raises(ValueError, match="uint8"):
        detect_cells(np.zeros((64, 64, 3), np.float32), det, mpp=0.5)
    with pytest.raises(ValueError, match="region"):
        detect_cells(np.full((64, 64, 3), 255, np.uint8), det, mpp=0.5, region=(10, 10, 5, 5))
    with pytest.raises(ValueError, match="batch_size"):
        detect_cells(np.full((64, 64, 3), 255, np.uint8), det, mpp=0.5, batch_size=0)
    # all-white slide: no pixel size can be estimated -> clear error, unless mpp is given
    with pytest.raises(ValueError, match="pixel size"):
        detect_cells(np.full((256, 256, 3), 255, np.uint8), det)
    t = detect_cells(np.full((256, 256, 3), 255, np.uint8), det, mpp=0.5)
    assert len(t) == 0 and not t.partial
    t = detect_cells(np.full((256, 256, 3), 255, np.uint8), det, mpp=0.5, skip_empty=True)
    assert len(t) == 0 and t.meta["tiles_run"] == 0


def test_prefetch_returns_each_batch_in_tile_order_whatever_the_workers():
    """Tiles of a batch are read by several threads; the batch comes back in its own order, once each."""
    import random
    import time as _time

    from leukcore.detect.reading import Prefetch

    rng = random.Random(0)
    delays = {i: rng.uniform(0, 0.01) for i in range(11)}

    def read(i):
        _time.sleep(delays[i])
        return i * 10

    batches = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    for workers in (1, 3):
        p = Prefetch(read, batches, workers=workers)
        try:
            got = [p.next() for _ in batches]
        finally:
            p.close()
        assert got == [[i * 10 for i in b] for b in batches]
