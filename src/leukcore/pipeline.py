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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from ._version import __version__
from .caveats import run_caveats
from .export.folder import write_outputs
from .loader import load_classifier, load_detector
from .progress import ProgressEvent
from .results import BLAST_CLASSES, CellTable
from .settings import DEFAULT_CLASSIFIER, DEFAULT_DETECTOR, AnalysisSettings

__all__ = [
    "AnalysisResult",
    "AnalysisSettings",
    "analyze_slide",
    "iter_analyze",
    "write_outputs",
    "load_detector",
    "load_classifier",
    "model_info",
    "DEFAULT_BATCH_SIZE",
]

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
        """True when the run was cancelled before the end (the table holds what was found)."""
        return bool(self.summary.get("partial"))

    @property
    def counts(self) -> dict:
        """Cells per class (a copy of ``summary['counts']``)."""
        return dict(self.summary.get("counts", {}))

    def __repr__(self) -> str:
        return (
            f"<AnalysisResult: {len(self.table)} cells, counts={self.counts}, "
            f"blast%={self.summary.get('blast_percent')}, partial={self.partial}>"
        )


# ---------------------------------------------------------------- models
# load_detector / load_classifier: the one cached loader (leukcore.loader), re-exported here


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


def _resolve_mpp(slide, detector=None) -> tuple[Any, dict]:
    info = {"value": slide.mpp, "source": slide.mpp_source, "spread": None, "n_cells": None}
    if slide.mpp:
        return slide, info
    from .detect.scale import estimate_slide_mpp

    try:
        est = estimate_slide_mpp(slide, detector)
    except Exception as e:
        raise ValueError(
            f"{slide.path or 'slide'}: pixel size unknown and it could not be estimated "
            f"from red cells ({e}); pass mpp= (or --mpp)"
        ) from None
    slide = slide.with_mpp(est.mpp, "estimated")
    info.update(
        value=float(est.mpp),
        source="estimated",
        spread=float(est.spread),
        n_cells=int(est.n_cells),
        method=est.method,
        reliable=bool(est.reliable),
        reason=est.reason,
    )
    return slide, info


def _clean_meta(slide, mpp_info, det_info, clf_info, region, partial, classes, review_threshold) -> dict:
    """The table meta written into cells.parquet: deterministic (no timings, no host names)."""
    return {
        "slide": Path(str(slide.path)).name if slide.path else None,
        "shape": [int(s) for s in slide.shape],
        "mpp": mpp_info["value"],
        "mpp_source": mpp_info["source"],
        "detector": _table_model_info(det_info),
        "classifier": _table_model_info(clf_info),
        "classes": list(classes),
        "review_threshold": float(review_threshold),
        "region": list(region) if region is not None else None,
        "partial": bool(partial),
        "leukcore_version": __version__,
    }


# ---------------------------------------------------------------- main
def analyze_slide(
    slide_or_path,
    detector=DEFAULT_DETECTOR,
    classifier=DEFAULT_CLASSIFIER,
    *,
    settings: Optional[AnalysisSettings] = None,
    progress: Optional[Callable[[ProgressEvent], Any]] = None,
    cancel=None,
    out_dir: Optional[str | os.PathLike] = None,
    **options,
) -> AnalysisResult:
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
    settings : AnalysisSettings, optional
        Every other setting (:class:`leukcore.settings.AnalysisSettings`: device, mpp, region, batch sizes,
        review threshold, tile size, ``skip_missing``, ``trust_unverified``...).  ``detector`` and
        ``classifier`` given here, when not the defaults, replace the settings' ones.
    progress : callable, optional
        Receives :class:`~leukcore.progress.ProgressEvent` (stages ``detect``,
        ``classify``, ``write``, ``labels``); calls are serialised but may come from the
        detection thread.
    cancel : CancelToken or callable, optional
        Checked between tiles and batches; a cancelled run returns what it has with
        ``summary["partial"] = True`` and writes no output files.
    out_dir : path-like, optional
        When given and the run completed, :func:`write_outputs` writes the folder.  Its old
        ``summary.json`` is removed first, before any work, so a failed or cancelled run never
        leaves a previous run's completion marker there.
    **options
        Any field of :class:`~leukcore.settings.AnalysisSettings` (``device="cpu"``, ``mpp=0.5``,
        ``region=(y0, x0, y1, x1)``, ``batch_size``, ``review_threshold`` (default: the classifier card's),
        ``tile_size``, ``detect_batch_size``, ``queue_size``, ``overlap``, ``trust_unverified``,
        ``skip_missing``), applied over ``settings``.  Pixels that are not in the file stop the run with
        :class:`~leukcore.io.MissingTileError` unless ``skip_missing`` (then ``summary["missing"]`` records
        them, ``complete: false``).

    Returns
    -------
    AnalysisResult

    Raises
    ------
    leukcore.io.SlideError
        The slide cannot be opened or read (message names the file).
    ValueError
        Unknown device / pixel size unknown and not estimable.
    TypeError
        An option that is not an analysis setting.
    """
    s = _settings(settings, detector, classifier, options)
    return _SlideRun(s, progress, cancel, out_dir).run(slide_or_path)


def iter_analyze(
    slide_or_path,
    *,
    settings: Optional[AnalysisSettings] = None,
    cancel=None,
    out_dir: Optional[str | os.PathLike] = None,
    min_interval: float = 0.0,
    analyze: Optional[Callable[..., Any]] = None,
    **options,
) -> Iterator[Any]:
    """:func:`analyze_slide` as a generator: its progress events in order, then, last, its result.

    The analysis runs in a helper thread (:func:`leukcore.progress.iter_progress`), so a GUI or a web handler
    iterates instead of passing a callback.  The result (an :class:`AnalysisResult`) is the last item and the
    generator's return value; an error of the analysis is raised from the generator.

    Parameters
    ----------
    slide_or_path, settings, out_dir, **options
        As :func:`analyze_slide`.
    cancel : CancelToken, optional
        Cancelling it stops the analysis at its next check; the last item is then the partial result
        (``summary["partial"]``).  Closing the generator early cancels the analysis too.
    min_interval : float
        Events closer together than this many seconds are coalesced, the newest winning (0: every event).
    analyze : callable, optional
        The analysis to run (default :func:`analyze_slide`; same signature): a plugin's test double.

    Examples
    --------
    >>> for item in iter_analyze("slide.svs", device="cpu"):  # doctest: +SKIP
    ...     if isinstance(item, ProgressEvent):
    ...         print(item.stage, item.done, item.total)
    ...     else:
    ...         result = item
    """
    from .progress import iter_progress

    run = analyze or analyze_slide
    kwargs = dict(options, settings=settings)
    if out_dir is not None:
        kwargs["out_dir"] = out_dir
    return (yield from iter_progress(run, slide_or_path, cancel=cancel, min_interval=min_interval, **kwargs))


def _settings(settings, detector, classifier, options) -> AnalysisSettings:
    """``settings`` (or the defaults) with ``options`` and any non-default ``detector`` / ``classifier``."""
    if settings is None:
        return AnalysisSettings.build(detector=detector, classifier=classifier, **options)
    if detector is not DEFAULT_DETECTOR:
        options["detector"] = detector
    if classifier is not DEFAULT_CLASSIFIER:
        options["classifier"] = classifier
    return AnalysisSettings.build(settings, **options)


class _SlideRun:
    """One call of :func:`analyze_slide`, in named steps."""

    def __init__(self, settings: AnalysisSettings, progress, cancel, out_dir):
        self.s, self.cancel, self.out_dir = settings, cancel, out_dir
        self.stain: Optional[dict] = None  # the slide's colour map (meta["stain"]), set by table()
        self.prog = _Progress(progress)
        self.timings: dict[str, float] = {}
        self.t_start = time.perf_counter()

    def _timed(self, name: str, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        self.timings[name] = time.perf_counter() - t
        return out

    def run(self, slide_or_path) -> AnalysisResult:
        from . import provenance
        from .device import resolve_device

        s = self.s
        if self.out_dir is not None:
            provenance.invalidate(self.out_dir)
        self.dev = resolve_device(s.device)
        self.dev_name = str(self.dev)
        src_path = (
            slide_or_path if isinstance(slide_or_path, (str, os.PathLike)) else getattr(slide_or_path, "path", None)
        )
        self.input_fp = self._timed("fingerprint_s", provenance.input_fingerprint, src_path)
        slide, opened = self._timed("open_s", _open, slide_or_path, s.mpp)
        try:
            return self.analyze(slide)
        finally:
            if opened:
                slide.close()

    def analyze(self, slide) -> AnalysisResult:
        from .io.integrity import apply_missing_policy, integrity_summary

        s = self.s
        slide = apply_missing_policy(slide, s.skip_missing, s.region)
        det, clf = self._timed("load_s", self.load_models)
        if det is None:
            raise ValueError("a detector is required")
        slide, mpp_info = self._timed("mpp_s", _resolve_mpp, slide, det)
        bs = int(s.batch_size or DEFAULT_BATCH_SIZE.get(self.dev.type, 32))
        if bs < 1:
            raise ValueError(f"batch_size must be >= 1, got {s.batch_size}")
        from .stages import run_stages

        t_pipe = time.perf_counter()
        st = run_stages(slide, det, clf, s, device=self.dev_name, progress=self.prog, cancel=self.cancel, batch_size=bs)
        self.timings["pipeline_s"] = time.perf_counter() - t_pipe
        self.timings.update(st.stats)
        table, review_threshold = self.table(slide, mpp_info, det, clf, st)
        result = AnalysisResult(table, self.summary(table, slide, mpp_info, det, clf, st.partial, review_threshold, bs))
        result.summary.update(integrity_summary(slide, s.skip_missing))
        return self.finish(result, slide, st.partial)

    def load_models(self):
        from .loader import load_classifier, load_detector

        s = self.s
        # the settings' thread count is the detector's (ONNX Runtime intra-op threads, torch threads)
        det_options = {"threads": int(s.threads)} if s.threads else {}
        return (
            load_detector(s.detector, device=self.dev_name, trust_unverified=s.trust_unverified, **det_options),
            load_classifier(s.classifier, device=self.dev_name, trust_unverified=s.trust_unverified),
        )

    def table(self, slide, mpp_info, det, clf, st) -> tuple[CellTable, float]:
        """The sorted cell table with its classification, and the review threshold used."""
        # the classifier card's thresholds (chosen on validation data) unless given
        from .classify.infer import review_rule

        classes = list(clf.classes) if clf is not None else []
        review_threshold, blast_threshold = review_rule(clf, self.s.review_threshold)
        meta = _clean_meta(
            slide, mpp_info, model_info(det), model_info(clf), self.s.region, st.partial, classes, review_threshold
        )
        # the slide's colour map, for the summary's caveats (leukcore.caveats); the cell files keep their meta
        self.stain = next((c.meta["stain"] for c in st.chunks if c.meta.get("stain")), None)
        table = CellTable.concat(st.chunks, meta=meta) if st.chunks else CellTable(None, meta)
        table.meta = meta
        if clf is not None:
            P = np.concatenate(st.probs, axis=0) if st.probs else np.zeros((0, len(classes)), np.float32)
            table.set_classification(P[: len(table)], classes, review_threshold, blast_threshold=blast_threshold)
        table = table.sorted()
        table.meta = meta
        return table, review_threshold

    def summary(self, table, slide, mpp_info, det, clf, partial, review_threshold, bs) -> dict:
        from . import provenance

        timings = self.timings
        slower = max(timings.get("detect_s", 0.0), timings.get("classify_s", 0.0))
        timings["efficiency"] = (timings["pipeline_s"] / slower) if slower > 0 else None
        det_info, clf_info = model_info(det), model_info(clf)
        resolved = self.s.replace(review_threshold=review_threshold, batch_size=bs)
        summary = build_summary(
            table,
            slide,
            mpp_info,
            {"detector": det_info, "classifier": clf_info},
            resolved,
            self.dev_name,
            partial,
            timings,
        )
        summary["stain"] = _stain_record(self.stain)
        summary["caveats"] = run_caveats(summary["mpp"], summary["stain"])
        summary["provenance"] = provenance.fingerprint(self.input_fp, self.s.record(), det_info, clf_info)
        return summary

    def finish(self, result: AnalysisResult, slide, partial: bool) -> AnalysisResult:
        """Write the folder (a complete run with ``out_dir``); the total time in the summary."""
        summary = result.summary
        if self.out_dir is not None and not partial:
            write_outputs(result, self.out_dir, slide=slide, progress=self.prog, cancel=self.cancel)
        summary["timings"]["total_s"] = time.perf_counter() - self.t_start
        if result.outputs:  # keep the written summary and the returned one identical
            from .export.summary import write_summary

            write_summary(summary, result.outputs["summary"])
        return result


# ---------------------------------------------------------------- summary
def _stain_record(stain: Optional[dict]) -> Optional[dict]:
    """The summary's ``stain``: whether the colour map ran, how far the slide's stain is from the template."""
    if not stain:
        return None
    return {k: stain[k] for k in ("method", "applied", "distance", "unlike_training", "reason") if k in stain}


def build_summary(
    table: CellTable,
    slide,
    mpp_info: dict,
    models: dict,
    settings: AnalysisSettings,
    device: str,
    partial: bool,
    timings: dict,
) -> dict:
    """The summary dict of one run (also written as ``summary.json``).

    ``models``: the ``detector`` and ``classifier`` records (:func:`model_info`); ``settings``: the run's settings
    with the review threshold and classification batch size as resolved (the card's, the device's default).
    """
    region, review_threshold = settings.region, settings.review_threshold
    batch_size, tile_size = settings.batch_size, settings.tile_size
    counts = table.counts()
    n = len(table)
    s: dict[str, Any] = {
        "leukcore_version": __version__,
        "slide": {
            "name": Path(str(slide.path)).name if slide.path else None,
            "path": str(slide.path) if slide.path else None,
            "format": getattr(slide, "format", None),
            "shape": [int(v) for v in slide.shape],
            "levels": int(slide.n_levels),
        },
        "region": list(region) if region is not None else None,
        "cells": n,
        "counts": counts,
        "partial": bool(partial),
        "complete": False,
        "device": device,
        "models": {"detector": models.get("detector"), "classifier": models.get("classifier")},
        "mpp": dict(mpp_info),
        "settings": {
            "review_threshold": float(review_threshold),
            "batch_size": int(batch_size),
            "tile_size": int(tile_size),
        },
        "timings": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in timings.items()},
    }
    if table.is_classified:
        s["classes"] = table.classes
        s["percent"] = {k: (round(100.0 * v / n, 3) if n else None) for k, v in counts.items()}
        s["blast_classes"] = [c for c in table.classes if c in BLAST_CLASSES]
        ts = table.summary()  # the one owner of blast percentage and review numbers
        for k in ("blast_percent", "blast_percent_all_cells", "blast_percent_basis", "review", "confident_counts"):
            s[k] = ts.get(k)
        if "review_reasons" in ts:  # a classifier with OOD statistics: why cells were left for review
            s["review_reasons"] = ts["review_reasons"]
        s["mean_confidence"] = round(float(table.df["confidence"].mean()), 4) if n else None
    return s
