"""Sub-window skipping inside tiles (``detect_cells(..., windows=True)``).

Candidate blocks mark where a nucleated cell may be centred; inside a tile the network runs
only on windows around them.  These tests check the geometry (windows inside the tile's read
box, disjoint cores covering every candidate block), the exactness premise (a window computes
the same maps as the whole tile away from its border), and that the shipped network on the
real bundled sample slide finds the same cells with windows as with whole tiles.
"""

import numpy as np
import pytest

from leukcore.detect import detect_cells
from leukcore.detect.plan import in_marked_block, plan_detection, tile_windows
from leukcore.detect.receptive import receptive_radius
from leukcore.io import Slide, open_slide
from test_detect_tiled import OracleDetector, _match, disc_slide


@pytest.fixture(scope="module")
def det():
    from leukcore.detect import Detector

    return Detector.load("wbc-stardist", device="cpu")


@pytest.fixture(scope="module")
def sample():
    from leukcore.sample import sample_slide_path

    return sample_slide_path()


def _check_windows(plan):
    """Geometry invariants of every run tile's windows; returns (windows, tiles with >1 or partial windows)."""
    B, m = plan.block, plan.grid.multiple
    n_win = n_split = 0
    for t in plan.grid:
        wins = tile_windows(plan, t)
        if not plan.run[t.index]:
            continue
        assert wins, f"tile {t.index} is run but has no window"
        n_win += len(wins)
        if len(wins) > 1 or wins[0].core != t.core:
            n_split += 1
        for w in wins:
            # inside the tile: core in core, read box in read box
            assert t.core[0] <= w.core[0] < w.core[2] <= t.core[2]
            assert t.core[1] <= w.core[1] < w.core[3] <= t.core[3]
            assert t.read[0] <= w.read[0] and t.read[1] <= w.read[1]
            assert w.read[2] <= t.read[2] and w.read[3] <= t.read[3]
            # the read box holds the core plus the window halo (or the tile's own edge)
            assert w.read[0] <= w.core[0] - min(plan.window_halo, w.core[0] - t.read[0])
            assert w.read[2] >= min(w.core[2] + plan.window_halo, t.read[2])
            # network input sizes and origins stay on the pooling grid
            assert (w.read[2] - w.read[0]) % m == 0 and (w.read[3] - w.read[1]) % m == 0
            assert w.read[0] % m == 0 and w.read[1] % m == 0
        # cores are disjoint
        for i, a in enumerate(wins):
            for b in wins[i + 1 :]:
                assert not (
                    a.core[0] < b.core[2] and b.core[0] < a.core[2] and a.core[1] < b.core[3] and b.core[1] < a.core[3]
                )
        # every marked block of the tile's core lies in a window core
        ys, xs = np.nonzero(plan.blocks)
        centres = np.stack([(ys + 0.5) * B, (xs + 0.5) * B], 1)
        centres = centres[t.owns(centres)]
        covered = np.zeros(len(centres), bool)
        for w in wins:
            covered |= w.owns(centres)
        assert covered.all(), f"tile {t.index}: {(~covered).sum()} candidate blocks outside every window"
    return n_win, n_split


def test_receptive_radius_and_window_halo(det):
    r = receptive_radius(det)
    assert r is not None and 4 <= r < 64
    plan = plan_detection(
        Slide.from_array(np.full((512, 512, 3), 230, np.uint8), mpp=det.mpp), det, tile_size=256, windows="exact"
    )
    cell_r = det.max_cell_um / det.mpp / 2
    assert plan.window_halo >= cell_r + r
    assert plan.window_halo <= plan.grid.halo


def test_window_maps_equal_tile_maps_away_from_border(det, sample):
    """The exactness premise: a window's maps equal the whole tile's beyond the receptive radius."""
    from leukcore.detect.data import normalize_image

    r = receptive_radius(det)
    with open_slide(sample) as s:
        px = s.read_region(1, 200, 200, 384, 384)  # 0.5 um/px level, real four-class field
    x = normalize_image(px)
    p_tile, d_tile = det.predict_maps(x[None])
    y0, x0, y1, x1 = 96, 128, 288, 320  # window origin on the pooling grid
    p_win, d_win = det.predict_maps(x[None, y0:y1, x0:x1])
    inner = (slice(r + 1, (y1 - y0) - r - 1), slice(r + 1, (x1 - x0) - r - 1))
    ref_p = p_tile[0, y0:y1, x0:x1][inner]
    np.testing.assert_allclose(p_win[0][inner], ref_p, atol=1e-4)
    np.testing.assert_allclose(d_win[0][inner], d_tile[0, y0:y1, x0:x1][inner], atol=1e-3, rtol=1e-4)
    # and the border band does differ (the test would notice a window cut too tight)
    assert np.abs(p_win[0, :4] - p_tile[0, y0 : y0 + 4, x0:x1]).max() > 1e-4


def test_windows_geometry_on_real_slide(det, sample):
    with open_slide(sample) as s:
        plan = plan_detection(s, det, tile_size=256)
    assert plan.blocks is not None and 0 < plan.blocks.mean() < 1
    n_win, n_split = _check_windows(plan)
    assert n_split > 0, "no tile was cut into windows: the test does not exercise them"
    # tile flags are consistent across tilings: a 512 tile runs iff one of its 256 sub-tiles does
    with open_slide(sample) as s:
        big = plan_detection(s, det, tile_size=512)
    for t in big.grid:
        subs = plan.grid.tiles_touching(*t.core)
        assert big.run[t.index] == plan.run[subs].any()


def test_windows_find_same_cells_as_whole_tiles(det, sample):
    """Shipped network, real sample slide: exact windows vs. whole candidate tiles (cells centred in candidate blocks)."""
    region = (0, 1860, 930, 3260)  # three sparse BCCD fields + three four-class fields (level-0 px)
    with open_slide(sample) as s:
        win = detect_cells(s, det, tile_size=256, windows="exact", region=region)
        whole = detect_cells(s, det, tile_size=256, windows=False, region=region)
        plan = plan_detection(s, det, tile_size=256, region=region, windows="exact")
    assert win.meta["windows"] and not whole.meta["windows"]
    assert win.meta["px_run"] < 0.9 * whole.meta["px_run"]  # windows did save pixels here
    cw = whole.df[["centroid_y", "centroid_x"]].to_numpy()
    in_block = in_marked_block(plan, (cw - np.array(region[:2]) + 0.5) / plan.ds - 0.5)
    ref = cw[in_block]
    got = win.df[["centroid_y", "centroid_x"]].to_numpy()
    assert len(ref) >= 12  # 17 cells with wbc-stardist v3 (22 with v2)
    assert len(got) == len(ref)
    d, _ = _match(got, ref)
    assert np.quantile(d, 0.99) < 0.01 and d.max() < 6.0  # level-0 px (0.25 um/px)


@pytest.mark.parametrize("tiles", [(64, 128, 1024)])
def test_windows_seams_same_cells_for_any_tile_size(tiles):
    """Oracle network: with skipping + windows every tile size gives the same cells, all discs found."""
    img, cents = disc_slide(shape=(700, 900), n=12, seed=3)
    res = [
        detect_cells(Slide.from_array(img, mpp=0.5), OracleDetector(), tile_size=ts, skip_empty=True) for ts in tiles
    ]
    for r in res:
        assert r.meta["windows"]
        assert len(r) == len(cents)
        d, _ = _match(r.df[["centroid_y", "centroid_x"]].to_numpy(), cents[:, :2])
        assert np.median(d) < 1.0
    ref = res[0].df[["centroid_y", "centroid_x"]].to_numpy()
    for r in res[1:]:
        d, _ = _match(r.df[["centroid_y", "centroid_x"]].to_numpy(), ref)
        assert d.max() < 1e-3  # float32 polygon rounding only
    # sparse discs: the windows read well under the whole tiles
    whole = detect_cells(Slide.from_array(img, mpp=0.5), OracleDetector(), tile_size=1024, skip_empty=False)
    assert res[-1].meta["px_run"] < 0.6 * whole.meta["px_run"]


def test_windows_keep_progress_cancel_and_partial():
    img, _ = disc_slide(shape=(700, 900), n=25, seed=3)
    events = []
    from leukcore.progress import CancelToken

    tok = CancelToken()

    def prog(ev):
        events.append(ev)
        if ev.done >= 4:
            tok.cancel()

    t = detect_cells(
        Slide.from_array(img, mpp=0.5), OracleDetector(), tile_size=128, batch_size=2, progress=prog, cancel=tok
    )
    assert t.partial and t.meta["windows"]
    assert [e.done for e in events] == sorted(e.done for e in events)
    assert events[0].total == t.meta["tiles_run"]
    assert 0 < t.meta["windows_run"]


def test_predict_in_strips_equals_one_pass(det, sample):
    """A window over the pixel budget is computed in strips with a receptive-field margin: same maps."""
    from leukcore.detect.data import normalize_image
    from leukcore.detect.predict import predict_in_strips

    with open_slide(sample) as s:
        x = normalize_image(s.read_region(1, 100, 100, 384, 256))
    p_ref, d_ref = det.predict_maps(x[None])
    calls = []
    real = det.predict_maps

    class Counting:  # same network, records each forward's height
        multiple = det.multiple

        def predict_maps(self, b):
            calls.append(b.shape[1])
            return real(b)

    c = Counting()
    from leukcore.detect import receptive

    receptive._RF_CACHE[c] = receptive_radius(det)
    p, d = predict_in_strips(c, x, budget=256 * 160)
    assert len(calls) >= 3 and max(calls) * 256 <= 256 * 160  # several strips, each within budget
    np.testing.assert_allclose(p, p_ref, atol=1e-4)
    np.testing.assert_allclose(d, d_ref, atol=1e-3, rtol=1e-4)
    calls.clear()
    predict_in_strips(c, x, budget=384 * 256)  # within budget: one pass
    assert calls == [384]


# ------------------------------------------------------------------ windows="tight" (per-cell windows)
def test_tight_windows_geometry_and_margin(det, sample):
    from leukcore.detect.predict import TIGHT_BLOCK
    from leukcore.detect.receptive import TIGHT_MARGIN

    with open_slide(sample) as s:
        exact = plan_detection(s, det, tile_size=256, windows="exact")
        tight = plan_detection(s, det, tile_size=256, windows="tight")
        default = plan_detection(s, det, tile_size=256)
    r = receptive_radius(det)
    assert tight.window_mode == "tight" and exact.window_mode == "exact"
    assert default.window_mode == "tight"  # windows=True means per-cell windows
    assert tight.block == TIGHT_BLOCK
    assert r + TIGHT_MARGIN <= tight.window_halo < r + TIGHT_MARGIN + tight.grid.multiple
    assert tight.window_halo < exact.window_halo
    # fewer candidate pixels (smaller blocks, a nucleus-to-centroid radius instead of half the halo)
    assert tight.blocks.mean() < exact.blocks.mean()
    n_win, n_split = _check_windows(tight)
    assert n_split > 0
    # tight never runs a tile the exact plan skips
    assert not (tight.run & ~exact.run).any()


def test_tight_windows_same_cells_as_full_path_and_seams(det, sample):
    """Real sample slide (32 real fields): the tight windows find the full path's cells, for any tile size."""
    region = (0, 0, 1400, 3000)
    with open_slide(sample) as s:
        full = detect_cells(s, det, tile_size=512, skip_empty=False, region=region)
        res = {ts: detect_cells(s, det, tile_size=ts, windows="tight", region=region) for ts in (256, 512, 1024)}
    ref = full.df[["centroid_y", "centroid_x"]].to_numpy()
    assert len(ref) >= 30
    got = res[512].df[["centroid_y", "centroid_x"]].to_numpy()
    assert res[512].meta["window_mode"] == "tight"
    assert res[512].meta["px_run"] < full.meta["px_run"]  # a packed field mosaic: little to skip
    d, _ = _match(ref, got)
    assert (d < 1.0).mean() >= 0.97  # relative recall vs the full path
    for ts in (256, 1024):
        other = res[ts].df[["centroid_y", "centroid_x"]].to_numpy()
        assert len(other) == len(got)
        d, _ = _match(other, got)
        assert d.max() < 1e-3  # seams exact


def test_bad_windows_value(det):
    with pytest.raises(ValueError, match="windows"):
        plan_detection(Slide.from_array(np.full((64, 64, 3), 230, np.uint8), mpp=det.mpp), det, windows="loose")


def test_windows_side_by_side_same_cells_as_one_thread(sample, monkeypatch):
    """Two threads run small windows side by side (one core each); the cells equal the one-thread run's."""
    from leukcore.detect import Detector
    from leukcore.detect.model import Detector as D

    one = Detector.load("wbc-stardist", device="cpu", threads=1)
    two = Detector.load("wbc-stardist", device="cpu", threads=2)
    if two.backend != "onnx":
        pytest.skip("onnxruntime not installed: the side-by-side path is the ONNX Runtime one")
    assert one.map_workers() == 1 and two.map_workers() == 2
    calls = []
    real = D.predict_maps_raw

    def counting(self, batch, one_core=False):
        if one_core:
            calls.append(batch.shape)
        return real(self, batch, one_core=one_core)

    monkeypatch.setattr(D, "predict_maps_raw", counting)
    region = (0, 0, 1400, 3000)
    with open_slide(sample) as s:
        # 256 px tiles: a packed field mosaic runs most tiles whole, and a whole 256 px tile is a small input
        a = detect_cells(s, one, windows="tight", region=region, tile_size=256)
        assert not calls  # one thread: no side-by-side runs
        b = detect_cells(s, two, windows="tight", region=region, tile_size=256)
    assert len(calls) > 1  # the windows went through the one-core session
    assert len(a) == len(b) >= 30
    np.testing.assert_array_equal(
        a.df[["centroid_y", "centroid_x"]].to_numpy(), b.df[["centroid_y", "centroid_x"]].to_numpy()
    )
    np.testing.assert_array_equal(a.df["score"].to_numpy(), b.df["score"].to_numpy())
