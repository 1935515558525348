"""Plausibility of pixel sizes (microns per pixel).

Blood-smear scans and microscope fields lie between about 0.1 and 2 µm/px.  A pixel size outside
:data:`PLAUSIBLE_MPP` = 0.05..10 µm/px is refused when given by the user (``mpp=`` / ``--mpp``:
``ValueError``) and ignored with a warning when read from a file's metadata (the slide then has
no pixel size and it is estimated from red cells or must be given).  Values outside
:data:`leukcore.io.tiff.MPP_RANGE` (0.01..50 µm/px, e.g. the 72 dpi = 353 µm/px default many tools
write) are not microscope resolutions at all and are ignored quietly.
"""

from __future__ import annotations

import math
from typing import Optional

__all__ = ["PLAUSIBLE_MPP", "check_user_mpp", "plausible_metadata_mpp", "MPP_RANGE", "UNIT_TO_UM", "valid_mpp"]

#: pixel sizes (µm/px) accepted for analysis
PLAUSIBLE_MPP = (0.05, 10.0)


def check_user_mpp(mpp) -> float:
    """``float(mpp)``, or ``ValueError`` when it is not a number in :data:`PLAUSIBLE_MPP`."""
    try:
        v = float(mpp)
    except (TypeError, ValueError):
        raise ValueError(f"mpp must be a positive number, got {mpp!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"mpp must be a positive number, got {mpp!r}")
    lo, hi = PLAUSIBLE_MPP
    if not lo <= v <= hi:
        raise ValueError(
            f"mpp {v:g} um/px is outside the plausible range {lo:g}..{hi:g} um/px for a "
            "blood-smear image (is it in microns per pixel?)"
        )
    return v


def plausible_metadata_mpp(v: Optional[float], origin: Optional[str], warnings: list, path=None):
    """``(mpp, origin)`` with an implausible metadata value replaced by ``(None, None)`` and a warning."""
    if v is None:
        return None, None
    lo, hi = PLAUSIBLE_MPP
    if lo <= v <= hi:
        return v, origin
    warnings.append(
        f"pixel size {v:g} um/px from {origin} is outside the plausible range {lo:g}..{hi:g} "
        "um/px: ignored (pass --mpp / mpp= with the real value)"
    )
    return None, None


#: pixel sizes (um) outside this range are treated as "not a microscope resolution"
#: (e.g. the 72 / 96 dpi defaults many tools write) and ignored.
MPP_RANGE = (0.01, 50.0)

UNIT_TO_UM = {
    "m": 1e6,
    "meter": 1e6,
    "cm": 1e4,
    "centimeter": 1e4,
    "mm": 1e3,
    "millimeter": 1e3,
    "µm": 1.0,
    "μm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "å": 1e-4,
    "angstrom": 1e-4,
    "pm": 1e-6,
    "picometer": 1e-6,
    "inch": 25400.0,
    "in": 25400.0,
}


def valid_mpp(v) -> Optional[float]:
    """``v`` as a float pixel size (um/px) when it is finite and inside :data:`MPP_RANGE`, else None."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v) or not (MPP_RANGE[0] <= v <= MPP_RANGE[1]):
        return None
    return v
