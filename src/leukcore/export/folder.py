"""Writing a run's results folder: every output kind, then ``summary.json`` last (the completion marker).

:func:`write_outputs` is what :func:`leukcore.pipeline.analyze_slide` calls with ``out_dir`` (and re-exports).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..progress import Cancelled, emit, is_cancelled

__all__ = ["write_outputs"]


def _clear_marker_and_temps(out: Path) -> None:
    from .kinds import SUMMARY_NAME

    (out / SUMMARY_NAME).unlink(missing_ok=True)
    for p in out.glob(".*.tmp-*"):  # left by a killed run
        if p.is_dir():
            import shutil

            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def write_outputs(
    result,
    out_dir: str | os.PathLike,
    *,
    slide=None,
    formats=("parquet", "csv", "geojson", "labels", "overlay"),
    progress=None,
    cancel=None,
    label_chunk: int = 1024,
) -> dict:
    """Write a result's folder; ``summary.json`` last (the completion marker).

    Parameters
    ----------
    result : AnalysisResult
        A complete (not partial) result.
    out_dir : path-like
        The slide's output folder (created).
    slide : Slide, optional
        The analysed slide (for the overlay thumbnail and the label shape); re-opened
        from ``result.summary["slide"]["path"]`` when not given.
    formats : sequence of str
        Subset of ``parquet, csv, geojson, labels, overlay``.

    Returns
    -------
    dict
        Paths by kind (also stored in ``result.outputs`` and ``summary["outputs"]``).

    Raises
    ------
    ValueError
        For a partial (cancelled) result: it is never written as if complete.
    """
    from .kinds import FILE_NAMES, SUMMARY_NAME, write_output
    from .summary import write_summary

    if result.partial:
        raise ValueError("refusing to write a partial (cancelled) result as complete outputs")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _clear_marker_and_temps(out)
    t0 = time.perf_counter()
    table = result.table
    own = False
    if slide is None and ("labels" in formats or "overlay" in formats):
        from ..io import open_slide

        slide = open_slide(result.summary["slide"]["path"], mpp=result.summary["mpp"]["value"])
        own = True
    title = result.summary.get("slide", {}).get("name")
    paths: dict[str, Path] = {}
    steps = [f for f in ("parquet", "csv", "geojson", "labels", "overlay") if f in formats]
    try:
        for i, kind in enumerate(steps):
            if is_cancelled(cancel):
                raise Cancelled("cancelled while writing outputs")
            emit(progress, "write", i, len(steps) + 1, cells=len(table), message=FILE_NAMES[kind])
            paths[kind] = write_output(
                kind, table, out, slide=slide, title=title, label_chunk=label_chunk, cancel=cancel
            )
    finally:
        if own:
            slide.close()
    s = result.summary
    s["outputs"] = {k: v.name for k, v in paths.items()}
    s["complete"] = not (s.get("missing") or {}).get("count")  # skipped regions: never complete
    s.setdefault("timings", {})["write_s"] = round(time.perf_counter() - t0, 4)
    paths["summary"] = out / SUMMARY_NAME
    write_summary(s, paths["summary"])
    emit(progress, "write", len(steps) + 1, len(steps) + 1, cells=len(table), message="done")
    result.outputs = paths
    return paths
