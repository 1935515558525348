"""Corrections are data (issue 16): corrections.parquet beside the results, undo / redo, the reviewed table
(both calls kept, counts through CellTable), reopening restores the review exactly, stale corrections are
refused, and ``leuk train`` learns from corrected cells re-read from the slide (a tiny end-to-end run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from leukcore.results import CellTable


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def sample_results(tmp_path_factory):
    """A results folder of the bundled sample slide (a region), made by the pipeline with the contract-obeying
    fake models of tests/test_outputs_unchanged.py (no network runs: fast)."""
    from test_outputs_unchanged import case_fakes_sample

    out = tmp_path_factory.mktemp("corr") / "sample"
    case_fakes_sample(out)
    return out


@pytest.fixture
def results(sample_results, tmp_path):
    """A private copy of the sample results (tests write corrections into it)."""
    dst = tmp_path / "res"
    shutil.copytree(sample_results, dst)
    return dst


def _table(n=6):
    polys = [np.array([[y, 0], [y, 4], [y + 4, 4], [y + 4, 0]], np.float32) for y in range(0, 10 * n, 10)]
    t = CellTable.from_detections(
        np.array([[y + 2, 2] for y in range(0, 10 * n, 10)], float), polys, np.ones(n, np.float32), mpp=0.5
    )
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.55, 0.45], [0.95, 0.05], [0.1, 0.9], [0.7, 0.3]][:n])
    t.set_classification(p, ["ALL", "normal"], review_threshold=0.6)
    return t


# ------------------------------------------------------------------ pure data model
def test_apply_corrections_keeps_both_calls_and_counts_through_celltable():
    from leukcore.corrections import REVIEW_LABEL, CorrectionsError, apply_corrections
    from leukcore.results import blast_percent

    t = _table()
    assert t.df["review"].tolist() == [False, False, True, False, False, False]
    r = apply_corrections(t, {1: "normal", 3: "ALL", 4: REVIEW_LABEL})
    assert r.df["model_label"].tolist() == t.df["label"].tolist()
    assert r.df["model_review"].tolist() == t.df["review"].tolist()
    assert r.df["reviewer_label"].tolist() == ["normal", None, "ALL", "review", None, None]
    # reviewed call: the reviewer's class (not in review), a review cell keeps the model's label
    assert r.df["label"].tolist() == ["normal", "normal", "ALL", "ALL", "normal", "ALL"]
    assert r.df["review"].tolist() == [False, False, False, True, False, False]
    assert r.counts() == {"ALL": 3, "normal": 3}
    assert r.confident_counts() == {"ALL": 2, "normal": 3}
    s = r.summary()
    assert s["review"] == 1 and s["blast_percent"] == pytest.approx(40.0)
    assert s["blast_percent"] == pytest.approx(blast_percent(r.df["label"], r.df["review"]))
    assert r.meta["review_state"]["corrected"] == 3
    # the model's table is untouched; re-applying starts from the model's calls
    assert "model_label" not in t.df and t.df["label"].tolist()[0] == "ALL"
    again = apply_corrections(r, {2: "ALL"})
    assert again.df["reviewer_label"].tolist() == [None, "ALL", None, None, None, None]
    assert again.df["label"].tolist()[0] == "ALL" and bool(again.df["review"].iat[2])
    no = apply_corrections(t, None)
    assert no.df["label"].tolist() == t.df["label"].tolist() and no.df["reviewer_label"].isna().all()
    with pytest.raises(CorrectionsError, match="not classes"):
        apply_corrections(t, {1: "Pro"})


def test_history_undo_redo_and_listeners(tmp_path):
    from leukcore.corrections import CORRECTIONS_NAME, Corrections, CorrectionsError, read_corrections

    t = _table()
    path = tmp_path / CORRECTIONS_NAME
    c = Corrections(t, {}, path=path, reviewer="amy")
    seen = []
    c.listeners.append(seen.append)
    assert not path.exists() and not c.can_undo
    assert c.set([1, 2], "normal", time="t1") == [1, 2]
    assert read_corrections(path)["cell_id"].tolist() == [1, 2]  # saved on every change
    assert c.set([2], "normal") == []  # no change, no step
    assert c.set(3, "review", reviewer="bob", time="t2") == [3]
    assert c.label(3) == "review" and c.label(4) == "ALL" and c.model_label(1) == "ALL"
    assert c.set([1], "ALL", time="t3") == [1]  # a cell corrected twice
    assert c.get(1).reviewer_label == "ALL" and c.get(1).model_label == "ALL"
    assert c.undo() == [1] and c.get(1).reviewer_label == "normal"
    assert c.undo() == [3] and 3 not in c
    assert c.can_redo and c.redo() == [3] and c.get(3).reviewer == "bob"
    c.set([4], "normal")  # a new step drops the redo stack
    assert not c.can_redo and c.redo() == []
    assert c.clear([1, 2]) == [1, 2] and len(c) == 2
    assert c.undo() == [2, 1] and len(c) == 4
    assert seen == [[1, 2], [3], [1], [1], [3], [3], [4], [1, 2], [2, 1]]
    assert read_corrections(path)["cell_id"].tolist() == [1, 2, 3, 4]
    assert not list(tmp_path.glob(".*tmp*"))  # atomic: no temporaries left
    with pytest.raises(CorrectionsError):
        c.set([99], "ALL")
    with pytest.raises(CorrectionsError):
        c.set([1], "Benign")
    while c.undo():
        pass
    assert len(c) == 0 and read_corrections(path).empty


# ------------------------------------------------------------------ a real results folder
def test_reopening_restores_the_review_exactly(results):
    from leukcore.corrections import COLUMNS, CORRECTIONS_NAME, Corrections, load_reviewed, read_corrections
    from leukcore.export.kinds import read_results

    table, summary = read_results(results)
    n = len(table)
    assert n > 10
    c = Corrections.open(results, reviewer="amy")
    assert len(c) == 0 and c.path == results / CORRECTIONS_NAME
    c.set([1, 2], "normal")
    c.set([3], "review")
    c.set([5], "normal")
    c.undo()
    before = c.reviewed()
    frame = c.frame()

    df = read_corrections(results)
    assert list(df.columns) == COLUMNS and df["cell_id"].tolist() == [1, 2, 3]
    row = df.iloc[0]
    assert row["reviewer"] == "amy" and row["model_label"] == table.df["label"].iat[0]
    assert row["slide"] == summary["slide"]["name"] and row["slide_path"] == summary["slide"]["path"]
    assert row["model"] == "fake-clf" and row["model_sha256"] == "1" * 64
    assert row["results_digest"] == summary["provenance"]["digest"] and len(row["slide_fingerprint"]) == 64
    assert row["centroid_y"] == pytest.approx(table.df["centroid_y"].iat[0])
    assert "T" in row["time"] and row["time"].endswith("+00:00")

    again = Corrections.open(results)  # a new session
    assert again.frame().equals(frame)
    after = again.reviewed()
    cols = ["cell_id", "label", "review", "model_label", "model_review", "reviewer_label", "reviewer"]
    assert after.df[cols].equals(before.df[cols])
    assert after.summary() == before.summary()
    m, r, s, d = load_reviewed(results)
    assert r.df[cols].equals(before.df[cols]) and len(d) == 3 and s == summary and len(m) == n
    assert r.df["reviewer_label"].iloc[:3].tolist() == ["normal", "normal", "review"]
    model_review = set(table.df.loc[table.df["review"], "cell_id"])
    assert r.summary()["review"] == len((model_review - {1, 2}) | {3})


def test_corrections_of_another_run_are_refused(results):
    from leukcore.corrections import Corrections, CorrectionsError, load_reviewed

    c = Corrections.open(results, reviewer="amy")
    c.set([1], "normal")
    s = json.loads((results / "summary.json").read_text())
    s["provenance"]["digest"] = "f" * 64  # the same cells re-run (slide moved / touched): still valid
    s["provenance"]["input"]["path"] = "/elsewhere/slide.ome.tif"
    (results / "summary.json").write_text(json.dumps(s))
    assert Corrections.open(results).label(1) == "normal"
    s["models"]["classifier"]["sha256"] = "2" * 64  # re-analysed with other weights
    (results / "summary.json").write_text(json.dumps(s))
    with pytest.raises(CorrectionsError, match="classifier weights"):
        Corrections.open(results)
    with pytest.raises(CorrectionsError):
        load_reviewed(results)
    s["models"]["classifier"]["sha256"] = "1" * 64
    s["provenance"]["input"]["sample_sha256"] = "0" * 64  # another slide content
    (results / "summary.json").write_text(json.dumps(s))
    with pytest.raises(CorrectionsError, match="another slide"):
        Corrections.open(results)


def test_moved_cells_are_refused(results):
    import pandas as pd

    from leukcore.corrections import CORRECTIONS_NAME, Corrections, CorrectionsError

    c = Corrections.open(results, reviewer="amy")
    c.set([4], "normal")
    df = pd.read_parquet(results / CORRECTIONS_NAME)
    df.loc[0, "centroid_y"] += 25.0
    df.to_parquet(results / CORRECTIONS_NAME)
    with pytest.raises(CorrectionsError, match="not where they were"):
        Corrections.open(results)


# ------------------------------------------------------------------ corrections as training data
def _shapes(root: Path, n=6):
    """Tiny two-class image set: ALL = round dark nucleus, normal = square (centred, mpp 0.5)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    for c in ("ALL", "normal"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = np.full((48, 48, 3), 225, np.uint8)
            r = rng.integers(9, 13)
            m = (
                ((yy - 24) ** 2 + (xx - 24) ** 2 <= r * r)
                if c == "ALL"
                else ((abs(yy - 24) <= r * 0.85) & (abs(xx - 24) <= r * 0.85))
            )
            img[m] = rng.integers(40, 200, 3)
            Image.fromarray(img).save(root / c / f"{c}{i}.png")


@pytest.mark.slow
def test_leuk_train_on_corrections_end_to_end(results, tmp_path, monkeypatch):
    """Two corrected cells (and one put in review, skipped) of a slide's results join a tiny training run as
    extra training data; the crops are the slide's pixels at the cells' centroids; the card names them."""
    import yaml

    from leukcore.classify.crops import extract_crops
    from leukcore.classify.geometry import CropSpec
    from leukcore.cli import main
    from leukcore.corrections import Corrections
    from leukcore.export.kinds import read_results
    from leukcore.io import open_slide
    from leukcore.train.config import load_config
    from leukcore.train.prepare import prepare

    monkeypatch.setenv("LEUK_CACHE", str(tmp_path / "cache"))
    table, summary = read_results(results)
    c = Corrections.open(results, reviewer="amy")
    c.set([2], "normal")
    c.set([6], "ALL")
    c.set([9], "review")
    data = tmp_path / "shapes"
    _shapes(data)
    cfg = {
        "name": "lab-adapted",
        "classes": ["ALL", "normal"],
        "data": {
            "datasets": [{"reader": "folder", "root": str(data), "mpp": 0.5, "kind": "cell"}],
            "finder": "centre",
            "test_frac": 0.25,
            "val_frac": 0.2,
        },
        "model": {"imagenet": "none", "input": {"size": 32, "crop_um": 20.0, "mode": "lstd"}},
        "train": {
            "device": "cpu",
            "views": 1,
            "num_workers": 0,
            "phase1": {"epochs": 1, "lr": 0.01, "batch_size": 64, "patience": 1},
            "phase2": {"epochs": 1, "lr": 0.0003, "batch_size": 64, "finetune_stages": 1, "patience": 1},
        },
        "eval": {"n_boot": 10, "stain_swap": False, "tta": [None]},
    }
    cpath = tmp_path / "lab.yaml"
    cpath.write_text(yaml.safe_dump(cfg))

    # the prepared cells: two correction rows, in training, labelled by the reviewer, cropped from the slide
    report: dict = {}
    lcfg = load_config(cpath)
    lcfg["data"]["datasets"].append({"reader": "corrections", "root": str(results.parent)})
    df, classes, spec, cells = prepare(lcfg, report=report)
    corr = df[df["source"] == "corrections"]
    assert sorted(corr["cell_id"]) == [2, 6] and (corr["split"] == "train").all()
    assert dict(zip(corr["cell_id"], corr["label"], strict=False)) == {2: "normal", 6: "ALL"}
    assert report["corrections"][0]["cells"] == 2 and report["corrections"][0]["skipped_review"] == 1
    rows = [int(np.flatnonzero(cells["row"] == i)[0]) for i in corr.index]
    assert [classes[k] for k in cells["label"][rows]] == list(corr["label"])
    pos = [int(np.flatnonzero(table.df["cell_id"] == cid)[0]) for cid in corr["cell_id"]]
    with open_slide(summary["slide"]["path"], mpp=summary["mpp"]["value"]) as slide:
        want = extract_crops(slide, table, CropSpec.from_card(spec.to_card()), rows=pos)
    assert np.array_equal(cells["crops"][rows], want)

    # leuk train, as a lab runs it: the config plus --corrections (the same as a corrections entry in the config)
    run = tmp_path / "run"
    assert (
        main(
            ["train", str(cpath), "--corrections", str(results.parent), "-o", str(run), "--no-eval", "--device", "cpu"]
        )
        == 0
    )
    card = yaml.safe_load((run / "model.yaml").read_text())
    used = card["training"]["data"]["corrections"][0]
    assert used["cells"] == 2 and used["folders"][0]["results"] == str(results)
    assert used["folders"][0]["corrections_sha256"] == c.digest()
    assert {"reader": "corrections", "root": str(results.parent)} in card["training"]["config"]["data"]["datasets"]
    import pandas as pd

    splits = pd.read_csv(run / "splits.csv")
    assert (splits.loc[splits["source"] == "corrections", "split"] == "train").sum() == 2


def test_corrections_reader_errors(results, tmp_path):
    from leukcore.corrections import Corrections
    from leukcore.train.datasets import DatasetError, read_corrections

    with pytest.raises(DatasetError, match="no corrections.parquet"):
        read_corrections(tmp_path / "nowhere")
    c = Corrections.open(results, reviewer="amy")
    c.set([3], "review")
    with pytest.raises(DatasetError, match="nothing to train on"):
        read_corrections(results)
    c.set([4], "normal")
    s = json.loads((results / "summary.json").read_text())
    s["slide"]["path"] = str(tmp_path / "moved.ome.tif")
    s["slide"]["name"] = "moved.ome.tif"
    (results / "summary.json").write_text(json.dumps(s))
    with pytest.raises(DatasetError, match="not found"):
        read_corrections(results)


def test_review_groups_for_the_gallery():
    from leukcore.corrections import apply_corrections, review_groups

    t = _table()  # confidences .9 .8 .55 .95 .9 .7; cell 3 (row 2) in review
    g = review_groups(t)
    assert list(g) == ["ALL", "normal", "review"]
    assert g["ALL"].tolist() == [5, 0, 3] and g["normal"].tolist() == [1, 4] and g["review"].tolist() == [2]
    r = apply_corrections(t, {3: "normal", 1: "review"})
    g = review_groups(r)
    assert g["ALL"].tolist() == [5, 3] and g["normal"].tolist() == [2, 1, 4] and g["review"].tolist() == [0]
    assert sum(len(v) for v in g.values()) == len(t)
