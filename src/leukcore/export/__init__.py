"""Writers and readers of a slide's results (one folder per slide).

The file names, writers and readers are one table, :data:`leukcore.export.kinds.OUTPUT_KINDS`;
:func:`leukcore.export.kinds.read_results` reads a folder back (the napari plugin, the CLI and batch use it).
The legend of the overlay and of the plugin's screenshots is :mod:`leukcore.export.legend`.

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

__all__ = [
    "write_geojson",
    "read_geojson_table",
    "write_labels_zarr",
    "write_overlay",
    "render_overlay",
    "write_summary",
    "read_summary",
    "is_complete",
    "OUTPUT_KINDS",
    "read_results",
    "ResultsError",
]

_WHERE = {
    "write_geojson": ".geojson",
    "read_geojson_table": ".geojson",
    "write_labels_zarr": ".labels",
    "write_overlay": ".overlay",
    "render_overlay": ".overlay",
    "write_summary": ".summary",
    "read_summary": ".summary",
    "is_complete": ".summary",
    "OUTPUT_KINDS": ".kinds",
    "read_results": ".kinds",
    "ResultsError": ".kinds",
}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
