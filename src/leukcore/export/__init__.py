"""Writers for a slide's results (one folder per slide).

``cells.parquet`` / ``cells.csv``
    :meth:`leukcore.results.CellTable.to_parquet` / ``to_csv``.
``cells.geojson``
    :func:`leukcore.export.geojson.write_geojson` (QuPath detections).
``labels.ome.zarr``
    :func:`leukcore.export.labels.write_labels_zarr` (pyramidal OME-NGFF label image, chunk by chunk).
``overlay.png``
    :func:`leukcore.export.overlay.write_overlay` (thumbnail, cells by class, legend with counts).
``summary.json``
    :func:`leukcore.export.summary.write_summary` (written last: the completion marker).
"""
from __future__ import annotations

import importlib

__all__ = ["write_geojson", "write_labels_zarr", "write_overlay", "render_overlay",
           "write_summary", "read_summary", "is_complete"]

_WHERE = {
    "write_geojson": ".geojson", "write_labels_zarr": ".labels", "write_overlay": ".overlay",
    "render_overlay": ".overlay", "write_summary": ".summary", "read_summary": ".summary",
    "is_complete": ".summary",
}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
