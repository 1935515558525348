"""Pipeline plumbing with tiny contract-obeying fakes (fast): overlap queue, cancel, determinism,
atomic outputs. The real detector + classifier run in tests/test_pipeline_e2e.py."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from leukcore.progress import CancelToken
from leukcore.results import CellTable


def _disk_image(n=12, size=1500, r=9, seed=0):
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 235, np.uint8)
    yy, xx = np.mgrid[:size, :size]
    centres = []
    for i in range(n):
        cy, cx = rng.integers(40, size - 40, 2)
        col = (150, 40, 160) if i % 2 else (90, 30, 200)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img[m] = col
        centres.append((cy, cx))
    return img, centres


class FakeDetector:
    card = {"name": "fake-det", "version": 1, "task": "detection", "weights": {"sha256": "0" * 64}}
    mpp = 0.5
    device = "cpu"


def fake_iter_detect(slide, detector, *, tile_size=512, region=None, progress=None, cancel=None, **kw):
    from skimage import measure

    from leukcore.progress import emit, is_cancelled

    H, W = slide.shape
    tiles = [(y, x) for y in range(0, H, tile_size) for x in range(0, W, tile_size)]
    for i, (y, x) in enumerate(tiles):
        if is_cancelled(cancel):
            return
        img = slide.read_region(0, y, x, tile_size, tile_size)
        lab = measure.label(img.mean(axis=2) < 180)
        cents, polys = [], []
        for rp in measure.regionprops(lab):
            cy, cx = rp.centroid
            if not (0 <= cy < tile_size and 0 <= cx < tile_size):
                continue
            c = measure.find_contours(lab == rp.label, 0.5)[0]
            cents.append((cy + y, cx + x))
            polys.append(c + [y, x])
        emit(progress, "detect", i + 1, len(tiles), cells=len(cents))
        yield CellTable.from_detections(
            np.array(cents).reshape(-1, 2),
            polys,
            np.full(len(cents), 0.9, np.float32),
            mpp=slide.mpp,
            meta={"partial": False},
        )


class FakeClassifier:
    classes = ["ALL", "normal"]
    card = {"name": "fake-clf", "version": 2, "task": "classification", "weights": {"sha256": "1" * 64}}

    def __init__(self):
        from leukcore.classify.geometry import CropSpec

        self.spec = CropSpec(size=16, crop_um=12.0, mode="rgb")
        self.calls = 0

    def predict_crops(self, crops):
        self.calls += 1
        b = crops[..., 2].astype(np.float32).mean(axis=(1, 2)) / 255.0
        p = np.clip((b - 0.5) * 3 + 0.5, 0.05, 0.95)
        return np.stack([p, 1 - p], axis=1).astype(np.float32)


@pytest.fixture
def fakes(monkeypatch):
    import leukcore.detect

    monkeypatch.setattr(leukcore.detect, "iter_detect", fake_iter_detect, raising=False)
    return FakeDetector(), FakeClassifier()


@pytest.fixture
def slide():
    from leukcore.io.slide import Slide

    img, centres = _disk_image()
    s = Slide.from_array(img, mpp=0.5, chunk=512)
    s.path = "fake-slide.ome.tif"
    return s


def test_analyze_with_fakes_counts_and_outputs(fakes, slide, tmp_path):
    from leukcore.pipeline import analyze_slide

    det, clf = fakes
    res = analyze_slide(slide, det, clf, device="cpu", tile_size=512, batch_size=4, out_dir=tmp_path / "o")
    t = res.table
    assert len(t) == 12
    assert list(t.df["cell_id"]) == list(range(1, 13))
    assert set(t.df["label"]) <= {"ALL", "normal"}
    s = res.summary
    assert sum(s["counts"].values()) == 12 and s["complete"] and not s["partial"]
    assert s["models"]["classifier"]["sha256"] == "1" * 64
    assert s["mpp"]["source"] == "user" and s["mpp"]["value"] == 0.5
    assert s["timings"]["detect_s"] > 0 and s["timings"]["efficiency"] is not None
    assert clf.calls == 3  # 12 cells in fixed batches of 4
    for f in ("cells.parquet", "cells.csv", "cells.geojson", "labels.ome.zarr", "overlay.png", "summary.json"):
        assert (tmp_path / "o" / f).exists(), f
    on_disk = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert on_disk["counts"] == s["counts"] and on_disk["complete"] is True


def test_deterministic_bytes_with_fakes(fakes, slide, tmp_path):
    from leukcore.pipeline import analyze_slide

    det, clf = fakes
    for name in ("a", "b"):
        analyze_slide(slide, det, clf, device="cpu", tile_size=512, batch_size=4, out_dir=tmp_path / name)
    for f in ("cells.parquet", "cells.csv", "cells.geojson", "overlay.png"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_cancel_from_progress_gives_partial_and_no_outputs(fakes, slide, tmp_path):
    from leukcore.pipeline import analyze_slide

    det, clf = fakes
    tok = CancelToken()
    seen = []

    def progress(ev):
        seen.append(ev.stage)
        if ev.stage == "classify":
            tok.cancel()

    res = analyze_slide(
        slide,
        det,
        clf,
        device="cpu",
        tile_size=256,
        batch_size=2,
        queue_size=1,
        progress=progress,
        cancel=tok,
        out_dir=tmp_path / "o",
    )
    assert res.partial and res.summary["partial"]
    assert 0 < len(res.table) < 12
    assert not (tmp_path / "o" / "summary.json").exists()
    assert not (tmp_path / "o" / "cells.parquet").exists()


def test_detection_error_propagates_and_stops_thread(monkeypatch, slide):
    import leukcore.detect
    from leukcore.pipeline import analyze_slide

    def broken(slide, det, **kw):
        yield CellTable()
        raise RuntimeError("tile 3 unreadable")

    monkeypatch.setattr(leukcore.detect, "iter_detect", broken, raising=False)
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="tile 3 unreadable"):
        analyze_slide(slide, FakeDetector(), FakeClassifier(), device="cpu")
    assert threading.active_count() <= before


def test_detection_only_and_sequential_mode(fakes, slide):
    from leukcore.pipeline import analyze_slide

    det, _ = fakes
    res = analyze_slide(slide, det, None, device="cpu", tile_size=512, overlap=False)
    assert len(res.table) == 12 and not res.table.is_classified
    assert res.summary["counts"] == {"cells": 12}


def test_empty_slide_writes_complete_empty_outputs(fakes, tmp_path):
    import pandas as pd
    import zarr

    from leukcore.io.slide import Slide
    from leukcore.pipeline import analyze_slide

    det, clf = fakes
    s = Slide.from_array(np.full((700, 900, 3), 240, np.uint8), mpp=0.5)
    res = analyze_slide(s, det, clf, device="cpu", tile_size=512, out_dir=tmp_path / "e")
    assert len(res.table) == 0 and res.summary["counts"] == {"ALL": 0, "normal": 0}
    assert res.summary["blast_percent"] is None and res.summary["complete"]
    assert len(pd.read_parquet(tmp_path / "e" / "cells.parquet")) == 0
    assert json.loads((tmp_path / "e" / "cells.geojson").read_text())["features"] == []
    assert zarr.open_group(str(tmp_path / "e" / "labels.ome.zarr"), mode="r")["0"].shape == (700, 900)


def test_write_outputs_refuses_partial(fakes, slide, tmp_path):
    from leukcore.pipeline import analyze_slide, write_outputs

    det, clf = fakes
    res = analyze_slide(slide, det, clf, device="cpu", tile_size=512)
    res.summary["partial"] = True
    with pytest.raises(ValueError, match="partial"):
        write_outputs(res, tmp_path / "p", slide=slide)
    assert not (tmp_path / "p" / "summary.json").exists()
