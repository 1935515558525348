"""The adjudicated four-class reference (benchmarks/adjudicate_fourclass.py): decisions applied as written."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def adj():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("adjudicate_fourclass", BENCH / "adjudicate_fourclass.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.path.remove(str(BENCH))


def _labels():
    lab = np.zeros((40, 40), np.int32)
    lab[5:12, 5:12] = 1  # a fragment the reviewer drops
    lab[20:30, 20:30] = 2  # a cell kept
    lab[32:35, 2:5] = -1  # an ignored fragment inside a missed cell
    return lab


def test_drop_turns_the_instance_into_ignore_and_add_claims_background_and_ignore(adj):
    out = adj.adjudicate(_labels(), {"drop": [[8, 8]], "add": [[33, 3, 4], [25, 25, 3]], "ignore": [[2, 35, 2]]})
    assert (out[5:12, 5:12] == -1).all()
    assert (out[20:30, 20:30] == 2).all()  # an added disc never takes another instance's pixels
    new = out[33, 3]
    assert new > 2 and (out[32:35, 2:5] == new).all()  # the ignored fragment becomes part of the added cell
    assert out[2, 35] == -1 and out[2, 30] == 0
    assert sorted(np.unique(out[out > 0]).tolist()) == [2, 3]  # 1 dropped; the disc inside cell 2 adds nothing


def test_apply_turns_ids_into_coordinates_and_keeps_hand_read_cells(adj, tmp_path):
    review = {
        "model": "m",
        "prob": 0.3,
        "fields": {
            "a.jpg": {"g": [[8, 8, 49]], "c": [[33.0, 3.0, 4.0], [1.0, 1.0, 2.0]]},
            "b.jpg": {"g": [], "c": []},
        },
    }
    (tmp_path / "r.json").write_text(json.dumps(review))
    (tmp_path / "d.json").write_text(
        json.dumps({"a.jpg": {"drop": ["g0"], "add": ["c0", [10, 10, 3]], "ignore": ["c1"]}})
    )
    ref = tmp_path / "ref.json"
    counts = adj.apply(tmp_path / "r.json", tmp_path / "d.json", ref, "note")
    assert counts == {"drop": 1, "add": 2, "ignore": 1}
    fields = json.loads(ref.read_text())["fields"]
    assert fields["a.jpg"]["drop"] == [[8, 8]]
    assert fields["a.jpg"]["add"] == [[33.0, 3.0, 4.0], [10.0, 10.0, 3.0]]
    assert fields["b.jpg"] == {"drop": [], "add": [], "ignore": []}  # reviewed, nothing to change


def test_apply_refuses_decisions_for_fields_it_did_not_review(adj, tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"model": "m", "prob": 0.3, "fields": {"a.jpg": {"g": [], "c": []}}}))
    (tmp_path / "d.json").write_text(json.dumps({"z.jpg": {"add": ["c0"]}}))
    with pytest.raises(ValueError, match="z.jpg"):
        adj.apply(tmp_path / "r.json", tmp_path / "d.json", tmp_path / "ref.json", "")


def test_a_partly_adjudicated_set_is_refused(adj, tmp_path, monkeypatch):
    items = [SimpleNamespace(name=f"f{i}.jpg", image=np.zeros((4, 4, 3), np.uint8), labels=_labels()) for i in range(3)]
    monkeypatch.setattr(adj, "val_items", lambda data, limit: items[:limit])
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"fields": {"f0.jpg": {}, "f1.jpg": {"drop": [[8, 8]]}}}))
    pairs = adj.adjudicated_pairs("unused", 2, ref)
    assert (pairs[1][1][1][5:12, 5:12] == -1).all() and (pairs[0][1][1] == _labels()).all()
    with pytest.raises(ValueError, match="no decision for 1 of 3 fields"):
        adj.adjudicated_pairs("unused", 3, ref)


def test_the_shipped_reference_is_consistent_with_its_decisions(adj):
    ref = json.loads(adj.REFERENCE.read_text())
    assert len(ref["fields"]) == 60
    for key in ("drop", "add", "ignore"):
        assert ref["counts"][key] == sum(len(f[key]) for f in ref["fields"].values())
    assert all(len(p) == 3 and p[2] > 0 for f in ref["fields"].values() for p in f["add"] + f["ignore"])


def test_apply_merge_adds_a_candidates_decisions_to_the_reference(adj, tmp_path):
    """``apply --merge``: a second review (another model's disagreements) extends the reference, counts summed."""
    ref = tmp_path / "ref.json"
    old = {
        "about": "first",
        "proposed_by": {"model": "v6", "prob": 0.3},
        "counts": {"drop": 1, "add": 1, "ignore": 0},
        "fields": {"a.jpg": {"drop": [[8, 8]], "add": [[1.0, 1.0, 2.0]], "ignore": []}},
    }
    ref.write_text(json.dumps(old))
    review = {"model": "cand", "prob": 0.6, "fields": {"a.jpg": {"g": [], "c": [[20.0, 20.0, 5.0]]}, "b.jpg": {}}}
    (tmp_path / "r.json").write_text(json.dumps(review))
    (tmp_path / "d.json").write_text(json.dumps({"a.jpg": {"ignore": ["c0"]}}))
    counts = adj.apply(tmp_path / "r.json", tmp_path / "d.json", ref, "second", merge=True)
    got = json.loads(ref.read_text())
    assert counts == {"drop": 0, "add": 0, "ignore": 1}
    assert got["counts"] == {"drop": 1, "add": 1, "ignore": 1}
    assert got["fields"]["a.jpg"] == {"drop": [[8, 8]], "add": [[1.0, 1.0, 2.0]], "ignore": [[20.0, 20.0, 5.0]]}
    assert [p["model"] for p in got["proposed_by"]] == ["v6", "cand"] and got["about"].startswith("first")
