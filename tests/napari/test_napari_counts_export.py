"""Counts, blast percentage, exports (CSV / Parquet / GeoJSON round trips, read back by the core reader)
and the screenshot legend (the core's)."""

import json

import numpy as np
import pytest

from leukcore.export.geojson import read_geojson_table
from leukcore.export.kinds import ResultsError, find_results_slide, read_results
from leukcore.export.legend import inset_legend, legend_lines
from leukcore.results import CellTable, class_color
from napari_leuk._counts import blast_percent, count_rows
from napari_leuk._export import export_table


def test_count_rows_include_zero_classes_and_extra_labels():
    rows = count_rows(["ALL", "ALL", "normal", "Pro"], ["ALL", "normal", "Early"])
    assert [(r.name, r.count) for r in rows] == [("ALL", 2), ("normal", 1), ("Early", 0), ("Pro", 1)]
    assert rows[0].percent == 50.0 and rows[0].rgb == class_color("ALL")
    assert count_rows([], ["ALL"])[0].percent is None


def test_blast_percent():
    assert blast_percent(["ALL", "normal", "normal", "normal"]) == 25.0
    assert blast_percent(["Benign", "Early", "Pre", "Pro"]) == 75.0
    assert blast_percent([]) is None


@pytest.mark.parametrize("suffix", ["csv", "parquet", "geojson"])
def test_export_round_trip_keeps_edits(table_factory, tmp_path, suffix):
    tab = table_factory(7)
    tab.df.loc[3, "label"] = "normal"  # a user edit
    out = export_table(tab, tmp_path / f"cells.{suffix}")
    assert out.exists()
    back = {"csv": CellTable.read_csv, "parquet": CellTable.read_parquet, "geojson": read_geojson_table}[suffix](out)
    assert len(back) == 7
    assert list(back.df["label"]) == list(tab.df["label"])
    np.testing.assert_allclose(back.df["centroid_y"], tab.df["centroid_y"], atol=0.6)
    assert np.asarray(back.df["polygon"][0]).shape[1] == 2


def test_export_rejects_unknown_suffix(table_factory, tmp_path):
    with pytest.raises(ValueError, match="unknown export type"):
        export_table(table_factory(2), tmp_path / "cells.xlsx")


def test_geojson_reader_errors_name_the_file(tmp_path):
    bad = tmp_path / "cells.geojson"
    bad.write_text("{not json")
    with pytest.raises(ResultsError, match="cells.geojson"):
        read_geojson_table(bad)
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [{"geometry": {"type": "Point"}}]}))
    with pytest.raises(ResultsError, match="feature 0 has no polygon"):
        read_geojson_table(bad)


def test_load_results_folder_finds_slide_and_mpp(table_factory, tmp_path):
    tab = table_factory(5)
    slide = tmp_path / "s.png"
    slide.write_bytes(b"x")
    out = tmp_path / "res"
    tab.meta.pop("mpp")
    export_table(tab, out / "cells.parquet")
    (out / "summary.json").write_text(
        json.dumps(
            {"slide": {"path": str(slide), "shape": [2000, 2000]}, "mpp": {"value": 0.25}, "classes": ["ALL", "normal"]}
        )
    )
    t, summ = read_results(out)
    sp = find_results_slide(out, t, summ)
    assert sp == str(slide) and t.meta["mpp"] == 0.25 and len(t) == 5
    with pytest.raises(ResultsError, match="without cells.parquet"):
        read_results(_empty(tmp_path))


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    (d / "summary.json").write_text("{}")
    return d


def test_screenshot_legend_paints_class_swatches():
    img = np.zeros((400, 600, 4), np.uint8)
    rows = count_rows(["ALL", "normal", "normal"], ["ALL", "normal"])
    out = inset_legend(img, legend_lines({r.name: r.count for r in rows}, title="slide", extra=["blast 33 %"]))
    assert out.shape == (400, 600, 3)
    cols = {tuple(c) for c in out.reshape(-1, 3)}
    assert class_color("ALL") in cols and class_color("normal") in cols
    assert (out[300:, 300:] == 0).all()  # legend stays in its corner
