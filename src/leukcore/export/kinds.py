"""The results folder: one table of output kinds (file name, writer, reader) and its reader.

Every producer and consumer of a slide's results folder (``leuk analyze``, ``leuk batch``, ``leuk detect``,
:func:`leukcore.pipeline.write_outputs`, the napari plugin) takes the file names from :data:`OUTPUT_KINDS`
and reads a folder back with :func:`read_results`:

=========  ===================  ==========================================  =====================================
kind       file                 writer                                      reader
=========  ===================  ==========================================  =====================================
parquet    ``cells.parquet``    :meth:`CellTable.to_parquet`                :meth:`CellTable.read_parquet`
csv        ``cells.csv``        :meth:`CellTable.to_csv`                    :meth:`CellTable.read_csv`
geojson    ``cells.geojson``    :func:`.geojson.write_geojson`              :func:`.geojson.read_geojson_table`
labels     ``labels.ome.zarr``  :func:`.labels.write_labels_zarr`           :func:`.labels.open_labels_zarr`
overlay    ``overlay.png``      :func:`.overlay.write_overlay`              (a picture: none)
summary    ``summary.json``     :func:`.summary.write_summary` (**last**)   :func:`.summary.read_summary`
=========  ===================  ==========================================  =====================================

``leuk detect`` also writes ``detect_meta.json`` (:data:`DETECT_META_NAME`).  Table writers are called as
``write(table, path, slide=..., title=..., label_chunk=..., cancel=...)`` (each takes what it needs), the
summary writer as ``write(summary, path)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..results import CellTable

__all__ = [
    "OutputKind",
    "OUTPUT_KINDS",
    "TABLE_KINDS",
    "FILE_NAMES",
    "OUTPUT_FILES",
    "SUMMARY_NAME",
    "DETECT_META_NAME",
    "ResultsError",
    "file_name",
    "read_table",
    "read_results",
    "is_results_path",
    "find_results_slide",
    "write_output",
]


class ResultsError(ValueError):
    """A results file or folder that cannot be read (the message names it)."""


# ------------------------------------------------------------------ writers (uniform signatures)
def _write_parquet(table: CellTable, path: Path, **_: Any) -> Path:
    return table.to_parquet(path)


def _write_csv(table: CellTable, path: Path, **_: Any) -> Path:
    return table.to_csv(path)


def _write_geojson(table: CellTable, path: Path, **_: Any) -> Path:
    from .geojson import write_geojson

    return write_geojson(table, path)


def _write_labels(table: CellTable, path: Path, *, slide, label_chunk: int = 1024, cancel=None, **_: Any) -> Path:
    from .labels import write_labels_zarr

    return write_labels_zarr(table, slide.shape, path, mpp=slide.mpp, chunk=label_chunk, cancel=cancel)


def _write_overlay(table: CellTable, path: Path, *, slide, title: Optional[str] = None, **_: Any) -> Path:
    from .overlay import write_overlay

    return write_overlay(slide, table, path, counts=table.counts(), title=title)


def _write_summary(summary, path: Path, **_: Any) -> Path:
    from .summary import write_summary

    return write_summary(summary, path)


# ------------------------------------------------------------------ readers
def _read_parquet(path) -> CellTable:
    return CellTable.read_parquet(path)


def _read_csv(path) -> CellTable:
    return CellTable.read_csv(path)


def _read_geojson(path) -> CellTable:
    from .geojson import read_geojson_table

    return read_geojson_table(path)


def _read_labels(path):
    from .labels import open_labels_zarr

    return open_labels_zarr(path)


def _read_summary(path) -> dict:
    from .summary import read_summary

    return read_summary(path)


@dataclass(frozen=True)
class OutputKind:
    """One file of a results folder."""

    kind: str
    name: str
    what: str
    write: Callable[..., Path]
    read: Optional[Callable[[Any], Any]]

    @property
    def suffix(self) -> str:
        """The file name's suffix without its first dot (``ome.zarr`` of ``labels.ome.zarr``)."""
        return self.name.split(".", 1)[1]


#: every file of a complete results folder, in writing order (``summary.json`` last: the completion marker)
OUTPUT_KINDS: dict[str, OutputKind] = {
    k.kind: k
    for k in (
        OutputKind(
            "parquet",
            "cells.parquet",
            "one row per cell; table meta in the schema metadata",
            _write_parquet,
            _read_parquet,
        ),
        OutputKind("csv", "cells.csv", "the same rows; polygons as JSON strings", _write_csv, _read_csv),
        OutputKind("geojson", "cells.geojson", "QuPath detections", _write_geojson, _read_geojson),
        OutputKind("labels", "labels.ome.zarr", "cell-id label pyramid (OME-NGFF 0.4)", _write_labels, _read_labels),
        OutputKind("overlay", "overlay.png", "thumbnail with the cells and a legend", _write_overlay, None),
        OutputKind(
            "summary",
            "summary.json",
            "counts, models, settings, provenance; written last",
            _write_summary,
            _read_summary,
        ),
    )
}
#: kinds holding the cell table, in the order :func:`read_results` prefers them
TABLE_KINDS = ("parquet", "geojson", "csv")
FILE_NAMES = {k: v.name for k, v in OUTPUT_KINDS.items()}
OUTPUT_FILES = tuple(FILE_NAMES.values())
SUMMARY_NAME = FILE_NAMES["summary"]
#: ``leuk detect``'s table meta (timings, tiles run), beside cells.csv / cells.parquet
DETECT_META_NAME = "detect_meta.json"


def file_name(kind: str) -> str:
    """File name of an output ``kind`` (``"parquet"``, ``"csv"``, ..., ``"summary"``)."""
    try:
        return FILE_NAMES[kind]
    except KeyError:
        raise ValueError(f"unknown output kind {kind!r}; known: {', '.join(FILE_NAMES)}") from None


def write_output(kind: str, table: CellTable, out_dir: str | os.PathLike, **ctx: Any) -> Path:
    """Write one table ``kind`` into ``out_dir`` under its file name (``ctx``: slide, title, label_chunk, cancel)."""
    if kind == "summary":
        raise ValueError("the summary is written with write_summary(summary, path), last")
    k = OUTPUT_KINDS.get(kind)
    if k is None:
        raise ValueError(f"unknown output kind {kind!r}; known: {', '.join(FILE_NAMES)}")
    return k.write(table, Path(out_dir) / k.name, **ctx)


def _table_kind_of(path: Path) -> Optional[str]:
    low = path.name.lower()
    for kind in TABLE_KINDS:
        if low.endswith("." + OUTPUT_KINDS[kind].suffix.split(".")[-1]):
            return kind
    return None


def is_results_path(path: str | os.PathLike) -> bool:
    """True for a results folder (a summary or a cell table inside), a ``*.parquet`` or a ``*.geojson`` file."""
    p = Path(path)
    if p.is_dir():
        return (p / SUMMARY_NAME).is_file() or any((p / FILE_NAMES[k]).is_file() for k in TABLE_KINDS)
    name = p.name.lower()
    return name.endswith(".parquet") or name.endswith(".geojson")


def read_table(path: str | os.PathLike) -> CellTable:
    """The cell table of one file, by suffix (``.parquet``, ``.geojson``, ``.csv``); errors name the file."""
    p = Path(path)
    kind = _table_kind_of(p)
    if kind is None:
        raise ResultsError(f"{p}: not a results file (expected .parquet, .geojson or .csv)")
    try:
        return OUTPUT_KINDS[kind].read(p)
    except ResultsError:
        raise
    except Exception as e:  # pyarrow / pandas / JSON errors: name the file
        raise ResultsError(f"{p}: cannot read cell table: {e}") from None


def _summary_beside(folder: Path) -> dict:
    p = folder / SUMMARY_NAME
    if not p.is_file():
        return {}
    try:
        return _read_summary(p)
    except ValueError as e:
        raise ResultsError(str(e)) from None


def read_results(path: str | os.PathLike) -> tuple[CellTable, dict]:
    """Read a results folder (or one of its table files) back.

    Parameters
    ----------
    path : path-like
        A folder written by ``leuk analyze`` / ``leuk batch`` / ``leuk detect`` (its table is read in the
        order of :data:`TABLE_KINDS`), or a ``cells.parquet`` / ``cells.geojson`` / ``cells.csv`` file (the
        ``summary.json`` beside it is read when present).

    Returns
    -------
    table : CellTable
        With ``meta["mpp"]``, ``meta["shape"]`` and ``meta["classes"]`` filled from the summary when the table
        lacks them, and ``meta["results_path"]`` = the table file read.
    summary : dict
        ``summary.json``, or ``{}`` when there is none.

    Raises
    ------
    ResultsError
        Missing or unreadable files (the message names the path).
    """
    p = Path(path)
    if not p.exists():
        raise ResultsError(f"{p}: no such file or directory")
    folder = p if p.is_dir() else p.parent
    summary = _summary_beside(folder)
    if p.is_dir():
        for kind in TABLE_KINDS:
            if (p / FILE_NAMES[kind]).is_file():
                p = p / FILE_NAMES[kind]
                break
        else:
            raise ResultsError(f"{folder}: results folder without " + " / ".join(FILE_NAMES[k] for k in TABLE_KINDS))
    table = read_table(p)
    meta = table.meta
    sl = summary.get("slide") or {}
    if not meta.get("mpp"):
        m = (summary.get("mpp") or {}).get("value")
        if m:
            meta["mpp"] = float(m)
            if table.df["centroid_y_um"].isna().all():
                table.df["centroid_y_um"] = table.df["centroid_y"] * float(m)
                table.df["centroid_x_um"] = table.df["centroid_x"] * float(m)
    if not meta.get("shape") and sl.get("shape"):
        meta["shape"] = list(sl["shape"])
    if "classes" in summary and not meta.get("classes"):
        meta["classes"] = list(summary["classes"])
    meta["results_path"] = str(p)
    return table, summary


def find_results_slide(path: str | os.PathLike, table: CellTable, summary: dict) -> Optional[str]:
    """The analysed slide of a results folder / file when it is on disk: the summary's path, else the slide's
    name (summary or table meta) in the folder or next to it; None when not found.
    """
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    sl = summary.get("slide") or {}
    candidates = []
    if sl.get("path"):
        candidates.append(Path(sl["path"]))
    nm = sl.get("name") or table.meta.get("slide")
    if nm:
        candidates += [folder / nm, folder.parent / nm]
    for c in candidates:
        if c.exists():
            return str(c)
    return None
