"""Group-aware, stratified splits; the split type travels with every metrics file.

Groups are subjects (patients) where known, else content hashes (images).  No group is
ever in two parts.  Split types:

``patient-level``   every row has a subject; groups are (merged) subjects.
``image-level``     no subjects; each image (content hash) is its own group (optimistic for
                    field sets from few patients, such as the four-class set).
``source-level``    the held-out part is a whole source (dataset / lab) never seen in training.
"""

from __future__ import annotations

import numpy as np

__all__ = ["split_type", "assign_splits", "group_kfold"]


def split_type(df) -> str:
    """``patient-level`` when every row has a subject, else ``image-level``."""
    subj = df["subject"] if "subject" in df else None
    if subj is not None and len(df) and subj.notna().all():
        return "patient-level"
    return "image-level"


def _sgkf(n_splits: int, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold

    return StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)


def group_kfold(df, k: int = 5, seed: int = 0) -> np.ndarray:
    """Fold index (0..k-1) per row; stratified by label, grouped by ``group``."""
    fold = np.full(len(df), -1, int)
    for i, (_, te) in enumerate(_sgkf(k, seed).split(np.zeros(len(df)), df["label"], df["group"])):
        fold[te] = i
    return fold


def assign_splits(df, test_frac: float = 0.2, val_frac: float = 0.15, seed: int = 0, holdout_sources=()):
    """Return a copy with ``split`` in {train, val, test} and the split type in ``df.attrs``.

    ``test_frac`` / ``val_frac`` are fractions of all rows (rounded to whole folds of a
    stratified group k-fold).  Rows whose ``source`` is in ``holdout_sources`` all go to test
    (a source-level hold-out).
    """
    df = df.copy().reset_index(drop=True)
    split = np.array(["train"] * len(df), dtype=object)
    held = df["source"].isin(list(holdout_sources)).to_numpy() if holdout_sources else np.zeros(len(df), bool)
    split[held] = "test"
    rest = np.flatnonzero(~held)
    if test_frac > 0:
        k = max(2, int(round(1.0 / test_frac)))
        sub = df.iloc[rest]
        te = next(iter(_sgkf(k, seed).split(np.zeros(len(sub)), sub["label"], sub["group"])))[1]
        split[rest[te]] = "test"
    rest = np.flatnonzero(split == "train")
    if val_frac > 0 and len(rest):
        frac = val_frac / max(1e-9, len(rest) / len(df))
        k = max(2, int(round(1.0 / frac)))
        sub = df.iloc[rest]
        va = next(iter(_sgkf(k, seed + 1).split(np.zeros(len(sub)), sub["label"], sub["group"])))[1]
        split[rest[va]] = "val"
    df["split"] = split
    st = split_type(df)
    if holdout_sources:
        st = f"source-level ({', '.join(holdout_sources)}) + {st}"
    df.attrs["split_type"] = st
    # a group must never straddle parts
    g = df.groupby("group")["split"].nunique()
    assert (g <= 1).all(), "group split across parts"
    return df
