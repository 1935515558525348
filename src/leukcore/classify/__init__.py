"""Cell classification: crops from the slide, a timm classifier, batched inference, Grad-CAM.

Public API (imported lazily so ``import leukcore.classify`` stays light)::

    Classifier.load(name_or_card="all-binary", device="auto", backend="auto")
    extract_crops(slide, table, classifier_or_spec, masks=None)
    classify_cells(slide, table, classifier, batch_size=64, progress=None, cancel=None)
    gradcam(classifier, crops, target=None)
"""

from __future__ import annotations

import importlib

__all__ = ["Classifier", "CropSpec", "extract_crops", "crops_from_array", "classify_cells", "gradcam", "preprocess"]

_WHERE = {
    "Classifier": ".model",
    "CropSpec": ".geometry",
    "extract_crops": ".crops",
    "crops_from_array": ".crops",
    "classify_cells": ".infer",
    "gradcam": ".cam",
    "preprocess": ".inputs",
}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
