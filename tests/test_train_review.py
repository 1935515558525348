"""Review-threshold choice (leukcore.train.review)."""

import numpy as np

from leukcore.train.review import choose_review_threshold, shifted_copies, threshold_table


def test_lowest_threshold_reaching_target_accuracy():
    # confident cells right, unsure ones wrong: the threshold must cut between them
    conf = np.r_[np.full(80, 0.95), np.full(20, 0.62)]
    P = np.c_[conf, 1 - conf]
    y = np.r_[np.zeros(80, int), np.ones(20, int)]  # the 0.62 cells are all wrong
    c = choose_review_threshold(P, y, target_accuracy=0.95, min_kept=0.5)
    assert 0.62 < c["confidence"] <= 0.95 and c["kept"] == 0.8 and c["kept_accuracy"] == 1.0
    rows = threshold_table(P, y)
    assert rows[0]["kept"] == 1.0 and abs(rows[0]["kept_accuracy"] - 0.8) < 1e-9


def test_unreachable_target_falls_back_to_best_kept_accuracy():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 200)
    P = np.c_[conf, 1 - conf]
    y = rng.integers(0, 2, 200)  # coin flips: no threshold reaches 0.95
    c = choose_review_threshold(P, y, target_accuracy=0.95, min_kept=0.5)
    assert c["kept"] >= 0.5 and c["kept_accuracy"] < 0.95


def test_shifted_copies_are_deterministic_and_change_the_crops():
    crops = np.random.default_rng(1).integers(0, 255, (4, 96, 96, 3), dtype=np.uint8)
    a, b = shifted_copies(crops, seed=3), shifted_copies(crops, seed=3)
    assert a.shape == crops.shape and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, crops)
