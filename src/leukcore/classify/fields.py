"""From per-cell probabilities to one label per field (an image holding several cells).

A field (e.g. a four-class B-ALL image) is classified from **all** its detected cells:

``mean_prob``      the mean of the cells' class probabilities (arithmetic mean);
``mean_log_prob``  the mean of the cells' log-probabilities, renormalised (a normalised geometric mean:
                   the product of the cells' likelihoods, i.e. the cells as independent evidence).

Cell probabilities may come with test-time augmentation (:data:`TTA_MODES`, see
:meth:`leukcore.classify.Classifier.predict_crops`).  A model card may name its field rule under
``inference`` (``field_aggregation``, ``tta``), chosen on the validation split at training time;
:func:`field_rule` reads it (default ``mean_prob`` without TTA).
"""

from __future__ import annotations

import numpy as np

__all__ = ["FIELD_AGGREGATIONS", "TTA_MODES", "aggregate_cells", "field_rule"]

FIELD_AGGREGATIONS = ("mean_prob", "mean_log_prob")
#: ``None``: the crop as is; ``flip``: + horizontal flip (2 views); ``d4``: the 8 flips/90-degree rotations
TTA_MODES = (None, "flip", "d4")
_EPS = 1e-6


def aggregate_cells(probs: np.ndarray, how: str = "mean_prob") -> np.ndarray:
    """Class probabilities ``(C,)`` of a field from its cells' probabilities ``(K, C)`` (``K >= 1``)."""
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or not len(probs):
        raise ValueError(f"aggregate_cells needs (K >= 1, C) probabilities, got shape {probs.shape}")
    if how == "mean_prob":
        return probs.mean(0)
    if how == "mean_log_prob":
        z = np.log(np.clip(probs, _EPS, 1.0)).mean(0)
        e = np.exp(z - z.max())
        return e / e.sum()
    raise ValueError(f"unknown field aggregation {how!r}; expected one of {FIELD_AGGREGATIONS}")


def field_rule(card: dict | None) -> dict:
    """``{"field_aggregation", "tta"}`` of a model card (its ``inference`` block), with defaults."""
    inf = dict((card or {}).get("inference") or {})
    agg = inf.get("field_aggregation", "mean_prob")
    tta = inf.get("tta") or None
    if agg not in FIELD_AGGREGATIONS:
        raise ValueError(f"model card: inference.field_aggregation {agg!r} not in {FIELD_AGGREGATIONS}")
    if tta not in TTA_MODES:
        raise ValueError(f"model card: inference.tta {tta!r} not in {TTA_MODES}")
    return {"field_aggregation": agg, "tta": tta}
