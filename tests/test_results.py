"""The per-cell table: construction, classification, counts and round trips."""

import json

import numpy as np
import pandas as pd
import pytest

from leukcore.results import CellTable, atomic_path, class_color, polygon_area


def _square(cy, cx, r):
    return np.array([[cy - r, cx - r], [cy - r, cx + r], [cy + r, cx + r], [cy + r, cx - r]], np.float32)


def _table(mpp=0.5):
    cents = np.array([[50.0, 20.0], [10.0, 30.0], [10.0, 5.0]])
    polys = [_square(y, x, 4) for y, x in cents]
    return CellTable.from_detections(cents, polys, np.array([0.9, 0.8, 0.7]), mpp=mpp, meta={"path": "x.tif"})


def test_from_detections_geometry_and_microns():
    t = _table()
    assert len(t) == 3
    assert list(t.df.cell_id) == [1, 2, 3]
    r = t.df.iloc[0]
    assert (r.bbox_y0, r.bbox_x0, r.bbox_y1, r.bbox_x1) == (46, 16, 55, 25)
    assert r.area_px == pytest.approx(64.0)
    assert r.centroid_y_um == pytest.approx(25.0)
    assert r.area_um2 == pytest.approx(16.0)
    assert t.meta["mpp"] == 0.5


def test_unknown_mpp_gives_nan_microns():
    t = _table(mpp=None)
    assert t.df.centroid_x_um.isna().all()
    assert t.df.area_um2.isna().all()


def test_sorted_is_deterministic_order():
    t = _table().sorted()
    assert list(zip(t.df.centroid_y, t.df.centroid_x, strict=False)) == [(10, 5), (10, 30), (50, 20)]
    assert list(t.df.cell_id) == [1, 2, 3]


def test_classification_counts_and_blasts():
    t = _table()
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.55, 0.45]])
    t.set_classification(probs, ["ALL", "normal"], review_threshold=0.6)
    assert list(t.df.label) == ["ALL", "normal", "ALL"]
    assert t.counts() == {"ALL": 2, "normal": 1}
    assert list(t.df.review) == [False, False, True]
    # the blast percentage is over confidently classified cells: the review cell is neither
    assert t.confident_counts() == {"ALL": 1, "normal": 1}
    assert t.blast_fraction() == pytest.approx(1 / 2)
    assert t.blast_fraction(confident_only=False) == pytest.approx(2 / 3)
    s = t.summary()
    assert s["blast_percent"] == pytest.approx(50.0)
    assert s["blast_percent_all_cells"] == pytest.approx(66.667, abs=1e-3)
    assert s["review"] == 1 and s["confident_counts"] == {"ALL": 1, "normal": 1}


def test_all_cells_in_review_give_no_blast_percentage():
    t = _table()
    t.set_classification(np.tile([0.55, 0.45], (3, 1)), ["ALL", "normal"], review_threshold=0.6)
    assert t.df.review.all() and t.blast_fraction() is None
    s = t.summary()
    assert s["blast_percent"] is None and s["review"] == 3 and s["blast_percent_all_cells"] == 100.0


def test_counts_list_every_class_even_zero():
    t = _table()
    t.set_classification(np.tile([0.1, 0.7, 0.1, 0.1], (3, 1)), ["Benign", "Early", "Pre", "Pro"])
    assert t.counts() == {"Benign": 0, "Early": 3, "Pre": 0, "Pro": 0}


def test_parquet_round_trip_keeps_polygons_and_meta(tmp_path):
    t = _table()
    t.set_classification(np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]]), ["ALL", "normal"])
    p = t.to_parquet(tmp_path / "cells.parquet")
    back = CellTable.read_parquet(p)
    assert len(back) == 3
    np.testing.assert_allclose(back.df.polygon[0], t.df.polygon[0])
    assert back.meta["path"] == "x.tif"
    assert back.classes == ["ALL", "normal"]
    assert list(pd.read_parquet(p).columns)[:3] == ["cell_id", "centroid_y", "centroid_x"]


def test_csv_round_trip(tmp_path):
    t = _table()
    p = t.to_csv(tmp_path / "cells.csv")
    back = CellTable.read_csv(p)
    np.testing.assert_allclose(back.df.polygon[2], t.df.polygon[2])
    np.testing.assert_allclose(back.df.centroid_x, t.df.centroid_x)


def test_concat_renumbers():
    a, b = _table(), _table()
    c = CellTable.concat([a, b])
    assert list(c.df.cell_id) == list(range(1, 7))


def test_empty_table_round_trip(tmp_path):
    t = CellTable.from_detections(np.zeros((0, 2)), [], np.zeros(0), mpp=0.5)
    assert len(t) == 0
    t.set_classification(np.zeros((0, 2)), ["ALL", "normal"])
    assert t.counts() == {"ALL": 0, "normal": 0}
    assert t.blast_fraction() is None
    t.to_csv(tmp_path / "e.csv")
    assert len(CellTable.read_csv(tmp_path / "e.csv")) == 0


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "f.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps({"ok": 1}))
    assert json.loads(target.read_text()) == {"ok": 1}


def test_polygon_area_and_colors():
    assert polygon_area(_square(0, 0, 1)) == pytest.approx(4.0)
    assert class_color("ALL") != class_color("normal")
    assert class_color("something-else") == class_color("something-else")


def test_blast_threshold_sends_unsure_blasts_to_review():
    t = _table()
    t.set_classification(
        np.array([[0.8, 0.2], [0.95, 0.05], [0.3, 0.7]]), ["ALL", "normal"], review_threshold=0.6, blast_threshold=0.9
    )
    assert list(t.df.review) == [True, False, False]
    assert t.summary()["blast_percent"] == 50.0 and t.meta["blast_threshold"] == 0.9


def test_held_for_review_is_one_rule_for_cells_and_fields():
    from leukcore.results import held_for_review

    conf, labels = [0.55, 0.8, 0.8, 0.95], ["normal", "ALL", "ALL", "ALL"]
    assert held_for_review(conf, labels, 0.6).tolist() == [True, False, False, False]
    assert held_for_review(conf, labels, 0.6, 0.9).tolist() == [True, True, True, False]
    # a field pooling several cells keeps the plain threshold
    assert held_for_review(conf, labels, 0.6, 0.9, [True, True, False, True]).tolist() == [True, True, False, False]
    assert held_for_review([], [], 0.6, 0.9).shape == (0,)
