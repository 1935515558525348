"""End to end with the REAL shipped detector (wbc-stardist) and classifier (all-binary, else all-4class) on a small
real-content slide (a mosaic of bundled, redistributable real smear fields), through every output format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from leukcore.progress import CancelToken

pytestmark = pytest.mark.slow


def _classifier() -> str:
    """The shipped classifier to run: all-binary (the default) or else all-4class."""
    from leukcore.models.registry import list_models

    have = set(list_models())
    if "wbc-stardist" not in have:
        pytest.skip("shipped detector wbc-stardist not available")
    for name in ("all-binary", "all-4class"):
        if name in have:
            return name
    pytest.skip("no shipped classifier available")


def _require_models():
    _classifier()


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory):
    """2 x 3 mosaic of bundled real fields (4 four-class B-ALL fields + 2 BCCD fields) at 0.25 um/px."""
    _require_models()
    from leukcore.sample import build_mosaic, bundled_fields

    fields = bundled_fields()
    four = [f for f in fields if f.source == "all4class"]
    bccd = [f for f in fields if f.source == "bccd"]
    pick = [four[0], bccd[0], four[len(four) // 2], four[-1], bccd[1], four[len(four) // 3]]
    out = tmp_path_factory.mktemp("slide") / "small.ome.tif"
    mos = build_mosaic(pick, out, grid=(2, 3), mpp=0.25, shuffle=None)
    return out, mos


@pytest.fixture(scope="module")
def run(small_slide, tmp_path_factory):
    from leukcore.pipeline import analyze_slide

    path, mos = small_slide
    out = tmp_path_factory.mktemp("out") / "a"
    events = []
    res = analyze_slide(path, "wbc-stardist", _classifier(), device="cpu", progress=events.append, out_dir=out)
    return res, out, events, mos


def test_finds_and_classifies_real_cells(run):
    res, out, events, mos = run
    t = res.table
    assert len(t) >= 4, "a mosaic of 6 real smear fields holds several white cells"
    classes = t.classes
    assert t.is_classified and set(t.df["label"]) <= set(classes) and len(classes) in (2, 4)
    probs = t.df[t.prob_columns()].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    from leukcore.classify import Classifier
    from leukcore.results import BLAST_CLASSES as _B

    clf = Classifier.load(_classifier(), device="cpu")
    rt, bt = clf.review_threshold, clf.blast_threshold
    expect = t.df["confidence"] < rt
    if bt is not None:
        expect |= t.df["label"].isin(_B) & (t.df["confidence"] < bt)
    assert (t.df["review"] == expect).all()  # the card's review rule
    # annotated BCCD white cells are found: most WBC boxes hold a detected centroid
    boxes = [b for f in mos.fields for b in f["wbc_boxes"]]
    cy, cx = t.df["centroid_y"].to_numpy(), t.df["centroid_x"].to_numpy()
    hit = [((cy >= b[0]) & (cy < b[2]) & (cx >= b[1]) & (cx < b[3])).any() for b in boxes]
    assert boxes and np.mean(hit) >= 0.5
    s = res.summary
    assert s["cells"] == len(t) and sum(s["counts"].values()) == len(t)
    from leukcore.results import BLAST_CLASSES

    n_blast = sum(v for k, v in s["counts"].items() if k in BLAST_CLASSES)
    assert s["blast_percent_all_cells"] == pytest.approx(100 * n_blast / len(t), abs=1e-3)
    confident = t.df[~t.df["review"]]
    if len(confident):
        assert s["blast_percent"] == pytest.approx(100 * confident["label"].isin(BLAST_CLASSES).mean(), abs=1e-3)
    assert s["review"] == int(t.df["review"].sum())
    assert s["models"]["detector"]["name"] == "wbc-stardist" and s["models"]["detector"]["sha256"]
    assert s["models"]["classifier"]["name"] == _classifier() and s["models"]["classifier"]["version"] is not None
    assert s["mpp"] == {"value": 0.25, "source": "metadata", "spread": None, "n_cells": None}
    assert s["timings"]["detect_s"] > 0 and s["timings"]["classify_s"] > 0 and s["timings"]["efficiency"] > 0
    assert not s["partial"] and s["complete"] and s["leukcore_version"]
    stages = {e.stage for e in events}
    assert {"detect", "classify", "write"} <= stages


def test_classify_events_carry_live_labels(run):
    """Each classified batch reports its labels: summed over the run they are the final counts."""
    res, out, events, mos = run
    live = [lab for ev in events if ev.stage == "classify" for lab in ev.data.get("labels", [])]
    assert len(live) == len(res.table)
    final = res.table.counts()
    assert {c: live.count(c) for c in final} == final


def test_every_output_reads_back(run, small_slide):
    import pandas as pd
    import zarr
    from PIL import Image

    res, out, _, _ = run
    t = res.table
    # parquet with pandas
    df = pd.read_parquet(out / "cells.parquet")
    assert len(df) == len(t) and list(df["cell_id"]) == list(range(1, len(t) + 1))
    for c in [
        "centroid_y",
        "centroid_x",
        "centroid_y_um",
        "centroid_x_um",
        "polygon",
        "label",
        "confidence",
        "review",
    ] + t.prob_columns():
        assert c in df.columns, c
    assert np.allclose(df["centroid_x_um"], df["centroid_x"] * 0.25)
    assert len(df["polygon"].iloc[0]) >= 3
    # csv
    dc = pd.read_csv(out / "cells.csv")
    assert len(dc) == len(t) and (dc["label"] == df["label"]).all()
    # geojson (QuPath detections)
    gj = json.loads((out / "cells.geojson").read_text())
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == len(t)
    f0 = gj["features"][0]
    assert f0["geometry"]["type"] == "Polygon"
    ring = f0["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]
    assert f0["properties"]["objectType"] == "detection"
    assert f0["properties"]["classification"]["name"] == df["label"].iloc[0]
    assert np.mean([p[0] for p in ring[:-1]]) == pytest.approx(df["centroid_x"].iloc[0], abs=15)  # [x, y]
    # labels.ome.zarr aligned with the slide
    from leukcore.io import open_slide

    with open_slide(small_slide[0]) as s:
        shape = s.shape
    root = zarr.open_group(str(out / "labels.ome.zarr"), mode="r")
    assert root["0"].shape == shape
    assert len(root.attrs["multiscales"][0]["datasets"]) >= 2
    lab = root["0"][:]
    ids = [lab[int(round(y)), int(round(x))] for y, x in zip(df["centroid_y"], df["centroid_x"], strict=False)]
    assert np.mean(np.array(ids) == df["cell_id"].to_numpy()) >= 0.9
    # overlay + summary
    im = Image.open(out / "overlay.png")
    assert im.mode == "RGB" and max(im.size) <= 2048
    sj = json.loads((out / "summary.json").read_text())
    assert sj["complete"] and sj["counts"] == res.summary["counts"]
    assert set(sj["outputs"]) == {"parquet", "csv", "geojson", "labels", "overlay"}


def test_deterministic_bytes(run, small_slide, tmp_path):
    from leukcore.pipeline import analyze_slide

    res, out, _, _ = run
    analyze_slide(small_slide[0], "wbc-stardist", _classifier(), device="cpu", out_dir=tmp_path / "b")
    for f in ("cells.parquet", "cells.csv", "cells.geojson", "overlay.png"):
        assert (out / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    za = sorted(p.relative_to(out) for p in (out / "labels.ome.zarr").rglob("*") if p.is_file())
    zb = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b" / "labels.ome.zarr").rglob("*") if p.is_file())
    assert za == zb
    for rel in za:
        assert (out / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_cancel_after_first_batch(small_slide, tmp_path):
    from leukcore.pipeline import analyze_slide

    tok = CancelToken()

    def progress(ev):
        if ev.stage == "classify" and ev.done > 0:
            tok.cancel()

    res = analyze_slide(
        small_slide[0],
        "wbc-stardist",
        _classifier(),
        device="cpu",
        batch_size=2,
        tile_size=256,
        progress=progress,
        cancel=tok,
        out_dir=tmp_path / "c",
    )
    assert res.partial and res.summary["partial"] and not res.summary["complete"]
    assert len(res.table) >= 2 and res.table.is_classified
    assert not (tmp_path / "c" / "summary.json").exists()
    assert not any((tmp_path / "c").glob("cells.*")) if (tmp_path / "c").exists() else True


def test_cli_analyze(small_slide, tmp_path, capsys):
    from leukcore.cli import main

    clf = _classifier()
    rc = main(["analyze", str(small_slide[0]), "-o", str(tmp_path / "o"), "--device", "cpu", "--quiet", "--model", clf])
    assert rc == 0
    outp = capsys.readouterr().out
    assert "cells:" in outp and ("ALL" in outp if clf == "all-binary" else "Benign" in outp)
    assert (tmp_path / "o" / "summary.json").exists()
    bad = tmp_path / "bad.ome.tif"
    bad.write_bytes(b"not a tiff at all")
    rc = main(["analyze", str(bad), "-o", str(tmp_path / "o2"), "--device", "cpu", "--quiet"])
    assert rc == 2
    assert "bad.ome.tif" in capsys.readouterr().err
    assert not (tmp_path / "o2" / "summary.json").exists()
