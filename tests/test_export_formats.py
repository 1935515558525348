"""Each export format read back with its own reader: GeoJSON (QuPath schema), OME-Zarr labels (zarr),
overlay (PIL), summary (json)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from leukcore.results import CellTable, class_color


def _square(cy, cx, r):
    return np.array([[cy - r, cx - r], [cy - r, cx + r], [cy + r, cx + r], [cy + r, cx - r]], np.float32)


@pytest.fixture
def table():
    cents = np.array([[100.0, 100.0], [100.0, 1500.0], [1030.0, 1020.0], [2000.0, 50.0]])
    polys = [_square(y, x, 20) for y, x in cents]
    t = CellTable.from_detections(
        cents, polys, np.array([0.9, 0.8, 0.7, 0.6], np.float32), mpp=0.25, meta={"slide": "s.ome.tif"}
    )
    t.set_classification(np.array([[0.9, 0.1], [0.2, 0.8], [0.55, 0.45], [0.3, 0.7]]), ["ALL", "normal"], 0.6)
    return t


def test_geojson_is_qupath_detection_collection(table, tmp_path):
    from leukcore.export.geojson import write_geojson

    p = write_geojson(table, tmp_path / "cells.geojson")
    gj = json.loads(p.read_text())
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == 4
    ids = set()
    for f, rec in zip(gj["features"], table.df.itertuples(), strict=False):
        assert f["type"] == "Feature"
        ids.add(f["id"])
        g = f["geometry"]
        assert g["type"] == "Polygon"
        ring = g["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) == 5  # closed
        xs, ys = [p[0] for p in ring], [p[1] for p in ring]
        assert min(xs) == pytest.approx(rec.centroid_x - 20) and min(ys) == pytest.approx(rec.centroid_y - 20)  # [x, y]
        pr = f["properties"]
        assert pr["objectType"] == "detection"
        assert pr["classification"]["name"] == rec.label
        assert pr["classification"]["color"] == list(class_color(rec.label))
        m = pr["measurements"]
        assert m["cell_id"] == rec.cell_id and m["prob_ALL"] == pytest.approx(rec.prob_ALL, abs=1e-4)
        assert all(isinstance(v, (int, float)) for v in m.values())
    assert len(ids) == 4
    # byte-identical on rewrite
    b1 = p.read_bytes()
    write_geojson(table, p)
    assert p.read_bytes() == b1


def test_labels_ome_zarr_pyramid_read_back(table, tmp_path):
    import zarr

    from leukcore.export.labels import write_labels_zarr

    shape = (2100, 1700)
    p = write_labels_zarr(table, shape, tmp_path / "labels.ome.zarr", mpp=0.25, chunk=512, min_size=300)
    root = zarr.open_group(str(p), mode="r")
    ms = root.attrs["multiscales"][0]
    assert ms["version"] == "0.4" and [a["name"] for a in ms["axes"]] == ["y", "x"]
    paths = [d["path"] for d in ms["datasets"]]
    assert paths == ["0", "1", "2", "3"]
    assert ms["datasets"][1]["coordinateTransformations"][0]["scale"] == [0.5, 0.5]
    a0 = root["0"]
    assert a0.shape == shape and a0.dtype == np.uint32 and a0.chunks == (512, 512)
    full = a0[:]
    for rec in table.df.itertuples():
        assert full[int(rec.centroid_y), int(rec.centroid_x)] == rec.cell_id
    # the cell crossing the 512/1024 chunk corners is whole
    assert (full == 3).sum() == pytest.approx(40 * 40, rel=0.1)
    assert set(np.unique(full)) == {0, 1, 2, 3, 4}
    a1 = root["1"][:]
    assert a1.shape == (1050, 850)
    assert np.array_equal(a1, full[::2, ::2])
    props = root.attrs["image-label"]["properties"]
    assert {d["label-value"]: d["class"] for d in props} == dict(zip(table.df.cell_id, table.df.label, strict=False))
    # chunks without cells are never written
    assert a0.nchunks_initialized < a0.nchunks


def test_labels_memory_is_chunk_bounded(tmp_path):
    """A 60k x 60k label image with a few cells is written in well under a second of chunk work."""
    import zarr

    from leukcore.export.labels import write_labels_zarr

    cents = np.array([[30000.0, 30000.0], [59990.0, 59990.0]])
    t = CellTable.from_detections(cents, [_square(y, x, 8) for y, x in cents], np.ones(2, np.float32), mpp=0.5)
    p = write_labels_zarr(t, (60000, 60000), tmp_path / "big.ome.zarr")
    a = zarr.open_group(str(p), mode="r")["0"]
    assert a.shape == (60000, 60000)
    assert a.nchunks_initialized == 2
    assert a[30000, 30000] == 1 and a[59990, 59990] == 2


def test_labels_replace_existing_and_cancel_leaves_old(table, tmp_path):
    from leukcore.export.labels import write_labels_zarr
    from leukcore.progress import Cancelled, CancelToken

    p = tmp_path / "labels.ome.zarr"
    write_labels_zarr(table, (2100, 1700), p)
    write_labels_zarr(table, (2100, 1700), p)  # overwrite works
    tok = CancelToken()
    tok.cancel()
    with pytest.raises(Cancelled):
        write_labels_zarr(table, (2100, 1700), p, cancel=tok)
    assert (p / ".zattrs").exists()
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".")]


def test_overlay_colours_and_legend(table, tmp_path):
    from leukcore.export.overlay import render_overlay

    thumb = np.full((525, 425, 3), 255, np.uint8)
    img = np.asarray(render_overlay(thumb, table, (2100, 1700), title="s"))
    assert img.shape[0] == 525 and img.shape[1] > 425  # thumbnail + legend panel on the right
    # cell 4 (normal, bottom-left at y=500,x=12 in thumbnail) is drawn in the normal colour
    y, x = 500, int(50 / 4)
    patch = img[y - 3 : y + 4, x - 3 : x + 4].reshape(-1, 3).astype(int).mean(axis=0)
    assert patch[1] > patch[0] + 15 and patch[1] > patch[2] + 15  # green tint (normal)
    cell1 = img[257, 255].astype(int)  # cell 3 is ALL (red)
    assert cell1[0] > cell1[1] + 15
    assert (img[:, 426:] != 255).any()  # legend drawn in the panel
    assert (img[5:20, 5:20] == 255).all()  # the picture itself is not covered


def test_summary_marker_and_row(tmp_path):
    from leukcore.export.summary import is_complete, read_summary, summary_row, write_summary

    d = tmp_path / "slide"
    d.mkdir()
    (d / "cells.csv").write_text("x\n")
    s = {
        "complete": True,
        "partial": False,
        "slide": {"name": "a", "path": "/x/a.tif"},
        "cells": 3,
        "counts": {"ALL": 1, "normal": 2},
        "outputs": {"csv": "cells.csv"},
        "timings": {"total_s": 1.5},
    }
    assert not is_complete(d)
    write_summary(s, d / "summary.json")
    assert is_complete(d) and is_complete(d, "/x/a.tif") and not is_complete(d, "/y/other.tif")
    (d / "cells.csv").unlink()
    assert not is_complete(d)  # a listed output is missing
    assert read_summary(d)["cells"] == 3
    row = summary_row(s)
    assert row["n_ALL"] == 1 and row["n_normal"] == 2 and row["seconds"] == 1.5


# ---------------------------------------------------------------- one owner each (issue 15)
def test_output_kinds_table_is_the_one_list_of_names(table, tmp_path):
    from leukcore.export import kinds
    from leukcore.export import summary as S

    assert kinds.OUTPUT_FILES == (
        "cells.parquet",
        "cells.csv",
        "cells.geojson",
        "labels.ome.zarr",
        "overlay.png",
        "summary.json",
    )
    assert list(kinds.OUTPUT_KINDS)[-1] == "summary"  # written last: the completion marker
    assert S.SUMMARY_NAME is kinds.SUMMARY_NAME and S.OUTPUT_FILES is kinds.OUTPUT_FILES
    assert kinds.file_name("geojson") == "cells.geojson"
    with pytest.raises(ValueError, match="unknown output kind"):
        kinds.file_name("xlsx")
    for kind in kinds.TABLE_KINDS:  # every table kind reads back what it wrote
        p = kinds.write_output(kind, table, tmp_path / kind)
        assert p == tmp_path / kind / kinds.FILE_NAMES[kind]
        back = kinds.OUTPUT_KINDS[kind].read(p)
        assert len(back) == len(table) and list(back.df["label"]) == list(table.df["label"])
        np.testing.assert_allclose(back.df["centroid_x"], table.df["centroid_x"], atol=0.01)


def test_read_results_folder_and_files(table, tmp_path):
    from leukcore.export.kinds import ResultsError, find_results_slide, is_results_path, read_results

    out = tmp_path / "res"
    out.mkdir()
    slide = tmp_path / "s.ome.tif"
    slide.write_bytes(b"x")
    table.meta.pop("mpp", None)
    table.to_csv(out / "cells.csv")
    (out / "summary.json").write_text(
        json.dumps(
            {"slide": {"path": str(slide), "shape": [2100, 1700]}, "mpp": {"value": 0.5}, "classes": ["ALL", "normal"]}
        )
    )
    assert is_results_path(out) and not is_results_path(tmp_path / "s.ome.tif")
    t, s = read_results(out)  # the csv: no parquet / geojson here
    assert t.meta["results_path"].endswith("cells.csv") and t.meta["mpp"] == 0.5
    assert t.meta["shape"] == [2100, 1700] and t.meta["classes"] == ["ALL", "normal"]
    assert find_results_slide(out, t, s) == str(slide)
    table.to_parquet(out / "cells.parquet")
    t2, _ = read_results(out)
    assert t2.meta["results_path"].endswith("cells.parquet")  # parquet preferred
    t3, s3 = read_results(out / "cells.csv")
    assert s3 == s and len(t3) == len(table)
    with pytest.raises(ResultsError, match="no such file"):
        read_results(tmp_path / "nope")
    (out / "cells.geojson").write_text("{broken")
    with pytest.raises(ResultsError, match="cells.geojson"):
        read_results(out / "cells.geojson")


def test_one_region_clip():
    from leukcore.regions import RegionError, clip_region

    assert clip_region(None, (100, 200)) == (0, 0, 100, 200)
    assert clip_region((0.5, 1.5, 10.4, 20.6), (100, 100)) == (0, 2, 10, 21)  # nearest (detection)
    assert clip_region((0.5, 1.5, 10.4, 20.6), (100, 100), rounding="outward") == (0, 1, 11, 21)
    assert clip_region((-5, -5, 500, 500), (100, 200)) == (0, 0, 100, 200)
    with pytest.raises(RegionError, match="does not meet the slide"):
        clip_region((200, 0, 300, 10), (100, 100))
    with pytest.raises(ValueError, match="region must be"):
        clip_region((1, 2, 3), (100, 100))


def test_one_rasteriser_downsampled_matches_level0():
    from leukcore.export.labels import rasterize_chunk

    sq = np.array([[10, 10], [10, 30], [30, 30], [30, 10]], np.float32)
    l0 = rasterize_chunk([sq], [7], 0, 0, 40, 40)
    assert l0.dtype == np.uint32 and (l0 == 7).sum() == 21 * 21
    l1 = rasterize_chunk([sq], [7], 0, 0, 20, 20, downsample=2, dtype=np.int32)
    assert l1.dtype == np.int32 and (l1 == 7).sum() == 11 * 11
    assert rasterize_chunk([sq[:2]], [1], 0, 0, 40, 40).max() == 0  # degenerate: skipped


def test_one_legend_in_overlay_and_inset():
    from leukcore.export.legend import inset_legend, legend_lines

    lines = legend_lines({"ALL": 1, "normal": 3}, title="slide", extra=["ALL / blast: 25.0 %"])
    assert [t for _, t in lines] == [
        "slide",
        "ALL: 1 (25.0 %)",
        "normal: 3 (75.0 %)",
        "cells: 4",
        "ALL / blast: 25.0 %",
    ]
    assert [n for n, _ in lines] == [None, "ALL", "normal", None, None]
    img = inset_legend(np.zeros((300, 500, 4), np.uint8), lines)
    assert img.shape == (300, 500, 3)
    cols = {tuple(c) for c in img[:150, :250].reshape(-1, 3)}
    assert class_color("ALL") in cols and class_color("normal") in cols
    assert (img[200:, 300:] == 0).all()


def test_paths_module_owns_the_folders(monkeypatch, tmp_path):
    from leukcore import onnx_cache, paths, sample
    from leukcore.models import registry

    monkeypatch.setenv("LEUK_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("LEUK_CACHE", str(tmp_path / "c"))
    (tmp_path / "m").mkdir()
    monkeypatch.setenv("LEUK_MODEL_PATH", os.pathsep.join([str(tmp_path / "m"), str(tmp_path / "missing")]))
    assert paths.data_dir() == sample.data_root() == tmp_path / "d"
    assert paths.cache_dir() == sample.cache_dir() == onnx_cache.cache_dir() == tmp_path / "c"
    assert paths.model_path() == [tmp_path / "m"] and registry.model_dirs()[0] == tmp_path / "m"
    monkeypatch.delenv("LEUK_DATA")
    assert paths.data_dir() == paths.REPO_ROOT.parent / "shared" / "data"
    assert (paths.REPO_ROOT / "src" / "leukcore" / "paths.py").is_file()
