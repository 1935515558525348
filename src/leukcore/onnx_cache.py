"""Shared ONNX Runtime helpers: is it installed, and where exports are cached.

Used by the classifier (:mod:`leukcore.classify.onnx_backend`) and the detector
(:mod:`leukcore.detect.onnx_backend`), which may not import each other (import contract:
detection and classification meet only in the pipeline).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["cache_dir", "onnx_available"]


def onnx_available() -> bool:
    """True when ONNX Runtime can be imported."""
    try:
        import onnxruntime  # noqa: F401

        return True
    except ImportError:
        return False


def cache_dir() -> Path:
    """:func:`leukcore.paths.cache_dir`: ``$LEUK_CACHE`` or the platform user cache dir (``.../leukcore``)."""
    from .paths import cache_dir as _cache_dir

    return _cache_dir()
