"""The N-cell differential (issue 16): first N cells in random / raster order, counted with the reviewed labels,
beside the whole slide; recorded beside the results."""

from __future__ import annotations

import numpy as np
import pytest

from leukcore.results import CellTable


def _grid_table(n_side=20, mpp=0.5, seed=0):
    """n_side x n_side cells on a grid (spacing 100 px = 50 um); classes drawn at random."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n_side, :n_side]
    c = np.stack([yy.ravel() * 100.0 + 50, xx.ravel() * 100.0 + 50], 1)
    polys = [np.array([[y - 3, x - 3], [y - 3, x + 3], [y + 3, x + 3], [y + 3, x - 3]], np.float32) for y, x in c]
    t = CellTable.from_detections(c, polys, np.ones(len(c), np.float32), mpp=mpp).sorted()
    p = rng.dirichlet([1, 1, 1, 1], size=len(t)).astype(np.float32)
    t.set_classification(p, ["Benign", "Early", "Pre", "Pro"], review_threshold=0.5)
    return t


def test_random_order_is_a_seeded_sample_and_counts_match_celltable():
    from leukcore.differential import breakdown, differential

    t = _grid_table()
    d = differential(t, n=100, order="random", seed=3)
    assert d["counted"] == 100 and len(set(d["cell_ids"])) == 100
    assert d == differential(t, n=100, order="random", seed=3)  # reproducible
    assert d["cell_ids"] != differential(t, n=100, order="random", seed=4)["cell_ids"]
    # the first 100 of the 200-cell differential are the 100-cell one (the same counting order)
    assert differential(t, n=200, order="random", seed=3)["cell_ids"][:100] == d["cell_ids"]
    s = d["sample"]
    sub = CellTable(t.df[t.df["cell_id"].isin(d["cell_ids"])], t.meta)
    assert s["counts"] == sub.confident_counts()
    assert s["review"] == int(sub.df["review"].sum())
    assert sum(s["counts"].values()) + s["review"] == 100
    assert sum(s["percent"].values()) == pytest.approx(100.0, abs=0.01)
    assert s["blast_percent"] == sub.summary()["blast_percent"]
    assert d["whole_slide"] == breakdown(t) and d["whole_slide"]["cells"] == 400
    assert not d["reviewed"] and d["reviewed_in_sample"] == 0


def test_raster_order_reads_strips_left_to_right():
    from leukcore.differential import differential, pick_cells

    t = _grid_table()  # 20 x 20 cells, 50 um apart
    rows = pick_cells(t, 30, "raster", strip_um=150.0)  # strips of 150 um = 300 px = 3 grid rows
    y = t.df["centroid_y"].to_numpy()[rows]
    x = t.df["centroid_x"].to_numpy()[rows]
    assert set(np.floor(y / 300)) == {0.0}  # 30 cells all in the first strip (3 rows x 20)
    assert (np.diff(x) >= 0).all()  # left to right across the strip
    d = differential(t, n=1000, order="raster")
    assert d["counted"] == 400  # fewer cells than asked: all of them
    with pytest.raises(ValueError, match="order"):
        differential(t, n=100, order="spiral")
    with pytest.raises(ValueError, match="n must be"):
        differential(t, n=0)


def test_reviewed_labels_are_counted_and_recorded(tmp_path):
    from leukcore.corrections import apply_corrections
    from leukcore.differential import differential, read_differential, record_differential

    t = _grid_table()
    first = differential(t, n=10, order="raster")["cell_ids"]
    r = apply_corrections(t, {first[0]: "Pro", first[1]: "review", 399: "Benign"})
    d = differential(r, n=10, order="raster")
    assert d["cell_ids"] == first and d["reviewed"] and d["reviewed_in_sample"] == 2
    sub = r.df[r.df["cell_id"].isin(first)]
    assert d["sample"]["counts"]["Pro"] == int(((sub["label"] == "Pro") & ~sub["review"]).sum())
    assert d["sample"]["review"] == int(sub["review"].sum())
    assert bool(sub.loc[sub["cell_id"] == first[1], "review"].iat[0])
    assert read_differential(tmp_path) is None
    p = record_differential(tmp_path, d, reviewer="amy", time="2026-12-01T10:00:00+00:00")
    assert p.name == "differential.json"
    back = read_differential(tmp_path)
    assert back["reviewer"] == "amy" and back["cell_ids"] == first and back["sample"] == d["sample"]
