"""A model card's input / output spec, typed: :class:`ModelCard`.

The card files (``<name>.yaml``, :func:`leukcore.models.load_card`) hold much more (training, metrics,
licences); what the code that *uses* a model needs is its I/O spec: the pixel size it works at, the crop it
reads, the classes it answers with, which of them are blasts, their colours, and the review rule chosen on
validation data.  The napari widget, the report and anything else that shows a model read it from here instead
of repeating what the cards say.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

__all__ = ["ModelCard"]


@dataclass(frozen=True)
class ModelCard:
    """The I/O spec of a detection or classification model card.

    Attributes
    ----------
    name, task : str
        Model name and ``"detection"`` / ``"classification"``.
    version : int or None
        Card version.
    mpp : float or None
        Microns per pixel of the network input: the detector's working pixel size (``input.mpp``); for a
        classifier the pixel size assumed for inputs that have none (``input.default_mpp``).
    input_size : int or None
        Network input side in pixels (a classifier's crop ``input.size``, a detector's ``input.patch``).
    crop_um : float or None
        Side of a classifier's crop in microns (``input.crop_um``).
    classes : tuple of str
        Output classes (a classifier's, in output order); empty for a detector.
    blast_classes : tuple of str
        The classes counted as blasts / ALL (:data:`leukcore.results.BLAST_CLASSES`).
    colors : dict
        RGB colour (0-255) of each class (:func:`leukcore.results.class_color`).
    review_confidence, blast_confidence : float or None
        The card's review rule (``review.confidence``, ``review.blast_confidence``), None when it has none.
    path : str or None
        The card file it was read from.
    """

    name: str
    task: str
    version: Optional[int] = None
    mpp: Optional[float] = None
    input_size: Optional[int] = None
    crop_um: Optional[float] = None
    classes: tuple = ()
    blast_classes: tuple = ()
    colors: Mapping[str, tuple] = field(default_factory=dict)
    review_confidence: Optional[float] = None
    blast_confidence: Optional[float] = None
    path: Optional[str] = None

    @classmethod
    def from_dict(cls, card: Mapping[str, Any]) -> ModelCard:
        """The spec of a card dict (as :func:`leukcore.models.load_card` returns it)."""
        from ..results import BLAST_CLASSES, class_color

        inp = card.get("input") or {}
        review = card.get("review") or {}
        classes = tuple(str(c) for c in card.get("classes") or ())
        task = str(card.get("task", ""))
        mpp = inp.get("mpp") if task == "detection" else inp.get("default_mpp")
        size = inp.get("size") if task == "classification" else inp.get("patch")
        return cls(
            name=str(card.get("name", "")),
            task=task,
            version=None if card.get("version") is None else int(card["version"]),
            mpp=None if mpp is None else float(mpp),
            input_size=None if size is None else int(size),
            crop_um=None if inp.get("crop_um") is None else float(inp["crop_um"]),
            classes=classes,
            blast_classes=tuple(c for c in classes if c in BLAST_CLASSES),
            colors={c: tuple(class_color(c)) for c in classes},
            review_confidence=_float(review.get("confidence")),
            blast_confidence=_float(review.get("blast_confidence")),
            path=card.get("_card_path"),
        )

    @classmethod
    def load(cls, name_or_path: str | os.PathLike, *, trust_unverified: bool = False) -> ModelCard:
        """The spec of a shipped model name, card ``.yaml`` or run folder (reads the card only, no weights)."""
        from .registry import load_card

        return cls.from_dict(load_card(name_or_path, trust_unverified=trust_unverified))


def _float(v) -> Optional[float]:
    return None if v is None else float(v)
