"""Field rule: aggregation of cell probabilities, test-time augmentation, selection on the validation split."""

import numpy as np
import pytest

from leukcore.classify import Classifier, CropSpec
from leukcore.classify.fields import aggregate_cells, field_rule
from leukcore.classify.network import build_network
from leukcore.train.evaluate import image_level, select_field_rule


def test_aggregate_mean_and_log_mean():
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.01, 0.99]])
    assert np.allclose(aggregate_cells(p, "mean_prob"), [0.6033333, 0.3966667])
    g = np.exp(np.log(p).mean(0))
    assert np.allclose(aggregate_cells(p, "mean_log_prob"), g / g.sum())
    # one confident dissenting cell outweighs two mildly confident ones under the geometric mean
    q = np.array([[0.9, 0.1], [0.9, 0.1], [0.001, 0.999]])
    assert aggregate_cells(q, "mean_prob").argmax() == 0 and aggregate_cells(q, "mean_log_prob").argmax() == 1
    # a zero probability does not produce NaN
    assert np.isfinite(aggregate_cells(np.array([[1.0, 0.0], [0.5, 0.5]]), "mean_log_prob")).all()
    with pytest.raises(ValueError, match="aggregation"):
        aggregate_cells(p, "median")
    with pytest.raises(ValueError, match="K >= 1"):
        aggregate_cells(np.zeros((0, 2)), "mean_prob")


def test_field_rule_from_card():
    assert field_rule({}) == {"field_aggregation": "mean_prob", "tta": None}
    assert field_rule({"inference": {"field_aggregation": "mean_log_prob", "tta": "d4"}}) == {
        "field_aggregation": "mean_log_prob",
        "tta": "d4",
    }
    with pytest.raises(ValueError, match="tta"):
        field_rule({"inference": {"tta": "d8"}})


def test_image_level_aggregates_per_image_and_limits_cells():
    P = np.array([[0.8, 0.2], [0.6, 0.4], [0.1, 0.9], [0.3, 0.7]])
    rows = np.array([0, 0, 0, 5])
    u, y, Pi = image_level(P, rows, np.array([0, 0, 0, 0, 0, 1]), "mean_prob")
    assert list(u) == [0, 5] and list(y) == [0, 1]
    assert np.allclose(Pi[0], P[:3].mean(0)) and np.allclose(Pi[1], P[3])
    _, _, P1 = image_level(P, rows, np.zeros(6, int), "mean_prob", max_cells=1)
    assert np.allclose(P1[0], P[0])


def test_select_field_rule_uses_validation_only_and_prefers_cheaper_on_ties():
    labels = np.array([0, 1])
    # validation: image 0 has cells (0.9,0.1),(0.9,0.1),(0.001,0.999): mean_prob right, log-mean wrong
    Pv = np.array([[0.9, 0.1], [0.9, 0.1], [0.001, 0.999], [0.2, 0.8]])
    rows = np.array([0, 0, 0, 1])
    rule, table = select_field_rule({None: (Pv, rows), "d4": (Pv, rows)}, labels)
    assert rule == {"tta": None, "field_aggregation": "mean_prob"}  # tie between TTA modes -> no TTA
    assert len(table) == 4 and all("val_images_accuracy" in r for r in table)
    assert {(r["field_aggregation"], r["val_images_accuracy"]) for r in table} == {
        ("mean_prob", 1.0),
        ("mean_log_prob", 0.5),
    }
    # without TTA every cell of image 0 says class 1; with TTA it is right: d4 wins
    Pn = np.array([[0.4, 0.6], [0.4, 0.6], [0.45, 0.55], [0.2, 0.8]])
    Pd4 = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.2, 0.8]])
    rule, _ = select_field_rule({None: (Pn, rows), "d4": (Pd4, rows)}, labels)
    assert rule == {"tta": "d4", "field_aggregation": "mean_prob"}


def test_select_field_rule_counts_a_field_held_for_review_as_wrong():
    # image 0 (class 0): cells (0.95, 0.05) and (0.4, 0.6): both rules call class 0, but the arithmetic mean
    # is 0.675 and the normalised geometric mean 0.78: with a review threshold of 0.7 only the latter is a call
    P = np.array([[0.95, 0.05], [0.4, 0.6], [0.1, 0.9]])
    rows, labels = np.array([0, 0, 1]), np.array([0, 1])
    rule, _ = select_field_rule({None: (P, rows)}, labels, (None,))
    assert rule["field_aggregation"] == "mean_prob"  # argmax only: a tie, the cheaper rule
    rule, table = select_field_rule({None: (P, rows)}, labels, (None,), review_threshold=0.7)
    assert rule["field_aggregation"] == "mean_log_prob"
    assert {r["field_aggregation"]: r["val_images_accuracy"] for r in table} == {"mean_prob": 0.5, "mean_log_prob": 1.0}


def test_select_field_rule_holds_a_one_cell_unsure_blast_as_leuk_classify_does():
    # image 0 (ALL): one cell at 0.8; image 1 (ALL): two cells averaging 0.8; image 2 (normal): one sure cell.
    # The blast threshold (0.85) was chosen on single cells: it holds image 0, not the pooled image 1
    P = np.array([[0.8, 0.2], [0.75, 0.25], [0.85, 0.15], [0.1, 0.9]])
    rows, labels, classes = np.array([0, 1, 1, 2]), np.array([0, 0, 1]), ["ALL", "normal"]
    _, table = select_field_rule({None: (P, rows)}, labels, (None,), review_threshold=0.6)
    assert table[0]["val_images_accuracy"] == 1.0
    _, table = select_field_rule({None: (P, rows)}, labels, (None,), review_threshold=0.6, blast=(0.85, classes))
    assert table[0]["val_images_accuracy"] == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def clf():
    import torch

    torch.manual_seed(0)
    net = build_network("tf_efficientnet_lite0", 3)
    return Classifier.from_network(net, ["a", "b", "c"], CropSpec(size=32, crop_um=16.0, mode="rgb"))


def test_tta_d4_is_the_mean_over_the_eight_views_and_rotation_invariant(clf):
    crops = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3)).astype(np.uint8)
    p = clf.predict_crops(crops, tta="d4")
    views = [np.rot90(crops, k, axes=(1, 2)) for k in range(4)]
    views += [v[:, :, ::-1] for v in views]
    ref = np.mean([clf.predict_crops(np.ascontiguousarray(v)) for v in views], axis=0)
    assert np.allclose(p, ref, atol=1e-5) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert not np.allclose(p, clf.predict_crops(crops), atol=1e-4)  # TTA changes the answer
    rot = np.ascontiguousarray(np.rot90(crops, 1, axes=(1, 2))[:, ::-1])
    assert np.allclose(clf.predict_crops(rot, tta="d4"), p, atol=1e-5)  # invariant under the group
    flip = clf.predict_crops(crops, tta="flip")
    assert np.allclose(
        flip, (clf.predict_crops(crops) + clf.predict_crops(np.ascontiguousarray(crops[:, :, ::-1]))) / 2, atol=1e-5
    )
    with pytest.raises(ValueError, match="tta"):
        clf.predict_crops(crops, tta="d8")


def test_unsure_image_goes_to_review_never_silently_to_a_class():
    from leukcore.field import REVIEW_LABEL, _review

    class Clf:
        review_threshold = 0.8
        classes = ["ALL", "normal"]

    rec = _review({"label": "ALL", "probabilities": {"ALL": 0.7, "normal": 0.3}}, Clf())
    assert rec["label"] == REVIEW_LABEL and rec["model_label"] == "ALL" and rec["review"] is True
    rec = _review({"label": "ALL", "probabilities": {"ALL": 0.9, "normal": 0.1}}, Clf())
    assert rec["label"] == "ALL" and rec["review"] is False and rec["review_threshold"] == 0.8
    rec = _review({"label": None, "probabilities": {"ALL": None, "normal": None}}, Clf())
    assert rec["label"] is None and "review" not in rec


def test_blast_call_needs_the_blast_threshold():
    from leukcore.field import _review

    class Clf:
        review_threshold = 0.6
        blast_threshold = 0.85
        classes = ["ALL", "normal"]

    assert _review({"label": "ALL", "probabilities": {"ALL": 0.8, "normal": 0.2}}, Clf())["label"] == "review"
    # a field's label pools several cells: only the plain review threshold applies
    field = {"label": "ALL", "probabilities": {"ALL": 0.8, "normal": 0.2}, "n_cells": 5}
    assert _review(field, Clf())["label"] == "ALL"
    assert _review({"label": "ALL", "probabilities": {"ALL": 0.9, "normal": 0.1}}, Clf())["label"] == "ALL"
    assert _review({"label": "normal", "probabilities": {"ALL": 0.3, "normal": 0.7}}, Clf())["label"] == "normal"


def test_a_failing_pixel_size_estimate_raises_only_nothing_to_measure_falls_back(monkeypatch, clf):
    """``find_cells`` falls back to classifying the image whole only when there is nothing to measure
    (``MppError``); any other failure of the estimate is a bug and raises, never a silent whole-image call."""
    import leukcore.detect.scale as scale
    from leukcore.field import find_cells
    from leukcore.mpp import MppError

    img = np.full((64, 64, 3), 200, np.uint8)

    def nothing(*a, **k):
        raise MppError("image: nothing to measure")

    monkeypatch.setattr(scale, "estimate_slide_mpp", nothing)
    table, mpp, source = find_cells(img, None, detector=object())
    assert len(table) == 0 and mpp is None and source is None

    def bug(*a, **k):
        raise IndexError("index 2 is out of bounds")

    monkeypatch.setattr(scale, "estimate_slide_mpp", bug)
    with pytest.raises(IndexError):
        find_cells(img, None, detector=object())
