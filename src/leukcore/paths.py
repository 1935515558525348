"""Where leukcore finds things on disk: the one owner of the data, cache and model folders.

=====================  ==================  =========================================================
folder                 environment         default
=====================  ==================  =========================================================
:func:`data_dir`       ``LEUK_DATA``       ``<repo>/../shared/data`` (the public data sets)
:func:`cache_dir`      ``LEUK_CACHE``      ``platformdirs.user_cache_dir("leukcore")`` (sample slide,
                                           ONNX exports, cell crops)
:func:`model_path`     ``LEUK_MODEL_PATH`` none (``os.pathsep``-separated folders searched for models by
                                           name before the shipped weights)
=====================  ==================  =========================================================

``<repo>`` is the checkout holding ``src/leukcore`` (:data:`REPO_ROOT`).  The environment is read at every
call, so a test or a process may change it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV", "CACHE_ENV", "MODEL_PATH_ENV", "REPO_ROOT", "data_dir", "cache_dir", "model_path"]

DATA_ENV = "LEUK_DATA"
CACHE_ENV = "LEUK_CACHE"
MODEL_PATH_ENV = "LEUK_MODEL_PATH"
#: the checkout (or install prefix) above ``src/leukcore``
REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """The real-data folder: ``$LEUK_DATA`` or ``<repo>/../shared/data``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data"


def cache_dir() -> Path:
    """The user cache: ``$LEUK_CACHE`` or ``platformdirs.user_cache_dir("leukcore")``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("leukcore"))


def model_path() -> list[Path]:
    """The existing folders named by ``$LEUK_MODEL_PATH`` (``~`` expanded), in order."""
    extra = [Path(d).expanduser() for d in os.environ.get(MODEL_PATH_ENV, "").split(os.pathsep) if d.strip()]
    return [d for d in extra if d.is_dir()]
