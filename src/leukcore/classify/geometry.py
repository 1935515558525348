"""Crop geometry and input normalisation of a classifier (:class:`CropSpec`).

A crop is a square of ``crop_um`` microns centred on a cell's centroid, resampled
to ``size`` x ``size`` pixels, so the same model works at any slide pixel size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

__all__ = ["CropSpec", "INPUT_MODES"]

#: how crops become network input (see :mod:`leukcore.classify.preprocess`)
INPUT_MODES = ("rgb", "lstd", "labstd")


@dataclass(frozen=True)
class CropSpec:
    """Crop geometry plus normalisation.

    Attributes
    ----------
    size : int
        Network input side in pixels.
    crop_um : float
        Crop side in microns (resampled to ``size``).
    mask : bool
        Blacken the background outside the cell's detected polygon (C-NMC convention, cell on black).
    mode : str
        ``"rgb"``: RGB scaled by ``mean``/``std``; ``"lstd"``: CIE L (lightness) standardised per crop,
        repeated on three channels (invariant to any affine change of lightness, so to Reinhard stain transfer);
        ``"labstd"``: L*, a*, b* each standardised per crop (keeps colour contrast, still Reinhard-invariant).
    mean, std : tuple of float
        Per-channel normalisation of RGB values in [0, 1] (``rgb`` mode).
    default_mpp : float or None
        Pixel size assumed for inputs without one (e.g. single images in ``leuk classify``).
    """

    size: int = 112
    crop_um: float = 20.0
    mask: bool = False
    mode: str = "lstd"
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    default_mpp: float | None = None

    def __post_init__(self):
        if self.mode not in INPUT_MODES:
            raise ValueError(f"unknown input mode {self.mode!r}; expected one of {INPUT_MODES}")
        if not (self.size >= 8 and self.crop_um > 0):
            raise ValueError(f"bad crop geometry: size={self.size}, crop_um={self.crop_um}")

    def side_px(self, mpp: float) -> float:
        """Crop side in level-0 pixels of a slide with pixel size ``mpp``."""
        return self.crop_um / float(mpp)

    def to_card(self) -> dict[str, Any]:
        """The spec as a model card's ``input`` section: a plain dict, ``mean`` and ``std`` as lists."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_card(cls, d: Mapping[str, Any]) -> "CropSpec":
        """The spec of a model card's ``input`` section ``d``: unknown keys ignored, missing ones at their defaults."""
        keys = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in dict(d).items() if k in keys}
        for k in ("mean", "std"):
            if k in kw:
                kw[k] = tuple(float(v) for v in kw[k])
        return cls(**kw)
