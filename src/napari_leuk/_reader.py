"""npe2 reader: whole slides as lazy multiscale image layers; ``leuk`` results over their slide.

Slides are opened with :func:`leukcore.io.open_slide` and handed to napari as
the list of pyramid levels (dask arrays, nothing read until drawn) with
``scale = (mpp, mpp)``, so the world unit is the micron.  Without a known pixel
size the scale is 1 (pixels).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

from leukcore.io.find import SLIDE_SUFFIXES  # one owner: the suffixes a batch finds

__all__ = ["napari_get_reader", "read_slide", "read_results", "slide_layer_data", "SLIDE_SUFFIXES"]


def _one_path(path) -> Optional[str]:
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    return os.fspath(path)


def napari_get_reader(path) -> Optional[Callable]:
    """Return the reader for ``path``, or None when this plugin does not read it."""
    from leukcore.export.kinds import is_results_path

    p = _one_path(path)
    if p is None:
        return None
    low = p.lower().rstrip("/\\")
    if low.endswith((".zarr",)) and not is_results_path(p):
        return read_slide
    if is_results_path(p):
        return read_results
    if low.endswith(SLIDE_SUFFIXES):
        return read_slide
    return None


def slide_layer_data(slide, name: Optional[str] = None) -> tuple:
    """LayerDataTuple of a :class:`~leukcore.io.Slide`: multiscale RGB image, scale from mpp."""
    mpp = slide.mpp
    scale = (float(mpp), float(mpp)) if mpp else (1.0, 1.0)
    nm = name or (Path(str(slide.path)).name if slide.path else "slide")
    meta = {
        "leuk_slide_path": str(slide.path) if slide.path else None,
        "mpp": mpp,
        "mpp_source": slide.mpp_source,
        "shape": list(slide.shape),
        "format": slide.format,
        "downsamples": [float(d) for d in slide.downsamples],
    }
    kw: dict[str, Any] = {
        "name": nm,
        "rgb": True,
        "multiscale": True,
        "scale": scale,
        "contrast_limits": [0, 255],
        "metadata": meta,
    }
    if mpp:
        kw["units"] = ("um", "um")
    return (list(slide.levels), kw, "image")


def read_slide(path) -> list[tuple]:
    """Read one slide file / OME-Zarr folder into a multiscale image layer."""
    from leukcore.io import open_slide

    slide = open_slide(_one_path(path))
    return [slide_layer_data(slide)]


def read_results(path) -> list[tuple]:
    """Read a results folder / ``cells.parquet`` / ``cells.geojson`` (:func:`leukcore.export.kinds.read_results`):
    the slide (when found, :func:`~leukcore.export.kinds.find_results_slide`) and the cells.
    """
    from napari.utils.notifications import show_warning

    from leukcore.export.kinds import find_results_slide
    from leukcore.export.kinds import read_results as read_results_folder

    from ._layers import cells_layer_data

    p = _one_path(path)
    table, summary = read_results_folder(p)
    folder = Path(p) if Path(p).is_dir() else Path(p).parent
    if table.is_classified:  # restore the review (corrections.parquet) beside the results
        from leukcore.corrections import CorrectionsError, apply_corrections, load_reviewed, read_corrections

        try:
            if read_corrections(folder).shape[0]:
                _, table, summary, _ = load_reviewed(p)
        except CorrectionsError as e:
            show_warning(f"{e}; showing the model's calls")
        else:
            table = apply_corrections(table, None) if "model_label" not in table.df else table
    slide_path = find_results_slide(p, table, summary)
    if slide_path:
        table.meta.setdefault("path", slide_path)
    layers = []
    scale = None
    if slide_path:
        from leukcore.io import open_slide

        slide = open_slide(slide_path, mpp=table.meta.get("mpp") or None)
        layers.append(slide_layer_data(slide))
        if slide.mpp:
            scale = (slide.mpp, slide.mpp)
        table.meta.setdefault("shape", list(slide.shape))
    else:
        show_warning(f"{p}: slide of these results not found; showing the cells alone")
    if scale is None and not table.meta.get("mpp"):
        scale = (1.0, 1.0)
    data, kw, ltype = cells_layer_data(table, scale=scale)
    kw["name"] = f"cells ({Path(p).name})"
    kw["metadata"]["leuk_results_dir"] = str(folder)
    kw["metadata"]["leuk_summary"] = summary
    if layers and "units" in layers[0][1]:
        kw["units"] = layers[0][1]["units"]
    layers.append((data, kw, ltype))
    return layers
