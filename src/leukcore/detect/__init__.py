"""White-blood-cell detection: the StarDist method in PyTorch, tiled over whole slides.

Main entry points
-----------------
Detector.load(name_or_card="wbc-stardist", device="auto")
    A loaded detector (``.card``, ``.mpp`` working pixel size, ``.device``).
detect_cells(slide, detector=None, *, tile_size=1024, batch_size=4, region=None,
             skip_empty=True, progress=None, cancel=None, device="auto", mpp=None)
    One :class:`~leukcore.results.CellTable` for the slide (level-0 polygons).
iter_detect(slide, detector, **same)
    The same as a generator of per-batch chunks.

torch is imported only when a detector is loaded or trained.
"""

from __future__ import annotations

import importlib

__all__ = ["Detector", "detect_cells", "iter_detect", "plan_detection", "DEFAULT_DETECTOR"]

_ATTRS = {
    "Detector": ".model",
    "DEFAULT_DETECTOR": ".model",
    "detect_cells": ".predict",
    "iter_detect": ".predict",
    "plan_detection": ".predict",
}


def __getattr__(name):
    if name in _ATTRS:
        return getattr(importlib.import_module(_ATTRS[name], __name__), name)
    raise AttributeError(f"module 'leukcore.detect' has no attribute {name!r}")


def __dir__():
    return __all__
