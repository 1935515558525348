"""Batched classification of every cell of a table: :func:`classify_cells`."""

from __future__ import annotations

import time

import numpy as np

from ..progress import emit, is_cancelled
from .crops import extract_crops

__all__ = ["classify_cells", "review_rule", "UNCLASSIFIED"]

UNCLASSIFIED = "unclassified"


def review_rule(classifier, review_threshold=None) -> tuple:
    """``(review threshold, blast threshold or None)`` of a classifier: ``review_threshold`` when given,
    else the card's (:attr:`Classifier.review_threshold` / :attr:`Classifier.blast_threshold`); any
    object without them (a test double) gets :data:`~leukcore.results.DEFAULT_REVIEW_THRESHOLD`.
    """
    from ..results import DEFAULT_REVIEW_THRESHOLD

    rt = (
        review_threshold
        if review_threshold is not None
        else getattr(classifier, "review_threshold", DEFAULT_REVIEW_THRESHOLD)
    )
    return float(rt), getattr(classifier, "blast_threshold", None)


def classify_cells(
    slide, table, classifier, *, batch_size: int = 64, progress=None, cancel=None, review_threshold=None, mpp=None
):
    """Classify each cell of ``table`` from its crop; returns a new classified :class:`CellTable`.

    Crops are read batch by batch from the lazy slide (only the needed regions).
    Adds ``label``, ``confidence``, ``prob_<class>`` and ``review`` (and, for a model card with OOD
    statistics, ``ood_score`` and ``review_reason``: a cell unlike the training cells goes to review
    with reason ``"ood"``, see :mod:`leukcore.classify.ood`); ``meta`` gains
    ``classifier`` (name, version, backend, classes) and a ``classify_s`` timing.
    A cancelled run returns the table with the cells not reached labelled
    ``"unclassified"`` (probabilities NaN, ``review`` True) and ``meta['partial'] = True``.

    Parameters
    ----------
    slide : Slide
    table : CellTable
    classifier : Classifier
    batch_size : int
    progress : callable, optional
        Receives ``ProgressEvent(stage="classify", done=cells, total=cells)``.
    cancel : CancelToken or callable, optional
        Checked between batches.
    """
    t0 = time.perf_counter()
    out = table.copy()
    n = len(out)
    C = len(classifier.classes)
    probs = np.full((n, C), np.nan, np.float32)
    ood_t = getattr(classifier, "ood_threshold", None)
    scores = np.full(n, np.nan, np.float32) if ood_t is not None else None
    done = 0
    emit(progress, "classify", 0, n, cells=n, message="classifying cells")
    partial = False
    for i in range(0, n, batch_size):
        if is_cancelled(cancel):
            partial = True
            break
        rows = np.arange(i, min(i + batch_size, n))
        crops = extract_crops(slide, out, classifier, rows=rows, mpp=mpp)
        if scores is None:
            probs[rows] = classifier.predict_crops(crops, batch_size=batch_size)
        else:
            probs[rows], scores[rows] = classifier.predict_crops_ood(crops, batch_size=batch_size)
        done = int(rows[-1]) + 1
        emit(progress, "classify", done, n, cells=n)
    filled = np.where(np.isnan(probs), 0.0, probs)
    rt, bt = review_rule(classifier, review_threshold)
    out.set_classification(
        filled,
        classifier.classes,
        review_threshold=rt,
        blast_threshold=bt,
        ood_score=None if scores is None else np.nan_to_num(scores, nan=0.0),
        ood_threshold=ood_t,
    )
    if done < n:
        _mark_unreached(out, done, classifier.classes, has_ood=scores is not None)
    out.meta["classifier"] = _classifier_meta(classifier, ood_t)
    out.meta["partial"] = bool(out.meta.get("partial", False) or partial)
    out.meta.setdefault("timings", {})
    if isinstance(out.meta["timings"], dict):
        out.meta["timings"]["classify_s"] = round(time.perf_counter() - t0, 4)
    return out


def _mark_unreached(out, done: int, classes, *, has_ood: bool) -> None:
    """Label the cells from row ``done`` on (a cancelled run never reached them) ``unclassified``."""
    out.df.loc[done:, "label"] = UNCLASSIFIED
    out.df.loc[done:, "review"] = True
    if has_ood:
        out.df.loc[done:, "ood_score"] = np.nan
        out.df.loc[done:, "review_reason"] = UNCLASSIFIED
    for c in classes:
        out.df.loc[done:, f"prob_{c}"] = np.nan
    out.df.loc[done:, "confidence"] = np.nan


def _classifier_meta(classifier, ood_t) -> dict:
    """What ``meta['classifier']`` records: the model's name, version, backend, classes and crop geometry."""
    card = getattr(classifier, "card", {}) or {}
    meta = {
        "name": card.get("name"),
        "version": card.get("version"),
        "backend": getattr(classifier, "backend", None),
        "classes": list(classifier.classes),
        "crop_um": classifier.spec.crop_um,
        "input_size": classifier.spec.size,
    }
    if ood_t is not None:
        meta["ood"] = {"score": (card.get("review") or {}).get("ood", {}).get("score"), "threshold": float(ood_t)}
    return meta
