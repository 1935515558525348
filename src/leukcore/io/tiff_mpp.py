"""The pixel size a TIFF states: OME-XML ``PhysicalSizeX``, the Aperio (SVS) description, or the resolution
tags; only plausible values count (:func:`leukcore.io.mppcheck.plausible_metadata_mpp`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Optional

from .mppcheck import UNIT_TO_UM, plausible_metadata_mpp, valid_mpp

__all__ = ["metadata_mpp"]


def _ome_mpp(tif, warnings: Optional[list] = None) -> tuple[Optional[float], Optional[str]]:
    xml = tif.ome_metadata
    if not xml:
        return None, None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        if warnings is not None:
            warnings.append(f"OME-XML metadata is not valid XML ({e}): ignored, pixel size from TIFF tags")
        return None, None
    for el in root.iter():
        if el.tag.endswith("}Pixels") or el.tag == "Pixels":
            v = el.get("PhysicalSizeX")
            if v is None:
                return None, None
            unit = (el.get("PhysicalSizeXUnit") or "µm").strip().lower()
            f = UNIT_TO_UM.get(unit)
            if f is None:
                if warnings is not None:
                    warnings.append(f"OME PhysicalSizeXUnit={unit!r} is not a length unit: pixel size unknown")
                return None, None
            try:
                fv = float(v)
            except (TypeError, ValueError):
                if warnings is not None:
                    warnings.append(f"OME PhysicalSizeX={v!r} is not a number: pixel size unknown")
                return None, None
            mpp = valid_mpp(fv * f)
            return mpp, ("ome:PhysicalSizeX" if mpp else None)
    return None, None


def _svs_mpp(page) -> tuple[Optional[float], Optional[str]]:
    from tifffile.tifffile import svs_description_metadata

    try:
        meta = svs_description_metadata(page.description)
    except Exception:
        return None, None
    mpp = valid_mpp(meta.get("MPP"))
    return mpp, ("svs:MPP" if mpp else None)


def _resolution_mpp(tif, page) -> tuple[Optional[float], Optional[str]]:
    tags = page.tags
    if "XResolution" not in tags:
        return None, None
    xr = tags["XResolution"].value
    try:
        xres = xr[0] / xr[1] if isinstance(xr, tuple) else float(xr)
    except (ZeroDivisionError, TypeError):
        return None, None
    if not xres or xres <= 0:
        return None, None
    unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    if unit == 2:
        mpp = 25400.0 / xres
    elif unit == 3:
        mpp = 1e4 / xres
    elif unit == 1 and tif.is_imagej:
        ij = tif.imagej_metadata or {}
        f = UNIT_TO_UM.get(str(ij.get("unit", "")).strip().lower().replace("\\u00b5", "µ"))
        if f is None:
            return None, None
        mpp = f / xres
    else:
        return None, None
    mpp = valid_mpp(mpp)
    return mpp, ("tiff:resolution" if mpp else None)


def metadata_mpp(tif, page0, slide_warnings: list, path) -> tuple:
    """``(mpp, origin)`` from OME-XML, the Aperio description or the resolution tags (plausible values only)."""
    mpp, origin = None, None
    if tif.is_ome:
        mpp, origin = _ome_mpp(tif, slide_warnings)
    if mpp is None and tif.is_svs:
        mpp, origin = _svs_mpp(page0)
    if mpp is None:
        mpp, origin = _resolution_mpp(tif, page0)
    return plausible_metadata_mpp(mpp, origin, slide_warnings, path)
