"""Capping the training cells per image keeps every validation / test cell."""

import numpy as np

from leukcore.train.prepare import cap_train_cells


def test_cap_train_cells_only_caps_training_images():
    rows = np.array([0] * 5 + [1] * 2 + [2] * 6 + [3] * 4)
    split = np.array(["train"] * 5 + ["train"] * 2 + ["test"] * 6 + ["val"] * 4)
    cells = {
        "row": rows,
        "split": split,
        "label": rows % 2,
        "crops": np.arange(len(rows))[:, None],
        "n_cells": np.array([5, 2, 6, 4]),
        "found": np.ones(4, bool),
    }
    out = cap_train_cells(cells, 3, seed=0)
    assert np.bincount(out["row"], minlength=4).tolist() == [3, 2, 6, 4]
    assert out["n_cells"].tolist() == [5, 2, 6, 4]  # detected cells still counted
    assert (out["crops"][:, 0] == np.flatnonzero(np.isin(np.arange(len(rows)), out["crops"][:, 0]))).all()
    assert set(out["crops"][out["row"] == 0, 0]) <= set(range(5))  # crops stay with their rows
    assert (out["label"] == out["row"] % 2).all()
    a = cap_train_cells(cells, 3, seed=0)
    assert (a["crops"] == cap_train_cells(cells, 3, seed=0)["crops"]).all()  # seeded
    assert not all((cap_train_cells(cells, 3, seed=s)["crops"] == a["crops"]).all() for s in range(1, 6))
