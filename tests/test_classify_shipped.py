"""Shipped classifiers: cards, hash-checked loading, sensible predictions on real held-out data."""

import json
import subprocess
import sys

import numpy as np
import pytest

from leukcore.models.registry import WEIGHTS_DIR, list_models, load_card
from leukcore.paths import data_dir

SHIPPED = ["all-binary", "all-4class"]


def _need(name):
    if not (WEIGHTS_DIR / f"{name}.yaml").exists():
        pytest.skip(f"{name} not shipped yet")


@pytest.mark.parametrize("name", SHIPPED)
def test_card_facts_and_size(name):
    _need(name)
    card = load_card(name)
    assert card["task"] == "classification" and name in list_models("classification")
    assert (WEIGHTS_DIR / card["weights"]["file"]).stat().st_size < 30e6
    assert card["metrics"]["split_type"] == "image-level"
    finder = card["training"]["config"]["data"]["finder"]
    if finder == "detector":
        assert "detector" in card["training"]["cells"]  # crops from the project's detector
        assert card["training"]["data"]["finder"].startswith("detector:wbc-stardist:")  # which detector weights
        from leukcore.classify.fields import field_rule

        rule = field_rule(card)  # a valid field rule, chosen on val
        assert "validation" in card["inference"]["selected_on"] and rule["field_aggregation"]
    else:  # any other crop source is declared
        assert finder in card["training"]["cells"] and any(finder in n for n in card.get("notes", []))
    for k in ("cnn_cells_accuracy", "colour_baseline_cells_accuracy", "stain_swap_cnn_images_accuracy"):
        assert 0 <= card["metrics"][k] <= 1
    if name == "all-binary":
        assert card["classes"] == ["ALL", "normal"] and "pbc_false_positive_rate_cnn" in card["metrics"]
    else:
        assert card["classes"] == ["Benign", "Early", "Pre", "Pro"]


@pytest.mark.parametrize("name", SHIPPED)
def test_load_torch_and_predict(name):
    _need(name)
    from leukcore.classify import Classifier

    clf = Classifier.load(name, device="cpu", backend="torch")
    crops = np.random.default_rng(0).integers(0, 255, (4, clf.spec.size, clf.spec.size, 3)).astype(np.uint8)
    p = clf.predict_crops(crops)
    assert p.shape == (4, len(clf.classes)) and np.allclose(p.sum(1), 1, atol=1e-5)


@pytest.mark.slow
def test_classify_cli_on_real_held_out_fields():
    _need("all-4class")
    if not (WEIGHTS_DIR / "wbc-stardist.yaml").exists() or not (data_dir() / "all4class").is_dir():
        pytest.skip("detector or data missing")
    from leukcore.train.config import load_config, preset_path
    from leukcore.train.prepare import read_datasets

    df, _ = read_datasets(load_config(preset_path("all-4class")))
    test = df[df["split"] == "test"].groupby("label").head(2)  # 8 held-out fields, 2 per class
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "leukcore.cli",
            "classify",
            *test["path"],
            "--model",
            "all-4class",
            "--json",
            "--mpp",
            "0.535",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    recs = [json.loads(line) for line in out.stdout.strip().splitlines()]
    assert [r["path"] for r in recs] == list(test["path"])
    from leukcore.classify.fields import field_rule

    fr = field_rule(load_card("all-4class"))
    rule = {"mean_prob": "mean-over-cells", "mean_log_prob": "mean-log-prob-over-cells"}[fr["field_aggregation"]]
    rule += f"+tta-{fr['tta']}" if fr["tta"] else ""
    assert all(r["rule"] == rule and r["n_cells"] >= 1 for r in recs)  # the card's field rule
    correct = sum(r["label"] == lab for r, lab in zip(recs, test["label"], strict=False))
    assert correct >= 6  # held-out fields, 4 classes
