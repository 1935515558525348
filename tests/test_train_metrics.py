"""Metrics, bootstrap CIs, ECE, plots; stain tools (Reinhard, swap targets, HED jitter)."""

import json

import numpy as np
import pytest

from leukcore.train.metrics import bootstrap_ci, classification_metrics, ece, plot_confusion, plot_roc
from leukcore.train.stain import hed_jitter, lab_stats, reinhard, swap_targets


def test_metrics_on_known_predictions(tmp_path):
    y = np.array([0, 0, 1, 1, 2, 2])
    P = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.9 + 0.1 / 3
    m = classification_metrics(y, P, ["a", "b", "c"], split_type="image-level", n_boot=200)
    assert m["split_type"] == "image-level" and m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["b"]["recall"] == 1.0 and m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    lo, hi = m["ci95"]["accuracy"]
    assert lo <= m["accuracy"] <= hi and lo < hi
    assert 0 <= m["roc_auc_ovr"]["a"] <= 1
    json.dumps(m)
    assert plot_confusion(m["confusion_matrix"], ["a", "b", "c"], tmp_path / "cm.png").stat().st_size > 1000
    assert plot_roc(y, P, ["a", "b", "c"], tmp_path / "roc.png").stat().st_size > 1000


def test_ece_perfect_and_overconfident():
    y = np.array([0, 1] * 50)
    perfect = np.eye(2)[y]
    assert ece(perfect, y) == pytest.approx(0.0)
    wrong = np.eye(2)[1 - y]
    assert ece(wrong, y) == pytest.approx(1.0)


def test_grouped_bootstrap_is_wider_for_correlated_rows():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(10), 20)
    correct = np.repeat(rng.random(10) < 0.6, 20)
    y = np.zeros(200, int)
    P = np.where(correct[:, None], [[0.9, 0.1]], [[0.1, 0.9]])
    a = bootstrap_ci(y, P, n_boot=300)
    b = bootstrap_ci(y, P, n_boot=300, groups=groups)
    assert (b["accuracy"][1] - b["accuracy"][0]) > (a["accuracy"][1] - a["accuracy"][0])


def test_reinhard_matches_target_statistics():
    rng = np.random.default_rng(0)
    img = (rng.random((40, 40, 3)) * 120 + 80).astype(np.uint8)
    tgt = lab_stats(
        (rng.random((40, 40, 3)) * 60 + 150).astype(np.uint8) * np.array([1, 0.6, 1])[None, None].astype(np.uint8)
    )
    out = reinhard(img, tgt)
    got = lab_stats(out)
    assert np.allclose(got[:3], tgt[:3], atol=2.0)
    assert np.allclose(got[3:], tgt[3:], atol=2.0)


def test_swap_targets_never_own_class_and_cycle():
    labels = ["a"] * 4 + ["b"] * 2 + ["c"]
    t = swap_targets(labels, ["a", "b", "c"])
    assert all(x != y for x, y in zip(labels, t, strict=False))
    assert t[:4] == ["b", "c", "b", "c"]


def test_hed_jitter_changes_colour_not_shape():
    rng = np.random.default_rng(0)
    img = np.full((16, 16, 3), 230, np.uint8)
    img[4:12, 4:12] = (110, 50, 160)
    out = hed_jitter(img, rng, sigma=0.2, bias=0.2)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(out, img)
    inside, outside = out[8, 8].astype(int), out[0, 0].astype(int)
    assert np.abs(inside - outside).sum() > 60  # the cell stays distinct
    batch = hed_jitter(np.stack([img, img]), rng)
    assert batch.shape == (2, 16, 16, 3)
