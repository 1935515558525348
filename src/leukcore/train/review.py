"""Choosing a classifier's review threshold on validation data that is not in-source.

A cell whose top-class probability is below the threshold is left for review
(:attr:`leukcore.classify.Classifier.review_threshold`, the card's ``review.confidence``):
it is shown to a person and counted neither as a blast nor as normal.

The threshold is chosen on the **validation** cells *as another lab would show them*: each
crop through :func:`~leukcore.train.features.degrade_crop` (zoom, resolution loss, JPEG,
blur, noise) and a HED stain jitter, with a fixed seed.  In-source validation cells are
too easy (the model is near-certain on them), so a threshold chosen there would send almost
nothing to review on a new lab's slide.  The rule: the **lowest** threshold at which the
cells kept (confidence >= threshold) reach ``target_accuracy``; if none does, the one with
the best kept accuracy.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["threshold_table", "choose_review_threshold", "choose_blast_threshold", "shifted_copies",
           "REVIEW_GRID"]

#: candidate thresholds (top-class probability)
REVIEW_GRID = tuple(np.round(np.arange(0.50, 0.995, 0.01), 3))


def threshold_table(probs: np.ndarray, y: np.ndarray, grid=REVIEW_GRID) -> list[dict]:
    """Per threshold: share of cells kept, accuracy of the kept cells, accuracy overall."""
    P = np.asarray(probs, np.float64)
    y = np.asarray(y)
    conf, pred = P.max(1), P.argmax(1)
    ok = pred == y
    rows = []
    for t in grid:
        keep = conf >= t
        rows.append({"threshold": float(t), "kept": float(keep.mean()) if len(keep) else 0.0,
                     "kept_accuracy": float(ok[keep].mean()) if keep.any() else None})
    return rows


def choose_review_threshold(probs: np.ndarray, y: np.ndarray, *, target_accuracy: float = 0.95,
                            min_kept: float = 0.5, grid=REVIEW_GRID) -> dict:
    """The lowest threshold whose kept cells reach ``target_accuracy`` while keeping ``min_kept``.

    Returns ``{"confidence", "kept", "kept_accuracy", "target_accuracy", "table"}``.
    """
    table = threshold_table(probs, y, grid)
    ok = [r for r in table if r["kept_accuracy"] is not None and r["kept_accuracy"] >= target_accuracy
          and r["kept"] >= min_kept]
    if ok:
        best = ok[0]
    else:
        cands = [r for r in table if r["kept_accuracy"] is not None and r["kept"] >= min_kept] or \
                [r for r in table if r["kept_accuracy"] is not None]
        best = max(cands, key=lambda r: (r["kept_accuracy"], -r["threshold"]))
    return {"confidence": best["threshold"], "kept": round(best["kept"], 4),
            "kept_accuracy": round(best["kept_accuracy"], 4), "target_accuracy": target_accuracy,
            "min_kept": min_kept, "table": table}


def choose_blast_threshold(probs: np.ndarray, y: np.ndarray, groups: np.ndarray, blast: np.ndarray, *,
                           floor: float, max_fpr: float = 0.05, grid=REVIEW_GRID) -> dict:
    """The lowest confidence a **blast** call needs so that, in every group (source) of normal cells,
    at most ``max_fpr`` of them are called a blast with that confidence.

    ``blast``: boolean per class (which classes are blast classes); ``groups``: the source of each
    cell.  A blast call below the threshold goes to review, never silently to a blast: what a
    false blast costs a patient is not what a false "normal" costs, so the two are not treated alike.
    Returns ``{"blast_confidence", "fpr_per_group", "blast_kept", "max_fpr"}``.
    """
    P = np.asarray(probs, np.float64)
    y, groups, blast = np.asarray(y), np.asarray(groups), np.asarray(blast, bool)
    pred, conf = P.argmax(1), P.max(1)
    normal = ~blast[y]
    called = blast[pred]
    chosen = None
    for t in [g for g in grid if g >= floor] + [1.0]:
        fpr = {str(g): float((called & (conf >= t))[normal & (groups == g)].mean())
               for g in np.unique(groups[normal])}
        if all(v <= max_fpr for v in fpr.values()):
            chosen = (float(t), fpr)
            break
    t, fpr = chosen
    true_blast = blast[y]
    kept = float((called & (conf >= t))[true_blast].mean()) if true_blast.any() else None
    return {"blast_confidence": t, "fpr_per_group": fpr, "blast_kept": kept, "max_fpr": max_fpr}


def shifted_copies(crops: np.ndarray, seed: int = 0, hed: float = 0.08) -> np.ndarray:
    """The crops as another lab's camera and stain might show them (fixed seed)."""
    from .features import augment_crops

    rng = np.random.default_rng(seed)
    return augment_crops(crops, rng, {"hed_sigma": hed, "hed_bias": hed,
                                      "quality": {"p_res": 0.8, "p_jpeg": 0.6, "p_blur": 0.4, "p_noise": 0.4}})


def review_block(chosen: dict, *, data: str, n_cells: int, note: Optional[str] = None,
                 blast: Optional[dict] = None) -> dict:
    """The card's ``review`` block (no table)."""
    out = {"confidence": chosen["confidence"], "rule": "top-class probability below confidence -> review"
           + ("; a blast call below blast_confidence -> review" if blast else ""),
           "chosen_on": data, "n_cells": int(n_cells), "target_accuracy": chosen["target_accuracy"],
           "kept": chosen["kept"], "kept_accuracy": chosen["kept_accuracy"]}
    if blast:
        out["blast_confidence"] = blast["blast_confidence"]
        out["blast_fpr_per_source"] = {k: round(v, 4) for k, v in blast["fpr_per_group"].items()}
        out["blast_max_fpr"] = blast["max_fpr"]
        out["blast_calls_kept"] = None if blast["blast_kept"] is None else round(blast["blast_kept"], 4)
    if note:
        out["note"] = note
    return out
