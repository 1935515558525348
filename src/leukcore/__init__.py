"""leukcore: find and classify white blood cells in whole blood-smear slides.

Submodules are loaded lazily (scikit-image style), so ``import leukcore`` is fast
and never pulls in torch, dask or any GUI toolkit until a function needs them.

Main entry points
-----------------
open_slide, write_slide
    Lazy multiscale slides (:mod:`leukcore.io`).
detect_cells
    StarDist-method white-cell detection (:mod:`leukcore.detect`).
classify_cells
    Crop classification with timm backbones (:mod:`leukcore.classify`).
analyze_slide
    Detection + classification + summary (:mod:`leukcore.pipeline`).
iter_analyze
    The same as a generator: progress events, then the result (for GUIs).
classify_image
    One field or single-cell image, detected and classified (:mod:`leukcore.field`).
CellTable
    The one per-cell results table (:mod:`leukcore.results`).
"""

from __future__ import annotations

import importlib

from ._version import __version__ as __version__

_SUBMODULES = {
    "io",
    "tiling",
    "detect",
    "classify",
    "models",
    "train",
    "export",
    "results",
    "pipeline",
    "field",
    "batch",
    "progress",
    "device",
    "sample",
    "cli",
    "testing",
    "mpp",
}

# public name -> submodule that defines it
_ATTRS = {
    "open_slide": "io",
    "write_slide": "io",
    "Slide": "io",
    "SlideError": "io",
    "CellTable": "results",
    "CancelToken": "progress",
    "Cancelled": "progress",
    "ProgressEvent": "progress",
    "detect_cells": "detect",
    "classify_cells": "classify",
    "analyze_slide": "pipeline",
    "iter_analyze": "pipeline",
    "classify_image": "field",
    "run_batch": "batch",
    "resolve_device": "device",
}

__all__ = sorted(_SUBMODULES | set(_ATTRS) | {"__version__"})


def __getattr__(name: str):
    if name in _SUBMODULES:
        mod = importlib.import_module(f".{name}", __name__)
        globals()[name] = mod
        return mod
    if name in _ATTRS:
        mod = importlib.import_module(f".{_ATTRS[name]}", __name__)
        value = getattr(mod, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'leukcore' has no attribute {name!r}")


def __dir__():
    return __all__
