"""Whole-slide analysis: detection and classification overlapped, then one folder of outputs.

:func:`analyze_slide` runs the detector over the slide's tiles in a background
thread (:func:`leukcore.detect.iter_detect` yields the cells of each finished
batch of tiles) and puts each chunk on a **bounded queue**; the calling thread
takes chunks off the queue, reads their crops and classifies them in fixed-size
batches while detection continues.  On CUDA both stages run on the device.

The result is an :class:`AnalysisResult`: the per-cell :class:`CellTable`
(detection columns + ``label``, ``confidence``, ``prob_*``, ``review``) sorted
deterministically, and a summary dict (counts per class, blast percentage,
cells flagged for review, models with versions and weight hashes, pixel size
and where it came from, stage timings and the pipeline efficiency).

:func:`write_outputs` writes one folder per slide::

    cells.parquet  cells.csv  cells.geojson  labels.ome.zarr  overlay.png  summary.json

each atomically, ``summary.json`` last: it is the completion marker
(:func:`leukcore.export.summary.is_complete`).  A run into a folder first removes
the folder's old ``summary.json`` (before any work), so a cancelled, failed or
killed run never leaves a previous run's marker behind.  Timings live only in
``summary.json``, so the cell files are byte-identical between runs.

``summary["provenance"]`` (:mod:`leukcore.provenance`) fingerprints the input
file (size, mtime, bounded content hashes), every setting and each model (card
path, card sha256, weights sha256); ``leuk batch`` resumes only on an exact match.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ._version import __version__
from .progress import Cancelled, ProgressEvent, emit, is_cancelled
from .results import BLAST_CLASSES, CellTable

__all__ = ["AnalysisResult", "analyze_slide", "write_outputs", "load_detector", "load_classifier",
           "model_info", "DEFAULT_BATCH_SIZE"]

#: classification batch size per device type
DEFAULT_BATCH_SIZE = {"cpu": 32, "cuda": 256}


@dataclass
class AnalysisResult:
    """What :func:`analyze_slide` returns.

    Attributes
    ----------
    table : CellTable
        One row per cell, sorted by (centroid_y, centroid_x), ids 1..N.
    summary : dict
        Counts, blast percentage, review count, models, mpp, timings, ``partial``.
    outputs : dict
        Output file paths by kind, when the result was written (else empty).
    """

    table: CellTable
    summary: dict
    outputs: dict = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        return bool(self.summary.get("partial"))

    @property
    def counts(self) -> dict:
        return dict(self.summary.get("counts", {}))

    def __repr__(self) -> str:
        return (f"<AnalysisResult: {len(self.table)} cells, counts={self.counts}, "
                f"blast%={self.summary.get('blast_percent')}, partial={self.partial}>")


# ---------------------------------------------------------------- models
def _card(name_or_card, trust_unverified: bool):
    if isinstance(name_or_card, dict):
        return name_or_card
    from .models.registry import load_card

    return load_card(name_or_card, trust_unverified=trust_unverified)


def load_detector(detector="wbc-stardist", device="auto", trust_unverified: bool = False):
    """A loaded detector from a name / card path, or ``detector`` itself if already loaded.

    ``trust_unverified``: load a card whose weights have no sha256 (refused otherwise).
    """
    if detector is None or hasattr(detector, "card"):
        return detector
    from .detect import Detector

    return Detector.load(_card(detector, trust_unverified), device=device)


def load_classifier(classifier="all-binary", device="auto", trust_unverified: bool = False):
    """A loaded classifier from a name / card path, or ``classifier`` itself if already loaded.

    ``trust_unverified``: load a card whose weights have no sha256 (refused otherwise).
    """
    if classifier is None or hasattr(classifier, "predict_crops"):
        return classifier
    from .classify import Classifier

    return Classifier.load(_card(classifier, trust_unverified), device=device)


def model_info(model) -> Optional[dict]:
    """What the summary records about a loaded model: name, version, task, weights sha256 (as read),
    card file name, card path, card sha256, origin (shipped / user), whether the weights were verified
    against the card, classes (:func:`leukcore.provenance.model_record`).
    """
    if model is None:
        return None
    from .provenance import model_record

    return model_record(dict(getattr(model, "card", None) or {}))


def _table_model_info(info: Optional[dict]) -> Optional[dict]:
    """The model block of the cell table's metadata: no absolute path, so the cell files stay
    byte-identical wherever the package is installed.
    """
    return None if info is None else {k: v for k, v in info.items() if k != "card_path"}


# ---------------------------------------------------------------- helpers
class _Progress:
    """Serialise progress calls from the detection thread and the caller's thread."""

    def __init__(self, cb):
        self.cb = cb
        self.lock = threading.Lock()

    def __call__(self, ev: ProgressEvent):
        if self.cb is not None:
            with self.lock:
                self.cb(ev)


def _open(slide_or_path, mpp):
    from .io import open_slide

    if isinstance(slide_or_path, (str, os.PathLike)):
        return open_slide(slide_or_path, mpp=mpp), True
    slide = slide_or_path
    if mpp is not None:
        slide = slide.with_mpp(mpp, "user")
    return slide, False


def _resolve_mpp(slide) -> tuple[Any, dict]:
    info = {"value": slide.mpp, "source": slide.mpp_source, "spread": None, "n_cells": None}
    if slide.mpp:
        return slide, info
    from .mpp import estimate_mpp

    try:
        est = estimate_mpp(slide)
    except Exception as e:
        raise ValueError(f"{slide.path or 'slide'}: pixel size unknown and it could not be estimated "
                         f"from red cells ({e}); pass mpp= (or --mpp)") from None
    slide = slide.with_mpp(est.mpp, "estimated")
    info.update(value=float(est.mpp), source="estimated", spread=float(est.spread), n_cells=int(est.n_cells),
                method=est.method, reliable=bool(est.reliable), reason=est.reason)
    return slide, info


def _clean_meta(slide, mpp_info, det_info, clf_info, region, partial, classes, review_threshold) -> dict:
    """The table meta written into cells.parquet: deterministic (no timings, no host names)."""
    return {
        "slide": Path(str(slide.path)).name if slide.path else None,
        "shape": [int(s) for s in slide.shape],
        "mpp": mpp_info["value"], "mpp_source": mpp_info["source"],
        "detector": _table_model_info(det_info), "classifier": _table_model_info(clf_info),
        "classes": list(classes), "review_threshold": float(review_threshold),
        "region": list(region) if region is not None else None,
        "partial": bool(partial), "leukcore_version": __version__,
    }


# ---------------------------------------------------------------- main
def analyze_slide(slide_or_path, detector="wbc-stardist", classifier="all-binary", *,
                  device: str = "auto", mpp: Optional[float] = None, region=None,
                  progress: Optional[Callable[[ProgressEvent], Any]] = None, cancel=None,
                  batch_size: Optional[int] = None, review_threshold: Optional[float] = None,
                  tile_size: int = 1024, detect_batch_size: Optional[int] = None,
                  queue_size: int = 4, overlap: bool = True,
                  out_dir: Optional[str | os.PathLike] = None,
                  trust_unverified: bool = False, skip_missing: bool = False) -> AnalysisResult:
    """Find and classify every white cell of a slide.

    Parameters
    ----------
    slide_or_path : Slide or path-like
        A :class:`~leukcore.io.slide.Slide` or anything :func:`leukcore.io.open_slide` reads.
    detector : str, path or loaded detector
        Shipped model name (``"wbc-stardist"``), model card ``.yaml``, or a loaded ``Detector``.
    classifier : str, path, loaded classifier or None
        ``"all-binary"``, ``"all-4class"``, a card ``.yaml``, a loaded ``Classifier``;
        ``None`` for detection only.
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda[:N]"``.
    mpp : float, optional
        Level-0 microns per pixel, overriding the file's; estimated from red cells
        when neither is known (``summary["mpp"]["source"] == "estimated"``).
    region : (y0, x0, y1, x1), optional
        Level-0 region to analyse (default the whole slide).
    progress : callable, optional
        Receives :class:`~leukcore.progress.ProgressEvent` (stages ``detect``,
        ``classify``, ``write``, ``labels``); calls are serialised but may come from the
        detection thread.
    cancel : CancelToken or callable, optional
        Checked between tiles and batches; a cancelled run returns what it has with
        ``summary["partial"] = True`` and writes no output files.
    batch_size : int, optional
        Classification batch size (default 32 on CPU, 256 on CUDA).
    review_threshold : float, optional
        Cells whose confidence is below this are flagged ``review`` (left out of the blast
        percentage).  Default: the classifier card's ``review.confidence``, chosen on validation
        data (:attr:`Classifier.review_threshold`).
    tile_size, detect_batch_size : int
        Passed to the detector.
    queue_size : int
        Detection chunks buffered between the stages (bounds memory).
    overlap : bool
        Run the stages concurrently (default); ``False`` runs detection to the end first
        (used by the benchmark to time the stages alone).
    out_dir : path-like, optional
        When given and the run completed, :func:`write_outputs` writes the folder.  Its old
        ``summary.json`` is removed first, before any work, so a failed or cancelled run never
        leaves a previous run's completion marker there.
    trust_unverified : bool
        Load model cards whose weights have no sha256 (refused by default: they cannot be verified).
    skip_missing : bool
        Pixels that are not in the file (missing TIFF tiles / zarr chunks, NaN) stop the run with
        :class:`~leukcore.io.MissingTileError` naming the file and the box (default).  ``True``
        analyses the rest: those regions read as background, and ``summary["missing"]`` records
        them (``count``, ``boxes``) with ``complete: false``.  ``summary["warnings"]`` always holds
        the slide's integrity warnings (:mod:`leukcore.io.integrity`).

    Returns
    -------
    AnalysisResult

    Raises
    ------
    leukcore.io.SlideError
        The slide cannot be opened or read (message names the file).
    ValueError
        Unknown device / pixel size unknown and not estimable.
    """
    from . import provenance
    from .device import resolve_device

    t_start = time.perf_counter()
    if out_dir is not None:
        provenance.invalidate(out_dir)
    timings: dict[str, float] = {}
    prog = _Progress(progress)
    dev = resolve_device(device)
    dev_name = str(dev)
    settings = provenance.analysis_settings(mpp=mpp, region=region, review_threshold=review_threshold,
                                            tile_size=tile_size, batch_size=batch_size,
                                            detect_batch_size=detect_batch_size, device=device,
                                            skip_missing=skip_missing)

    t = time.perf_counter()
    src_path = slide_or_path if isinstance(slide_or_path, (str, os.PathLike)) else getattr(slide_or_path, "path", None)
    input_fp = provenance.input_fingerprint(src_path)
    timings["fingerprint_s"] = time.perf_counter() - t
    t = time.perf_counter()
    slide, opened = _open(slide_or_path, mpp)
    timings["open_s"] = time.perf_counter() - t
    try:
        from .io.integrity import apply_missing_policy, integrity_summary
        slide = apply_missing_policy(slide, skip_missing, region)
        t = time.perf_counter()
        slide, mpp_info = _resolve_mpp(slide)
        timings["mpp_s"] = time.perf_counter() - t

        t = time.perf_counter()
        det = load_detector(detector, device=dev_name, trust_unverified=trust_unverified)
        clf = load_classifier(classifier, device=dev_name, trust_unverified=trust_unverified)
        timings["load_s"] = time.perf_counter() - t
        if det is None:
            raise ValueError("a detector is required")
        bs = int(batch_size or DEFAULT_BATCH_SIZE.get(dev.type, 32))
        if bs < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")

        t_pipe = time.perf_counter()
        chunks, probs, stats, partial = _run_stages(slide, det, clf, dev_name, region, prog, cancel, bs,
                                                    tile_size, detect_batch_size, queue_size, overlap)
        timings["pipeline_s"] = time.perf_counter() - t_pipe
        timings.update(stats)

        det_info, clf_info = model_info(det), model_info(clf)
        classes = list(clf.classes) if clf is not None else []
        # the classifier card's thresholds (chosen on validation data) unless given
        from .classify.infer import review_rule
        review_threshold, blast_threshold = review_rule(clf, review_threshold)
        meta = _clean_meta(slide, mpp_info, det_info, clf_info, region, partial, classes, review_threshold)
        table = CellTable.concat(chunks, meta=meta) if chunks else CellTable(None, meta)
        table.meta = meta
        if clf is not None:
            P = np.concatenate(probs, axis=0) if probs else np.zeros((0, len(classes)), np.float32)
            table.set_classification(P[:len(table)], classes, review_threshold, blast_threshold=blast_threshold)
        table = table.sorted()
        table.meta = meta

        slower = max(timings.get("detect_s", 0.0), timings.get("classify_s", 0.0))
        timings["efficiency"] = (timings["pipeline_s"] / slower) if slower > 0 else None
        summary = build_summary(table, slide, mpp_info, det_info, clf_info, dev_name, region, partial,
                                review_threshold, bs, tile_size, timings)
        summary["provenance"] = provenance.fingerprint(input_fp, settings, det_info, clf_info)
        summary.update(integrity_summary(slide, skip_missing))
        result = AnalysisResult(table, summary)
        if out_dir is not None and not partial:
            write_outputs(result, out_dir, slide=slide, progress=prog, cancel=cancel)
        summary["timings"]["total_s"] = time.perf_counter() - t_start
        if result.outputs:  # keep the written summary and the returned one identical
            from .export.summary import write_summary

            write_summary(summary, result.outputs["summary"])
        return result
    finally:
        if opened:
            slide.close()


def _run_stages(slide, det, clf, device, region, prog, cancel, bs, tile_size, detect_batch_size,
                queue_size, overlap):
    """Detection in a thread -> bounded queue -> crops + classification in fixed-size batches."""
    from .detect import iter_detect

    stop = threading.Event()

    def should_stop():
        return stop.is_set() or is_cancelled(cancel)

    q: "queue.Queue" = queue.Queue(maxsize=max(1, int(queue_size)) if overlap else 0)
    det_time = [0.0]
    det_partial = [False]

    def put(item) -> bool:
        while True:
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                if stop.is_set():
                    return False

    def producer():
        try:
            kw = dict(tile_size=tile_size, region=region, progress=prog, cancel=should_stop, device=device)
            if detect_batch_size:
                kw["batch_size"] = int(detect_batch_size)
            gen = iter_detect(slide, det, **kw)
            while True:
                t = time.perf_counter()
                try:
                    chunk = next(gen)
                except StopIteration:
                    det_time[0] += time.perf_counter() - t
                    break
                det_time[0] += time.perf_counter() - t
                if chunk.meta.get("partial"):
                    det_partial[0] = True
                if not put(("chunk", chunk)):
                    return
            put(("end", None))
        except BaseException as e:  # handed to the consumer, re-raised there
            put(("error", e))

    th = threading.Thread(target=producer, name="leukcore-detect", daemon=True)
    chunks: list[CellTable] = []
    probs: list[np.ndarray] = []
    stats = {"detect_s": 0.0, "classify_s": 0.0, "crops_s": 0.0, "predict_s": 0.0, "wait_s": 0.0}
    pending: list[np.ndarray] = []   # crops waiting for a full batch
    n_pending = 0
    n_cells = 0
    n_done = 0
    cancelled = False

    def run_batches(flush: bool):
        nonlocal pending, n_pending, n_done
        while n_pending >= bs or (flush and n_pending > 0):
            if should_stop():
                return
            allc = np.concatenate(pending, axis=0) if len(pending) > 1 else pending[0]
            take = min(bs, n_pending)
            batch, rest = allc[:take], allc[take:]
            t = time.perf_counter()
            p = np.asarray(clf.predict_crops(batch), dtype=np.float32)
            dt = time.perf_counter() - t
            stats["predict_s"] += dt
            stats["classify_s"] += dt
            probs.append(p)
            pending = [rest] if len(rest) else []
            n_pending = len(rest)
            n_done += take
            # the batch's labels travel with the event so a viewer can keep live counts
            emit(prog, "classify", n_done, n_cells, cells=n_cells,
                 message=f"classified {n_done} of {n_cells} cells found so far",
                 data={"labels": [clf.classes[int(i)] for i in p.argmax(axis=1)],
                       "classes": list(clf.classes)})

    try:
        if overlap:
            th.start()
        else:
            producer()
        while True:
            t = time.perf_counter()
            try:
                kind, item = q.get(timeout=0.1)
            except queue.Empty:
                stats["wait_s"] += time.perf_counter() - t
                if is_cancelled(cancel):
                    cancelled = True
                    break
                continue
            stats["wait_s"] += time.perf_counter() - t
            if kind == "error":
                raise item
            if kind == "end":
                break
            chunk = item
            if not len(chunk):
                continue
            chunks.append(chunk)
            n_cells += len(chunk)
            if clf is not None:
                t = time.perf_counter()
                from .classify import extract_crops

                crops = extract_crops(slide, chunk, clf)
                dt = time.perf_counter() - t
                stats["crops_s"] += dt
                stats["classify_s"] += dt
                pending.append(crops)
                n_pending += len(crops)
                run_batches(flush=False)
            if is_cancelled(cancel):
                cancelled = True
                break
        if clf is not None and not cancelled and not is_cancelled(cancel):
            run_batches(flush=True)
    finally:
        stop.set()
        if th.is_alive():
            th.join(timeout=60)
    stats["detect_s"] = det_time[0]
    partial = bool(cancelled or det_partial[0] or is_cancelled(cancel) or (clf is not None and n_pending > 0))
    if clf is not None:
        # keep only the cells that were classified (a cancelled run drops the unclassified tail)
        keep = n_done
        kept, total = [], 0
        for c in chunks:
            if total >= keep:
                break
            if total + len(c) <= keep:
                kept.append(c)
            else:
                kept.append(CellTable(c.df.iloc[:keep - total].copy(), c.meta))
            total += len(c)
        chunks = kept
    return chunks, probs, stats, partial


# ---------------------------------------------------------------- summary
def build_summary(table: CellTable, slide, mpp_info, det_info, clf_info, device, region, partial,
                  review_threshold, batch_size, tile_size, timings) -> dict:
    """The summary dict of one run (also written as ``summary.json``)."""
    counts = table.counts()
    n = len(table)
    s: dict[str, Any] = {
        "leukcore_version": __version__,
        "slide": {"name": Path(str(slide.path)).name if slide.path else None,
                  "path": str(slide.path) if slide.path else None,
                  "format": getattr(slide, "format", None),
                  "shape": [int(v) for v in slide.shape],
                  "levels": int(slide.n_levels)},
        "region": list(region) if region is not None else None,
        "cells": n,
        "counts": counts,
        "partial": bool(partial),
        "complete": False,
        "device": device,
        "models": {"detector": det_info, "classifier": clf_info},
        "mpp": dict(mpp_info),
        "settings": {"review_threshold": float(review_threshold), "batch_size": int(batch_size),
                     "tile_size": int(tile_size)},
        "timings": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in timings.items()},
    }
    if table.is_classified:
        s["classes"] = table.classes
        s["percent"] = {k: (round(100.0 * v / n, 3) if n else None) for k, v in counts.items()}
        s["blast_classes"] = [c for c in table.classes if c in BLAST_CLASSES]
        ts = table.summary()             # the one owner of blast percentage and review numbers
        for k in ("blast_percent", "blast_percent_all_cells", "blast_percent_basis", "review", "confident_counts"):
            s[k] = ts.get(k)
        s["mean_confidence"] = round(float(table.df["confidence"].mean()), 4) if n else None
    return s


# ---------------------------------------------------------------- outputs
def _clear_marker_and_temps(out: Path) -> None:
    from .export.kinds import SUMMARY_NAME

    (out / SUMMARY_NAME).unlink(missing_ok=True)
    for p in out.glob(".*.tmp-*"):  # left by a killed run
        if p.is_dir():
            import shutil

            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def write_outputs(result: AnalysisResult, out_dir: str | os.PathLike, *, slide=None,
                  formats=("parquet", "csv", "geojson", "labels", "overlay"),
                  progress=None, cancel=None, label_chunk: int = 1024) -> dict:
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
    from .export.kinds import FILE_NAMES, SUMMARY_NAME, write_output
    from .export.summary import write_summary

    if result.partial:
        raise ValueError("refusing to write a partial (cancelled) result as complete outputs")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _clear_marker_and_temps(out)
    t0 = time.perf_counter()
    table = result.table
    own = False
    if slide is None and ("labels" in formats or "overlay" in formats):
        from .io import open_slide

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
            paths[kind] = write_output(kind, table, out, slide=slide, title=title, label_chunk=label_chunk,
                                       cancel=cancel)
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
