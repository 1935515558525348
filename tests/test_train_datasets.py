"""Dataset readers on small fake layouts: C-NMC names, duplicate subjects, dedup, group splits."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from leukcore.train.datasets import (
    DatasetError,
    deduplicate,
    link_subjects,
    parse_cnmc_subject,
    read_cnmc,
    read_folder_per_class,
)
from leukcore.train.splits import assign_splits, group_kfold, split_type


def _seed(cls: str, i: int) -> int:
    """A distinct seed per (class, index); ``hash()`` of a str is salted per process, so two images collided now
    and then and the counts changed."""
    return 1000 * ord(cls) + i


def _bmp(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 255, (6, 6, 3)).astype(np.uint8)
    Image.fromarray(a).save(path)


@pytest.fixture
def cnmc(tmp_path):
    """ALL subjects 1, 2, 3 and HEM subjects H4, h5; subject 2 and 3 share an image, H4 and h5 too."""
    root = tmp_path / "C-NMC_Leukemia"
    seed = 0
    for fold in ("fold_0", "fold_1"):
        for subj in (1, 2, 3):
            for img in range(3):
                seed += 1
                _bmp(root / "training_data" / fold / "all" / f"UID_{subj}_{img}_{fold[-1]}_all.bmp", seed)
        for subj in ("H4", "h5"):
            for img in range(3):
                seed += 1
                _bmp(root / "training_data" / fold / "hem" / f"UID_{subj}_{img}_{fold[-1]}_hem.bmp", seed)
    # duplicates across subjects (byte-identical content)
    _bmp(root / "training_data" / "fold_0" / "all" / "UID_3_9_9_all.bmp", 1000)
    _bmp(root / "training_data" / "fold_1" / "all" / "UID_2_9_9_all.bmp", 1000)
    _bmp(root / "training_data" / "fold_0" / "hem" / "UID_H4_9_9_hem.bmp", 2000)
    _bmp(root / "training_data" / "fold_1" / "hem" / "UID_h5_9_9_hem.bmp", 2000)
    # preliminary test set with its labels CSV
    pre = root / "validation_data" / "C-NMC_test_prelim_phase_data"
    _bmp(pre / "1.bmp", 3000)
    _bmp(pre / "2.bmp", 3001)
    pd.DataFrame(
        {"Patient_ID": ["UID_7_1_1_all.bmp", "UID_H8_1_1_hem.bmp"], "new_names": ["1.bmp", "2.bmp"], "labels": [1, 0]}
    ).to_csv(root / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv", index=False)
    return root


def test_parse_subject_ids():
    assert parse_cnmc_subject("UID_11_2_1_all.bmp") == "11"
    assert parse_cnmc_subject("UID_H22_30_3_hem.bmp") == "H22"
    assert parse_cnmc_subject("uid_h22_30_3_hem.bmp") == "H22"
    assert parse_cnmc_subject("UID_h022_1_1_hem.bmp") == "H22"
    assert parse_cnmc_subject("cell.bmp") is None


def test_cnmc_reader_links_duplicate_subjects_and_dedups(cnmc):
    df = read_cnmc(cnmc)
    assert len(df) == 2 * 15 + 4 + 2
    assert set(df["label"]) == {"ALL", "normal"}
    assert set(df["subject"]) == {"1", "2", "3", "H4", "H5", "7", "H8"}
    pre = df[df["source"] == "cnmc/prelim-test"]
    assert dict(zip(pre["subject"], pre["label"], strict=False)) == {"7": "ALL", "H8": "normal"}
    g = dict(zip(df["subject"], df["group"], strict=False))
    assert g["2"] == g["3"] == "2+3"  # merged through the shared image
    assert g["H4"] == g["H5"] and g["1"] != g["2"]
    rep = {}
    dd = deduplicate(df, report=rep)
    assert rep["duplicates_removed"] == 2 and len(dd) == len(df) - 2
    assert dd["sha256"].is_unique
    s = assign_splits(dd, test_frac=0.34, val_frac=0.0, seed=0)
    assert s.attrs["split_type"] == "patient-level"
    # no (merged) subject is in two parts
    assert (s.groupby("group")["split"].nunique() == 1).all()
    for subj in ("2", "3"):
        assert s.loc[s["subject"] == subj, "split"].nunique() == 1
    assert split_type(s) == "patient-level"


def test_cnmc_reader_errors(tmp_path, cnmc):
    with pytest.raises(DatasetError, match="training_data"):
        read_cnmc(tmp_path / "nothing")
    _bmp(cnmc / "training_data" / "fold_0" / "all" / "badname.bmp", 9)
    with pytest.raises(DatasetError, match="badname.bmp"):
        read_cnmc(cnmc)


def test_folder_reader_dedup_conflicts_and_image_level_split(tmp_path):
    for c in ("x", "y"):
        for i in range(12):
            _bmp(tmp_path / c / f"{i}.png", _seed(c, i))
    _bmp(tmp_path / "x" / "dup.png", _seed("x", 0))  # duplicate within a class
    _bmp(tmp_path / "y" / "conflict.png", _seed("x", 1))  # same image labelled y
    df = read_folder_per_class(tmp_path)
    assert len(df) == 26 and df["subject"].isna().all()
    rep = {}
    dd = deduplicate(df, report=rep)
    assert rep == {"duplicates_removed": 1, "conflicts_removed": 2, "images": 23}
    s = assign_splits(dd, test_frac=0.25, val_frac=0.2, seed=3)
    assert s.attrs["split_type"] == "image-level"
    assert set(s["split"]) == {"train", "val", "test"}
    assert not set(s.loc[s.split == "test", "sha256"]) & set(s.loc[s.split == "train", "sha256"])
    f = group_kfold(dd, k=3, seed=0)
    assert set(f) == {0, 1, 2}
    with pytest.raises(DatasetError, match="not found"):
        read_folder_per_class(tmp_path / "missing")


def test_link_subjects_union_find_chain():
    df = pd.DataFrame({"subject": ["1", "2", "2", "3", None], "sha256": ["a", "a", "b", "b", "c"], "label": "ALL"})
    out = link_subjects(df)
    assert out["group"].iloc[0] == out["group"].iloc[3] == "1+2+3"  # 1-2 via a, 2-3 via b
    assert out["group"].iloc[4] == "c"


def test_real_four_class_reader_when_data_present():
    from leukcore.train.datasets import data_root, read_all4class

    if not (data_root() / "all4class" / "Original").is_dir():
        pytest.skip("four-class data not present")
    rep = {}
    df = deduplicate(read_all4class(), report=rep)
    assert rep["duplicates_removed"] >= 30  # the 40 Pro pairs (some shared)
    assert set(df["label"]) == {"Benign", "Early", "Pre", "Pro"} and (df["kind"] == "field").all()


def test_bccd_reader_gives_normal_fields_and_names_a_missing_folder(tmp_path):
    from PIL import Image

    from leukcore.train.datasets import BCCD_MPP, DatasetError, read_bccd

    d = tmp_path / "bccd" / "BCCD" / "JPEGImages"
    d.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(d / f"BloodImage_{i:05d}.jpg")
    df = read_bccd(tmp_path / "bccd")
    assert len(df) == 3 and set(df["label"]) == {"normal"} and set(df["source"]) == {"bccd"}
    assert (df["kind"] == "field").all() and np.allclose(df["mpp"], BCCD_MPP)
    with pytest.raises(DatasetError, match="no BCCD JPEGImages"):
        read_bccd(tmp_path / "elsewhere")


def test_the_shipped_binary_config_takes_normal_cells_from_two_labs_besides_the_all_source():
    from leukcore.train.config import load_config, preset_path
    from leukcore.train.prepare import read_datasets

    cfg = load_config(preset_path("all-binary"))
    readers = [d["reader"] for d in cfg["data"]["datasets"]]
    assert readers == ["all4class", "pbc", "bccd"]
    from leukcore.train.datasets import data_root

    if not (data_root() / "bccd").is_dir():
        pytest.skip("BCCD data not present")
    df, classes = read_datasets({**cfg, "data": {**cfg["data"], "datasets": [{"reader": "bccd"}]}})
    assert classes == ["ALL", "normal"]
    assert set(df["source"]) == {"bccd"} and set(df["label"]) == {"normal"}
