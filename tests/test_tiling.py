"""TileGrid: exact partition, ownership, halo rule, de-duplication."""

import numpy as np
import pytest

from leukcore.tiling import TileGrid, dedupe_points


@pytest.mark.parametrize(
    "shape,tile,halo",
    [((1000, 700), 256, 32), ((97, 1203), 64, 16), ((512, 512), 512, 0), ((1, 1), 8, 4), ((300, 301), 100, 48)],
)
def test_every_pixel_in_exactly_one_core(shape, tile, halo):
    g = TileGrid(shape, tile=tile, halo=halo)
    count = np.zeros(shape, np.int32)
    owner = np.full(shape, -1)
    for t in g:
        y0, x0, y1, x1 = t.core
        assert 0 <= y0 < y1 <= shape[0] and 0 <= x0 < x1 <= shape[1]
        count[y0:y1, x0:x1] += 1
        owner[y0:y1, x0:x1] = t.index
    assert (count == 1).all()
    np.testing.assert_array_equal(owner, g.core_map())


def test_read_region_is_core_plus_halo_and_aligned():
    g = TileGrid((1000, 700), tile=250, halo=30, multiple=8)
    assert g.tile == 256 and g.halo == 32  # rounded up to the multiple
    for t in g:
        ry0, rx0, ry1, rx1 = t.read
        y0, x0, y1, x1 = t.core
        assert ry0 == y0 - g.halo and rx0 == x0 - g.halo
        assert ry1 >= y1 + g.halo and rx1 >= x1 + g.halo
        assert ry0 % 8 == 0 and rx0 % 8 == 0
        assert (ry1 - ry0) % 8 == 0 and (rx1 - rx0) % 8 == 0


def test_ownership_unique_and_matches_owns():
    rng = np.random.default_rng(0)
    g = TileGrid((900, 1300), tile=200, halo=20)
    pts = rng.uniform([0, 0], [900, 1300], size=(2000, 2))
    pts = np.concatenate([pts, [[200, 200], [199.999, 400], [0, 0], [899.9, 1299.9]]])
    n_owners = np.zeros(len(pts), int)
    for t in g:
        n_owners += t.owns(pts)
    assert (n_owners == 1).all()
    idx = g.owners(pts)
    for i in range(len(pts)):
        assert g[idx[i]].owns(pts[i : i + 1])[0]
        assert g.owner(*pts[i]) == idx[i]
    # boundary belongs to the tile starting there
    assert g.owner(200, 200) == g.n_cols + 1


def test_halo_must_exceed_largest_object():
    with pytest.raises(ValueError, match="halo"):
        TileGrid((1000, 1000), tile=256, halo=32, max_object=40)
    TileGrid((1000, 1000), tile=256, halo=48, max_object=40)


@pytest.mark.parametrize("bad", [dict(shape=(0, 10)), dict(tile=0), dict(halo=-1)])
def test_bad_arguments(bad):
    kw = dict(shape=(100, 100), tile=32, halo=8)
    kw.update(bad)
    with pytest.raises(ValueError):
        TileGrid(kw.pop("shape"), **kw)


def test_tiles_touching():
    g = TileGrid((1000, 1000), tile=100, halo=10)
    assert g.tiles_touching(150, 150, 160, 160) == [g.n_cols + 1]
    assert sorted(g.tiles_touching(95, 95, 105, 105)) == [0, 1, g.n_cols, g.n_cols + 1]
    assert g.tiles_touching(-50, -50, -1, -1) == []


def test_dedupe_points_keeps_best_of_close_pairs():
    pts = np.array([[10, 10], [10.5, 10.2], [50, 50], [80, 80], [80.9, 80]])
    sc = np.array([0.5, 0.9, 0.7, 0.95, 0.6])
    keep = dedupe_points(pts, sc, radius=2.0)
    assert keep.tolist() == [1, 2, 3]
    assert dedupe_points(pts[:1], sc[:1], 2.0).tolist() == [0]


# ------------------------------------------------------------------ what detection does with the grid
def test_block_edge_and_tiles_with_blocks():
    from leukcore.tiling import points_in_blocks

    g = TileGrid((300, 500), tile=96, halo=16, multiple=8)
    assert g.block_edge(32) == 32 and TileGrid((300, 500), tile=40, halo=8).block_edge(32) == 8
    blocks = np.zeros((10, 16), bool)  # 32 px blocks over the 300 x 500 grid
    blocks[4, 7] = True  # pixels (128..160, 224..256): tile row 1, col 2
    run = g.tiles_with_blocks(blocks, 32)
    assert run.sum() == 1 and run[g.owner(140, 230)]
    assert points_in_blocks(np.array([[130.0, 230.0], [10.0, 10.0]]), blocks, 32).tolist() == [True, False]


def test_windows_cover_blocks_inside_the_tile():
    g = TileGrid((256, 256), tile=256, halo=32, multiple=4)
    t = g[0]
    blocks = np.zeros((16, 16), bool)
    blocks[2, 2] = blocks[12, 13] = True  # two far apart 16 px blocks -> two windows
    wins = g.windows(t, blocks, 16, halo=28)
    assert len(wins) == 2 and all(w.index == t.index for w in wins)
    for w in wins:
        assert t.core[0] <= w.core[0] < w.core[2] <= t.core[2]
        assert w.read[0] == w.core[0] - 28 and (w.read[2] - w.read[0]) % 4 == 0
    blocks[3, 3] = True  # a touching block joins the first window
    assert len(g.windows(t, blocks, 16, halo=28)) == 2
    assert g.windows(t, np.zeros((16, 16), bool), 16, halo=28) == []
    dense = np.ones((16, 16), bool)
    assert g.windows(t, dense, 16, halo=28, max_share=0.75) == [t]  # windows would read most of the tile


def test_strips_overlap_by_the_margin_and_cover_the_window():
    from leukcore.tiling import strips

    pieces = strips(400, 100, budget=100 * 120, margin=12, multiple=4)
    assert pieces[0][:2] == (0, 96) and pieces[-1][1] == 400
    covered = np.zeros(400, int)
    for y0, y1, r0, r1 in pieces:
        covered[y0:y1] += 1
        assert (r1 - r0) * 100 <= 100 * 120 and r0 == max(0, y0 - 12) and r1 == min(400, y1 + 12)
        assert (y1 - y0) % 4 == 0 or y1 == 400
    assert (covered == 1).all()
    assert strips(400, 100, budget=100 * 20, margin=12, multiple=4) is None  # too narrow: one piece


def test_grid_frame_round_trip_and_seam_guard():
    from leukcore.tiling import GridFrame, SeamGuard

    f = GridFrame((100, 40), 2.0)
    p = np.array([[0.0, 0.0], [10.5, 3.25]])
    np.testing.assert_allclose(f.to_level0(p), [[100.5, 40.5], [121.5, 47.0]])
    np.testing.assert_allclose(f.from_level0(f.to_level0(p)), p)
    g = TileGrid((200, 200), tile=100, halo=16)
    guard = SeamGuard(radius=3.0)
    a = np.array([[99.0, 50.0], [50.0, 50.0]])  # one near the seam, one in the middle
    assert guard.keep(g[0], a, np.ones(2, bool)).tolist() == [True, True]
    assert len(guard.points) == 1  # only the seam cell is remembered
    b = np.array([[100.5, 50.5], [150.0, 50.0]])  # the same seam cell seen by the tile below
    assert guard.keep(g[2], b, np.ones(2, bool)).tolist() == [False, True]
