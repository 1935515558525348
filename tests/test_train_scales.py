"""``data.crop_mpp: estimated``: training crops cut at each field's estimated pixel size (leukcore.train.scales)."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leukcore.classify.geometry import CropSpec
from leukcore.train.cells import build_cell_set, centre_finder, load_image
from leukcore.train.config import resolve_config
from leukcore.train.scales import estimated_crop_mpp, with_crop_mpp

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "leukcore" / "data" / "sample"


def _fields(n=2):
    files = sorted(SAMPLE.glob("all4class/*/*.jpg"))[:n]
    return pd.DataFrame(
        {
            "path": [str(f) for f in files],
            "kind": "field",
            "mpp": 0.9,  # a folder value far from the truth (0.535 um/px): the estimate must not echo it
            "sha256": [f"sha{i}" for i in range(len(files))],
        }
    )


def test_folder_mode_leaves_the_rows_alone_and_a_bad_mode_is_named():
    df = _fields(1)
    assert "crop_mpp" not in with_crop_mpp(df, "folder")
    with pytest.raises(ValueError, match=re.escape("data.crop_mpp must be folder | estimated, got 'guess'")):
        with_crop_mpp(df, "guess")
    with pytest.raises(ValueError, match=re.escape("data.crop_mpp must be folder | estimated, got 'guess'")):
        resolve_config({"data": {"datasets": [{"reader": "all4class"}], "crop_mpp": "guess"}})
    assert resolve_config({"data": {"datasets": [{"reader": "all4class"}]}})["data"]["crop_mpp"] == "folder"


def test_fields_get_their_estimate_cells_keep_the_folder_value_and_the_cache_is_reused(tmp_path, monkeypatch):
    df = pd.concat([_fields(2), pd.DataFrame([{"path": "cell.png", "kind": "cell", "mpp": 0.1, "sha256": "c"}])])
    m = estimated_crop_mpp(df.reset_index(drop=True), tmp_path, progress=False)
    assert m[2] == 0.1  # a single-cell row is not measured
    assert np.all(np.abs(m[:2] / 0.535 - 1) < 0.15), m  # the fields' own scale, not the folder's 0.9
    assert len(list(tmp_path.glob("crop-mpp-scalenet-*.json"))) == 1

    def boom(*a, **k):
        raise AssertionError("estimated again instead of read from the cache")

    monkeypatch.setattr("leukcore.mpp.estimate_mpp", boom)
    assert np.array_equal(estimated_crop_mpp(df.reset_index(drop=True), tmp_path, progress=False), m)


def test_crops_are_cut_at_crop_mpp_and_the_cell_set_key_follows_it(tmp_path):
    df = _fields(1).assign(mpp=0.535)
    spec = CropSpec(size=48, crop_um=20.0, mask=False)
    a = build_cell_set(df, spec, centre_finder, cache=tmp_path, progress=False)
    b = build_cell_set(df.assign(crop_mpp=0.535), spec, centre_finder, cache=tmp_path, progress=False)
    c = build_cell_set(df.assign(crop_mpp=1.07), spec, centre_finder, cache=tmp_path, progress=False)
    assert np.array_equal(a["crops"], b["crops"])  # the same value: the same crops
    assert not np.array_equal(a["crops"], c["crops"])  # twice the pixel size: a crop half as many pixels wide
    from leukcore.classify.crops import crops_from_array

    img = load_image(df["path"][0])
    want = crops_from_array(img, a["centroid"], spec, 1.07)
    assert np.array_equal(c["crops"], want)
    assert len(list(tmp_path.glob("cells-*.npz"))) == 3  # one cached set per cut
