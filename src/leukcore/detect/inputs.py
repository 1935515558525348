"""The detector's input at inference (and in training batches): a field white-balanced to its glass colour,
optionally moved to a stain template.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .colour import background_color

__all__ = ["normalize_image", "field_input"]


def normalize_image(img: np.ndarray, bg: Optional[np.ndarray] = None, stain=None) -> np.ndarray:
    """The detector's input: white-balanced to the background colour, float32 (H, W, 3) in about [0, 1.2].

    With ``stain`` (a :class:`leukcore.detect.stain.StainNormalizer`, the slide's colour map) the
    white-balanced stained pixels are also moved to the model's colour template (in [0, 1]).
    """
    if stain is not None:
        return stain(img)
    if bg is None:
        bg = background_color(img)
    return np.clip(img.astype(np.float32) / np.asarray(bg, np.float32).reshape(1, 1, 3), 0.0, 1.25)


def field_input(
    img: np.ndarray, template: Optional[np.ndarray] = None, bg: Optional[np.ndarray] = None, bounds=None
) -> np.ndarray:
    """The detector's input for one in-memory field or training patch: its own glass colour and, with a
    stain ``template`` (a card's, :attr:`Detector.stain_template`), its own stain statistics; ``bounds``:
    the map's std-ratio bounds (:attr:`Detector.stain_bounds`; ``None``: the default).
    """
    bg = background_color(img) if bg is None else bg
    if template is None:
        return normalize_image(img, bg)
    from .stain import StainNormalizer

    return StainNormalizer.for_image(img, bg, template, use_lut=False, bounds=bounds)(img)
