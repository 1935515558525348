"""Models loaded by name, card or object, once per process: the one model loader.

:func:`load_detector` and :func:`load_classifier` take what a user names a model by (a shipped name, a card
``.yaml`` path, a run folder, a card dict) or an already loaded model (returned as it is).  A loaded model is
kept in a small per-process cache keyed by its card file (path and sha256 of its bytes), its weights' sha256,
the device and the load options, so the pipeline, the batch workers, ``leuk classify`` on fields, the web demo
and the napari widget load each model once.  A card whose weights carry no sha256 (``trust_unverified``) is
never cached: its weights could change under the same card.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any, Optional

from .settings import DEFAULT_CLASSIFIER, DEFAULT_DETECTOR

__all__ = ["load_detector", "load_classifier", "load_model_card", "clear_model_cache", "MAX_CACHED"]

#: models kept per process (least recently used dropped first)
MAX_CACHED = 8

_CACHE: OrderedDict[tuple, Any] = OrderedDict()
#: (task, name or path, $LEUK_MODEL_PATH, device, trust, options) -> (card path, its mtime, key in _CACHE)
_BY_NAME: dict[tuple, tuple] = {}
_LOCK = threading.RLock()


def load_model_card(name_or_card, trust_unverified: bool = False) -> dict:
    """The card dict of a model name / card path / run folder (a dict is returned as it is)."""
    if isinstance(name_or_card, dict):
        return name_or_card
    from .models.registry import load_card

    return load_card(name_or_card, trust_unverified=trust_unverified)


def _key(task: str, card: dict, device: str, options: dict) -> Optional[tuple]:
    sha = (card.get("weights") or {}).get("sha256")
    if not sha or not card.get("_card_path"):
        return None
    return (task, card["_card_path"], card.get("_card_sha256"), sha, str(device), tuple(sorted(options.items())))


def _name_key(task: str, name_or_card, device: str, trust_unverified: bool, options: dict) -> Optional[tuple]:
    """The key of a model asked for by name or path (the card is re-read only when its file changed)."""
    if not isinstance(name_or_card, (str, os.PathLike)):
        return None
    from .paths import MODEL_PATH_ENV

    return (
        task,
        str(name_or_card),
        os.environ.get(MODEL_PATH_ENV, ""),
        str(device),
        bool(trust_unverified),
        tuple(sorted(options.items())),
    )


def _known(name_key: Optional[tuple]):
    """The cached model of ``name_key`` when its card file is unchanged, else None."""
    hit = _BY_NAME.get(name_key) if name_key is not None else None
    if hit is None:
        return None
    card_path, mtime_ns, key = hit
    try:
        if os.stat(card_path).st_mtime_ns != mtime_ns:
            return None
    except OSError:
        return None
    return _CACHE.get(key)


def _load(task: str, name_or_card, device: str, trust_unverified: bool, options: dict):
    name_key = _name_key(task, name_or_card, device, trust_unverified, options)
    with _LOCK:
        model = _known(name_key)
        if model is not None:
            return model
    card = load_model_card(name_or_card, trust_unverified)
    key = _key(task, card, device, options)
    with _LOCK:
        if key is not None and name_key is not None:
            _BY_NAME[name_key] = (card["_card_path"], os.stat(card["_card_path"]).st_mtime_ns, key)
        if key is not None and key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        if task == "detection":
            from .detect import Detector

            model = Detector.load(card, device=device, **options)
        else:
            from .classify import Classifier

            model = Classifier.load(card, device=device, **options)
        if key is not None:
            _CACHE[key] = model
            while len(_CACHE) > MAX_CACHED:
                _CACHE.popitem(last=False)
        return model


def load_detector(detector=DEFAULT_DETECTOR, device: str = "auto", trust_unverified: bool = False, **options):
    """A loaded detector from a name / card path / card dict (cached), or ``detector`` itself if loaded.

    ``trust_unverified``: load a card whose weights have no sha256 (refused otherwise).  ``options`` go to
    ``Detector.load`` (``backend``, ``threads``).
    """
    if detector is None or hasattr(detector, "card"):
        return detector
    return _load("detection", detector, device, trust_unverified, options)


def load_classifier(classifier=DEFAULT_CLASSIFIER, device: str = "auto", trust_unverified: bool = False, **options):
    """A loaded classifier from a name / card path / card dict (cached), or ``classifier`` itself if loaded.

    ``trust_unverified``: load a card whose weights have no sha256 (refused otherwise).  ``options`` go to
    ``Classifier.load`` (``backend``).
    """
    if classifier is None or hasattr(classifier, "predict_crops"):
        return classifier
    return _load("classification", classifier, device, trust_unverified, options)


def clear_model_cache() -> None:
    """Forget every cached model (tests; freeing memory)."""
    with _LOCK:
        _CACHE.clear()
        _BY_NAME.clear()
