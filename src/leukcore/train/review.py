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

The **OOD** rule (:mod:`leukcore.classify.ood`): its statistics come from the model's own
training cells (:func:`model_cell_set`: the crop cache ``leuk train`` built, with the cell finder the
card records), its threshold is the score quantile that keeps ``keep`` of the same shifted
validation cells (:func:`choose_ood_threshold`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = [
    "threshold_table",
    "choose_review_threshold",
    "choose_blast_threshold",
    "shifted_copies",
    "REVIEW_GRID",
    "model_cell_set",
    "model_cell_features",
    "choose_ood_threshold",
    "ood_review_block",
]

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
        rows.append(
            {
                "threshold": float(t),
                "kept": float(keep.mean()) if len(keep) else 0.0,
                "kept_accuracy": float(ok[keep].mean()) if keep.any() else None,
            }
        )
    return rows


def choose_review_threshold(
    probs: np.ndarray, y: np.ndarray, *, target_accuracy: float = 0.95, min_kept: float = 0.5, grid=REVIEW_GRID
) -> dict:
    """The lowest threshold whose kept cells reach ``target_accuracy`` while keeping ``min_kept``.

    Returns ``{"confidence", "kept", "kept_accuracy", "target_accuracy", "table"}``.
    """
    table = threshold_table(probs, y, grid)
    ok = [
        r
        for r in table
        if r["kept_accuracy"] is not None and r["kept_accuracy"] >= target_accuracy and r["kept"] >= min_kept
    ]
    if ok:
        best = ok[0]
    else:
        cands = [r for r in table if r["kept_accuracy"] is not None and r["kept"] >= min_kept] or [
            r for r in table if r["kept_accuracy"] is not None
        ]
        best = max(cands, key=lambda r: (r["kept_accuracy"], -r["threshold"]))
    return {
        "confidence": best["threshold"],
        "kept": round(best["kept"], 4),
        "kept_accuracy": round(best["kept_accuracy"], 4),
        "target_accuracy": target_accuracy,
        "min_kept": min_kept,
        "table": table,
    }


def choose_blast_threshold(
    probs: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    blast: np.ndarray,
    *,
    floor: float,
    max_fpr: float = 0.05,
    grid=REVIEW_GRID,
) -> dict:
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
        fpr = {str(g): float((called & (conf >= t))[normal & (groups == g)].mean()) for g in np.unique(groups[normal])}
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
    return augment_crops(
        crops,
        rng,
        {"hed_sigma": hed, "hed_bias": hed, "quality": {"p_res": 0.8, "p_jpeg": 0.6, "p_blur": 0.4, "p_noise": 0.4}},
    )


def review_block(
    chosen: dict, *, data: str, n_cells: int, note: Optional[str] = None, blast: Optional[dict] = None
) -> dict:
    """The card's ``review`` block (no table)."""
    out = {
        "confidence": chosen["confidence"],
        "rule": "top-class probability below confidence -> review"
        + ("; a blast call below blast_confidence -> review" if blast else ""),
        "chosen_on": data,
        "n_cells": int(n_cells),
        "target_accuracy": chosen["target_accuracy"],
        "kept": chosen["kept"],
        "kept_accuracy": chosen["kept_accuracy"],
    }
    if blast:
        out["blast_confidence"] = blast["blast_confidence"]
        out["blast_fpr_per_source"] = {k: round(v, 4) for k, v in blast["fpr_per_group"].items()}
        out["blast_max_fpr"] = blast["max_fpr"]
        out["blast_calls_kept"] = None if blast["blast_kept"] is None else round(blast["blast_kept"], 4)
    if note:
        out["note"] = note
    return out


def model_cell_set(card: dict):
    """``(df, classes, spec, cells)`` of the cells a model was trained, validated and tested on.

    The training config the card records, read through :func:`leukcore.train.prepare.prepare` with the
    cell finder **the card records** (``training.data.finder``, e.g. an older detector's thresholds): the
    crop cache ``leuk train`` wrote is read; when it is missing this raises instead of finding other
    cells with today's detector.
    """
    from . import prepare as prep
    from .cells import cell_cache_dir, cell_set_key
    from .config import resolve_config

    c = card["training"]["config"]
    cfg = resolve_config({k: v for k, v in c.items() if not k.startswith("_")})
    cfg["data"]["only_cached"] = False
    recorded = ((card.get("training") or {}).get("data") or {}).get("finder")
    finder = prep.make_finder(cfg)
    if recorded:
        finder.name = recorded
    df, classes = prep.read_datasets(cfg)
    spec = prep.spec_from_config(cfg)
    key = cell_set_key(df, spec, finder, cfg["data"]["max_cells_per_image"], False)
    if not (cell_cache_dir() / f"cells-{key}.npz").exists():
        raise FileNotFoundError(
            f"{card.get('name')}: the crop cache of its training cells (cells-{key}.npz, "
            f"finder {finder.name}) is not in {cell_cache_dir()}; run `leuk train` with its "
            "config on this machine first"
        )
    orig = prep.make_finder
    prep.make_finder = lambda cfg, device="cpu": finder
    try:
        return prep.prepare(cfg)
    finally:
        prep.make_finder = orig


def model_cell_features(clf, cache=None, max_per_split: Optional[int] = None, seed: int = 0) -> dict:
    """Pooled features and probabilities of the cells of :func:`model_cell_set` and of its validation
    cells through :func:`shifted_copies` (seed 0), with each cell's label, split, source and cell type.

    ``max_per_split``: at most this many cells of each split (a seeded draw; CPU budget), else all.
    ``cache``: an ``.npz`` path, read when it exists, else written (features as float16).
    """
    from pathlib import Path

    from ..classify.model import crop_features

    if cache is not None and Path(cache).exists():
        return dict(np.load(cache, allow_pickle=False))
    df, classes, _, cells = model_cell_set(clf.card)
    keep = np.arange(len(cells["row"]))
    if max_per_split:
        rng = np.random.default_rng(seed)
        keep = np.sort(
            np.concatenate(
                [
                    i if len(i) <= max_per_split else rng.choice(i, max_per_split, replace=False)
                    for i in (np.flatnonzero(cells["split"] == k) for k in np.unique(cells["split"]))
                ]
            )
        )
    crops, row, split = cells["crops"][keep], cells["row"][keep], cells["split"][keep].astype(str)
    va = np.flatnonzero(split == "val")
    P, F = crop_features(clf, crops, onnx=True)
    Ps, Fs = crop_features(clf, shifted_copies(crops[va]), onnx=True)
    out = {
        "label": cells["label"][keep],
        "split": split,
        "row": row,
        "source": df["source"].to_numpy().astype(str)[row],
        "cell_type": np.asarray(df["cell_type"].astype(str).to_numpy(), dtype=str)[row],
        "classes": np.array(classes, dtype=str),
        "probs": P,
        "feats": F.astype(np.float16),
        "val_idx": va,
        "val_shift_probs": Ps,
        "val_shift_feats": Fs.astype(np.float16),
        "max_per_split": np.array(max_per_split or 0),
    }
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **out)
    return out


def choose_ood_threshold(val_scores: np.ndarray, keep: float = 0.95, groups: Optional[np.ndarray] = None) -> float:
    """The OOD score below which ``keep`` of the (shifted) validation cells lie.

    ``groups`` (each cell's source): the largest of the per-source quantiles, so that at least ``keep`` of
    **every** source's cells are kept.  A pooled quantile would fall on the sources with the fewest
    training cells: the shared covariance is the majority source's, and a minority source's own cells
    lie further out (``all-binary``: half of its in-source PBC test cells would go to review).
    """
    v = np.asarray(val_scores, np.float64)
    ok = np.isfinite(v)
    if not ok.any():
        raise ValueError("no validation scores to choose an OOD threshold on")
    if groups is None:
        return float(np.quantile(v[ok], keep))
    g = np.asarray(groups)[ok]
    return float(max(np.quantile(v[ok][g == k], keep) for k in np.unique(g)))


def ood_review_block(
    stats_file: dict,
    threshold: float,
    keep: float,
    chosen_on: str,
    split: str,
    fitted: dict,
    measured: Optional[dict] = None,
) -> dict:
    """The card's ``review.ood`` block.

    ``stats_file``: ``{"file", "sha256"}``; ``fitted``: how the statistics were fitted (``n_train_cells``,
    ``n_val_cells``, ``pca_k``, ``shrinkage``); ``measured``: shares of cells it sends to review.
    """
    from ..classify.ood import OOD_SCORE_NAME

    out = {
        "score": OOD_SCORE_NAME,
        "rule": "OOD score above threshold -> review (reason ood), whatever the confidence",
        "threshold": round(float(threshold), 5),
        "keep": keep,
        "chosen_on": chosen_on,
        "split": split,
        "file": stats_file["file"],
        "sha256": stats_file["sha256"],
        "fitted_on": f"pooled features of {fitted.get('n_train_cells')} of the model's training cells",
        **fitted,
    }
    if measured:
        out["measured"] = measured
    return out
