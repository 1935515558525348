"""Archive runs on :mod:`dask.distributed`: one task per slide, resumable, failures isolated.

:func:`run_batch` takes a folder (searched recursively), a list file (one slide
path per line, ``#`` comments, paths relative to the list file) or a list of
paths, and analyses every slide on a dask cluster:

* by default a :class:`distributed.LocalCluster` of ``workers`` worker
  **processes** (one thread each); or an existing scheduler at ``scheduler``
  (``tcp://host:8786``), the same code path, which is how a run grows from one
  machine to many;
* one task per slide (:func:`process_slide`); each worker process loads the
  models once (:mod:`leukcore.loader` keeps them);
* **resumable**: a slide whose folder is complete (``summary.json`` written last,
  see :func:`leukcore.export.summary.is_complete`) **and** whose recorded
  fingerprint (:mod:`leukcore.provenance`: the input file's size, mtime and
  content samples, every setting, each model's card and weights hashes) equals
  the one this run would record is skipped; any difference redoes the slide and
  says why (``redo (settings changed: model)``).  So re-running a crashed or
  interrupted batch picks up where it stopped, and a rerun with other models or
  settings, or a replaced file, never returns the old results.  The old
  ``summary.json`` of every slide to redo is removed before any work; a worker
  process that dies mid-slide has its task rescheduled by dask on another worker;
* one slide's failure is caught inside its task and recorded in ``errors.json``
  (message and traceback); the others go on;
* a progress callback per finished slide (``as_completed``), and a final
  ``batch_summary.csv`` with one row per slide.

Output layout::

    OUT/<slide-name>/{cells.parquet, cells.csv, cells.geojson, labels.ome.zarr, overlay.png, summary.json}
    OUT/batch_summary.csv
    OUT/errors.json

``<slide-name>`` is the file name without its slide suffix; when two sources
share a name, each gets ``-<8 hex of sha1(absolute path)>`` appended, so names
are unique and the same for the same source list.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from .io.find import SLIDE_SUFFIXES, find_slides, slide_names
from .progress import emit, is_cancelled
from .settings import AnalysisSettings

__all__ = ["run_batch", "BatchCluster", "find_slides", "slide_names", "process_slide", "BatchResult", "SLIDE_SUFFIXES"]

_THREADS_SET = [False]


# ------------------------------------------------------------------ the task
def _model_arg(m):
    """Names and card paths travel as strings; loaded model objects are pickled to the workers as they are
    (their ONNX Runtime sessions are opened again there: ``Detector.__setstate__``, ``Classifier.__setstate__``).
    """
    if m is None or isinstance(m, str):
        return m
    if isinstance(m, os.PathLike):
        return str(Path(m).resolve())
    return m


def process_slide(source: str, out_dir: str, settings: AnalysisSettings) -> dict:
    """Analyse one slide into ``out_dir`` (the task each worker runs); never raises for a bad slide.

    The models are loaded once per worker process (:mod:`leukcore.loader`'s cache).

    Returns
    -------
    dict
        A batch-summary row: ``status`` is ``"done"`` or ``"error"`` (with ``error`` and ``traceback``).
    """
    from .export.summary import summary_row
    from .provenance import invalidate

    t0 = time.perf_counter()
    row: dict[str, Any] = {
        "slide": Path(out_dir).name,
        "source": str(source),
        "out_dir": str(out_dir),
        "worker_pid": os.getpid(),
    }
    try:
        invalidate(out_dir)  # before any work: a failure never leaves an old complete summary
        if not _THREADS_SET[0] and settings.threads:
            import torch

            torch.set_num_threads(int(settings.threads))
            _THREADS_SET[0] = True
        import dask

        from .pipeline import analyze_slide

        # Inside a dask worker, a bare .compute() (slide thumbnails, lazy levels) would default to the
        # distributed client and wait for a free worker thread: with every thread busy on a slide task that
        # deadlocks.  The slide's own lazy arrays are computed locally in this process instead.
        with dask.config.set(scheduler="threads"):
            res = analyze_slide(source, settings=settings, out_dir=out_dir)
        row.update(summary_row(res.summary))
        row["slide"] = Path(out_dir).name
        row["status"] = "done"
    except Exception as e:  # isolated: recorded, the batch goes on
        row["status"] = "error"
        row["error"] = f"{type(e).__name__}: {e}"
        row["traceback"] = traceback.format_exc(limit=20)
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


# ------------------------------------------------------------------ the run
class BatchResult(dict):
    """Summary of a batch run: ``rows`` (one per slide), ``errors``, ``paths``, counts by status."""

    @property
    def rows(self) -> list[dict]:
        """One row per slide (``status`` done / skipped / error), sorted by slide name."""
        return self["rows"]

    @property
    def errors(self) -> list[dict]:
        """The failed slides: ``slide``, ``source``, ``error``, ``traceback``."""
        return self["errors"]


def _skipped_row(source: Path, out: Path, summary: dict) -> dict:
    from .export.summary import summary_row

    row = summary_row(summary)
    row.update(
        slide=out.name,
        source=str(source),
        out_dir=str(out),
        status="skipped",
        worker_pid=None,
        resume="skipped (complete)",
    )
    return row


def current_models(detector, classifier, trust_unverified: bool = False) -> dict:
    """The model records a run with these models would write (cards read and hashed, networks not loaded).

    Raises
    ------
    leukcore.models.ModelError
        Unknown model, or a card whose weights have no sha256 without ``trust_unverified``.
    """
    from .models.registry import ModelError
    from .provenance import model_fingerprint

    out = {}
    for role, m in (("detector", detector), ("classifier", classifier)):
        rec = model_fingerprint(m)
        if rec is not None and rec.get("weights_verified") is False and not trust_unverified:
            raise ModelError(
                f"{rec.get('card_path')}: model card gives no sha256 for its weights, so they "
                f"cannot be verified; add weights.sha256 or pass trust_unverified=True "
                f"(--trust-unverified)"
            )
        out[role] = rec
    return out


def resume_decision(source: Path, out: Path, settings: dict, models: dict, resume: bool = True) -> tuple[bool, str]:
    """``(skip, why)`` for one slide: skip only a complete folder whose fingerprint matches this run's."""
    from .export.kinds import SUMMARY_NAME
    from .export.summary import is_complete, read_summary
    from .provenance import compare, describe, fingerprint, input_fingerprint

    if not out.exists():
        return False, "new"
    if not (out / SUMMARY_NAME).exists():
        return False, "redo (no summary.json: unfinished)"
    if not resume:
        return False, "redo (--no-resume)"
    if not is_complete(out, str(source)):
        return False, "redo (incomplete or another source)"
    try:
        recorded = read_summary(out).get("provenance")
    except ValueError:
        return False, "redo (unreadable summary.json)"
    current = fingerprint(input_fingerprint(source), settings, models["detector"], models["classifier"])
    reasons = compare(recorded, current)
    return (False, f"redo ({describe(reasons)})") if reasons else (True, "skipped (complete)")


def _write_batch_files(out_dir: Path, rows: list[dict], errors: list[dict]) -> dict:
    import pandas as pd

    from .results import atomic_path

    fixed = [
        "slide",
        "status",
        "resume",
        "source",
        "out_dir",
        "cells",
        "blast_percent",
        "review",
        "mpp",
        "mpp_source",
        "caveats",
        "detector",
        "classifier",
        "seconds",
        "worker_pid",
        "error",
    ]
    df = pd.DataFrame(sorted(rows, key=lambda r: r["slide"])).drop(columns=["traceback", "partial"], errors="ignore")
    extra = sorted(c for c in df.columns if c not in fixed)
    df = df.reindex(columns=[c for c in fixed] + extra)
    p_csv = out_dir / "batch_summary.csv"
    with atomic_path(p_csv) as tmp:
        df.to_csv(tmp, index=False)
    p_err = out_dir / "errors.json"
    with atomic_path(p_err) as tmp:
        Path(tmp).write_text(json.dumps(sorted(errors, key=lambda e: e["slide"]), indent=2) + "\n")
    return {"summary_csv": p_csv, "errors_json": p_err}


@dataclass(frozen=True)
class BatchCluster:
    """Where a batch runs: an existing dask client, a scheduler's address, or a new LocalCluster.

    Attributes
    ----------
    workers : int, optional
        Worker processes of the LocalCluster started when neither ``scheduler`` nor ``client`` is given
        (default 1); each runs ``settings.threads`` threads (default 1).
    scheduler : str, optional
        Address of an existing dask scheduler (``tcp://host:8786``); same code path.
    client : distributed.Client, optional
        An existing client to run on (not closed here).
    """

    workers: Optional[int] = None
    scheduler: Optional[str] = None
    client: Any = None


def run_batch(
    sources,
    out_dir: str | os.PathLike,
    *,
    settings: Optional[AnalysisSettings] = None,
    cluster: Optional[BatchCluster] = None,
    resume: bool = True,
    progress: Optional[Callable] = None,
    cancel=None,
    on_submitted: Optional[Callable] = None,
    **options,
) -> BatchResult:
    """Analyse many slides on dask.distributed; returns per-slide rows and writes the batch files.

    Parameters
    ----------
    sources : path-like or sequence
        A folder (recursive), a list file, one slide, or a list of slide paths.
    out_dir : path-like
        Output root; each slide gets ``out_dir/<name>/``.
    settings : AnalysisSettings, optional
        The analysis settings of every slide (:class:`leukcore.settings.AnalysisSettings`: models, device,
        mpp, batch size, review threshold, tile size, ``trust_unverified``, ``skip_missing``...), passed to
        :func:`leukcore.pipeline.analyze_slide` on the workers.
        ``settings.threads`` (default 1) is the threads of each worker process (dask threads,
        ``torch.set_num_threads`` and the detector's threads in the worker).
    cluster : BatchCluster, optional
        Where to run: worker processes of a new LocalCluster (default: one), a scheduler's address or an existing
        client (:class:`BatchCluster`).
    resume : bool
        Skip slides whose output folder is complete and was computed from the same input, settings
        and models (the ``provenance`` fingerprint in its ``summary.json``; default True).  Each row's
        ``resume`` says what was decided and why (``new``, ``skipped (complete)``,
        ``redo (settings changed: model)``, ...).
    progress : callable, optional
        :class:`~leukcore.progress.ProgressEvent` per finished slide (stage ``"batch"``); the first
        event's ``data["plan"]`` maps each slide name to its ``resume`` decision.
    cancel : CancelToken, optional
        Stops waiting and cancels unfinished tasks (finished slides stay finished).
    on_submitted : callable, optional
        Called with the dask client once the tasks are submitted (used by the fault test).
    **options
        Fields of :class:`~leukcore.settings.AnalysisSettings` applied over ``settings`` (``detector=``,
        ``classifier=``, ``device=``, ``mpp=``, ``batch_size=``, ``review_threshold=``, ``tile_size=``,
        ``trust_unverified=``, ``skip_missing=``...).

    Returns
    -------
    BatchResult
        ``rows`` (one per slide, status done/skipped/error), ``errors``, ``paths``,
        ``wall_s``, ``n_done``, ``n_skipped``, ``n_error``.
    """
    t0 = time.perf_counter()
    s = AnalysisSettings.build(settings, **options)
    cl = cluster or BatchCluster()
    threads = int(s.threads or 1)
    s = s.replace(detector=_model_arg(s.detector), classifier=_model_arg(s.classifier), threads=threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    srcs = find_slides(sources, exclude=out) if not isinstance(sources, (list, tuple)) else [Path(x) for x in sources]
    if cl.workers is not None and int(cl.workers) < 1:
        raise ValueError(f"workers must be >= 1, got {cl.workers}")
    rows, todo, plan = _plan(srcs, out, s, resume)
    total = len(srcs)
    emit(progress, "batch", len(rows), total, message=f"{len(rows)} already complete", data={"plan": plan})
    if todo:
        with _dask_client(cl, threads) as c:
            _run_tasks(c, todo, s, _Tally(rows, plan, total, progress, cancel), on_submitted)
    return _batch_result(out, rows, total, t0, bool(is_cancelled(cancel)))


def _batch_result(out: Path, rows: list, total: int, t0: float, cancelled: bool) -> BatchResult:
    """The batch files written (``batch_summary.csv``, ``errors.json``) and the :class:`BatchResult` (``t0``: start)."""
    errors = [
        {"slide": r["slide"], "source": r["source"], "error": r.get("error"), "traceback": r.get("traceback")}
        for r in rows
        if r.get("status") == "error"
    ]
    paths = _write_batch_files(out, rows, errors)
    return BatchResult(
        rows=sorted(rows, key=lambda r: r["slide"]),
        errors=errors,
        paths=paths,
        wall_s=time.perf_counter() - t0,
        n_done=sum(r["status"] == "done" for r in rows),
        n_skipped=sum(r["status"] == "skipped" for r in rows),
        n_error=len(errors),
        n_total=total,
        cancelled=cancelled,
    )


def _plan(srcs: list[Path], out: Path, s: AnalysisSettings, resume: bool):
    """``(rows of the slides skipped, [(source, folder)] to do, {name: resume decision})``."""
    from .export.summary import read_summary
    from .provenance import invalidate

    models = current_models(s.detector, s.classifier, s.trust_unverified)
    fp_settings = s.record()
    rows: list[dict] = []
    todo: list[tuple[Path, Path]] = []
    plan: dict[str, str] = {}
    for src, name in zip(srcs, slide_names(srcs), strict=False):
        d = out / name
        skip, why = resume_decision(src, d, fp_settings, models, resume)
        plan[name] = why
        if skip:
            rows.append(_skipped_row(src, d, read_summary(d)))
        else:
            invalidate(d)  # before any work: a killed run never leaves the old complete summary
            todo.append((src, d))
    return rows, todo, plan


@contextlib.contextmanager
def _dask_client(cluster: BatchCluster, threads: int):
    """The cluster's client itself, or a client of its scheduler, or of a new LocalCluster (closed on exit)."""
    if cluster.client is not None:
        yield cluster.client
        return
    from distributed import Client, LocalCluster

    own_cluster = None
    if cluster.scheduler:
        own_client = Client(cluster.scheduler)
    else:
        import logging

        own_cluster = LocalCluster(
            n_workers=int(cluster.workers or 1),
            threads_per_worker=threads,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        own_client = Client(own_cluster)
    try:
        yield own_client
    finally:
        own_client.close()
        if own_cluster is not None:
            own_cluster.close()


@dataclass
class _Tally:
    """The rows of a batch as its slides finish, and the progress events saying so."""

    rows: list
    plan: dict
    total: int
    progress: Optional[Callable]
    cancel: Any

    def add(self, row: dict, name: str) -> None:
        row["resume"] = self.plan[name]
        self.rows.append(row)
        emit(
            self.progress,
            "batch",
            len(self.rows),
            self.total,
            cells=int(row.get("cells") or 0),
            message=f"{name}: {row['status']}",
            data={"row": row},
        )


def _run_tasks(client, todo: list, s: AnalysisSettings, tally: _Tally, on_submitted: Optional[Callable]) -> None:
    """One :func:`process_slide` task per slide; rows in finishing order; cancel stops the rest."""
    from distributed import as_completed

    run_id = hashlib.sha1(f"{os.getpid()}-{time.time()}".encode()).hexdigest()[:8]
    futs = {}
    for src, d in todo:
        f = client.submit(process_slide, str(src), str(d), s, pure=False, key=f"leuk-slide-{d.name}-{run_id}")
        futs[f] = (src, d)
    if on_submitted is not None:
        on_submitted(client)
    for f in as_completed(list(futs)):
        src, d = futs[f]
        try:
            row = f.result()
        except Exception as e:  # the task itself died (e.g. worker killed too often)
            row = {
                "slide": d.name,
                "source": str(src),
                "out_dir": str(d),
                "status": "error",
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(limit=5),
            }
        tally.add(row, d.name)
        if is_cancelled(tally.cancel):
            for g in futs:
                if not g.done():
                    g.cancel()
            break
