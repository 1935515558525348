"""TileGrid: exact partition, ownership, halo rule, de-duplication."""
import numpy as np
import pytest

from leukcore.tiling import TileGrid, dedupe_points


@pytest.mark.parametrize("shape,tile,halo", [((1000, 700), 256, 32), ((97, 1203), 64, 16), ((512, 512), 512, 0),
                                             ((1, 1), 8, 4), ((300, 301), 100, 48)])
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
    assert g.tile == 256 and g.halo == 32          # rounded up to the multiple
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
        assert g[idx[i]].owns(pts[i:i + 1])[0]
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
