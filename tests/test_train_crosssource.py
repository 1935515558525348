"""Cross-source evaluation (``leukcore.train.crosssource``): the four-class split it runs."""

from __future__ import annotations

import pytest

from leukcore.train.crosssource import CrossSourceOptions, cross_source_eval
from leukcore.train.datasets import data_root


def test_split_must_be_test_or_val():
    with pytest.raises(ValueError, match="'test' or 'val'"):
        CrossSourceOptions(split="train")


@pytest.fixture(scope="module")
def data():
    root = data_root()
    if not (root / "all4class" / "Original").is_dir():
        pytest.skip("four-class data not present")
    return root


@pytest.mark.parametrize("split", ["val", "test"])
def test_fourclass_fields_come_from_the_asked_split(data, split):
    from leukcore.classify import Classifier
    from leukcore.train.config import resolve_config
    from leukcore.train.prepare import read_datasets

    clf = Classifier.load("all-4class")
    cfg = resolve_config({k: v for k, v in clf.card["training"]["config"].items() if not k.startswith("_")})
    df, _ = read_datasets(cfg)
    names = {s: set(df.loc[df["split"] == s, "path"].map(lambda p: p.split("/")[-1])) for s in ("val", "test")}
    opts = CrossSourceOptions(sets=("four-class",), n_fields=2, restain=False, split=split)
    res = cross_source_eval(clf, data, opts)
    s = res["sets"]["four-class"]
    assert s["n"] == 2
    assert {r["path"] for r in s["records"]} <= names[split]
    assert not {r["path"] for r in s["records"]} & names["test" if split == "val" else "val"]
    assert ("validation" in s["split"]) == (split == "val")
    # each record keeps the pixel size the field was classified at and where it came from (no --mpp: estimated)
    for r in s["records"]:
        assert r["mpp_source"] == "estimated" and 0.2 < r["mpp"] < 1.2, r
        assert isinstance(r["mpp_reliable"], bool)
