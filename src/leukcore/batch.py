"""Archive runs on :mod:`dask.distributed`: one task per slide, resumable, failures isolated.

:func:`run_batch` takes a folder (searched recursively), a list file (one slide
path per line, ``#`` comments, paths relative to the list file) or a list of
paths, and analyses every slide on a dask cluster:

* by default a :class:`distributed.LocalCluster` of ``workers`` worker
  **processes** (one thread each); or an existing scheduler at ``scheduler``
  (``tcp://host:8786``), the same code path, which is how a run grows from one
  machine to many;
* one task per slide (:func:`process_slide`); each worker process loads the
  models once and keeps them in a module-level cache (:data:`_MODELS`);
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

import hashlib
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .progress import emit, is_cancelled

__all__ = ["run_batch", "find_slides", "slide_names", "process_slide", "BatchResult", "SLIDE_SUFFIXES"]

#: suffixes recognised as slides when a folder is searched (longest first)
SLIDE_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".svs", ".ndpi", ".scn",
                  ".zarr", ".png", ".jpg", ".jpeg", ".bmp")

#: per-worker-process cache of loaded models: (detector, classifier, device) -> (Detector, Classifier)
_MODELS: dict[tuple, tuple] = {}
_THREADS_SET = [False]


# ------------------------------------------------------------------ sources
def _slide_suffix(name: str) -> Optional[str]:
    low = name.lower()
    for s in SLIDE_SUFFIXES:
        if low.endswith(s):
            return s
    return None


def find_slides(source: str | os.PathLike | Sequence, *, exclude: Optional[os.PathLike] = None) -> list[Path]:
    """Slides named by ``source``: a folder (recursive), a list file, one slide, or a list of paths.

    Raises
    ------
    FileNotFoundError
        ``source`` (or a path in a list file) does not exist.
    ValueError
        A folder holds no slide.
    """
    if isinstance(source, (list, tuple)):
        return [Path(p) for p in source]
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"{src}: batch source does not exist (give a folder, a list file or a slide)")
    ex = Path(exclude).resolve() if exclude else None
    if src.is_dir() and not _slide_suffix(src.name):
        found = []
        for root, dirs, files in os.walk(src):
            rp = Path(root)
            if ex is not None and (rp.resolve() == ex or ex in rp.resolve().parents):
                dirs[:] = []
                continue
            keep = []
            for d in sorted(dirs):
                if d.startswith("."):
                    continue
                if _slide_suffix(d) in (".zarr", ".ome.zarr"):
                    found.append(rp / d)
                else:
                    keep.append(d)
            dirs[:] = keep
            for f in sorted(files):
                if not f.startswith(".") and _slide_suffix(f):
                    found.append(rp / f)
        if not found:
            raise ValueError(f"{src}: no slides found (looked for {', '.join(SLIDE_SUFFIXES)})")
        return sorted(found)
    if _slide_suffix(src.name):
        return [src]
    # a list file
    out = []
    for line in src.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line)
        if not p.is_absolute():
            p = src.parent / p
        out.append(p)
    if not out:
        raise ValueError(f"{src}: list file names no slides")
    return out


def slide_names(sources: Sequence[Path]) -> list[str]:
    """Unique, deterministic output folder names for ``sources`` (stem, + hash when stems collide)."""
    stems = []
    for p in sources:
        s = _slide_suffix(p.name)
        stems.append(p.name[: -len(s)] if s else p.stem)
    counts: dict[str, int] = {}
    for s in stems:
        counts[s.lower()] = counts.get(s.lower(), 0) + 1
    names = []
    for p, s in zip(sources, stems, strict=False):
        if counts[s.lower()] > 1:
            h = hashlib.sha1(str(Path(p).resolve()).encode()).hexdigest()[:8]
            s = f"{s}-{h}"
        names.append(s)
    return names


# ------------------------------------------------------------------ the task
def _model_arg(m):
    """Names and card paths travel as strings; loaded model objects are pickled to the workers as they are."""
    if m is None or isinstance(m, str):
        return m
    if isinstance(m, os.PathLike):
        return str(Path(m).resolve())
    return m


def _model_key(m) -> str:
    if m is None or isinstance(m, str):
        return str(m)
    card = getattr(m, "card", None) or {}
    return f"obj:{type(m).__name__}:{card.get('name')}:{card.get('version')}:{(card.get('weights') or {}).get('sha256')}"


def _models(settings: dict):
    from .pipeline import load_classifier, load_detector

    trust = bool(settings.get("trust_unverified"))
    key = (_model_key(settings.get("detector")), _model_key(settings.get("classifier")), str(settings.get("device")),
           trust)
    if key not in _MODELS:
        det = load_detector(settings.get("detector", "wbc-stardist"), device=settings.get("device", "auto"),
                            trust_unverified=trust)
        clf = load_classifier(settings.get("classifier", "all-binary"), device=settings.get("device", "auto"),
                              trust_unverified=trust)
        _MODELS[key] = (det, clf)
    return _MODELS[key]


def process_slide(source: str, out_dir: str, settings: dict) -> dict:
    """Analyse one slide into ``out_dir`` (the task each worker runs); never raises for a bad slide.

    Returns
    -------
    dict
        A batch-summary row: ``status`` is ``"done"`` or ``"error"`` (with ``error`` and ``traceback``).
    """
    from .export.summary import summary_row
    from .provenance import invalidate

    t0 = time.perf_counter()
    row: dict[str, Any] = {"slide": Path(out_dir).name, "source": str(source), "out_dir": str(out_dir),
                           "worker_pid": os.getpid()}
    try:
        invalidate(out_dir)          # before any work: a failure never leaves an old complete summary
        if not _THREADS_SET[0] and settings.get("threads"):
            import torch

            torch.set_num_threads(int(settings["threads"]))
            _THREADS_SET[0] = True
        det, clf = _models(settings)
        import dask

        from .pipeline import analyze_slide

        # Inside a dask worker, a bare .compute() (slide thumbnails, lazy levels) would default to the
        # distributed client and wait for a free worker thread: with every thread busy on a slide task that
        # deadlocks.  The slide's own lazy arrays are computed locally in this process instead.
        with dask.config.set(scheduler="threads"):
            res = analyze_slide(source, det, clf, device=settings.get("device", "auto"), mpp=settings.get("mpp"),
                                batch_size=settings.get("batch_size"),
                                review_threshold=settings.get("review_threshold"),
                                tile_size=settings.get("tile_size", 1024), out_dir=out_dir,
                                trust_unverified=bool(settings.get("trust_unverified")),
                                skip_missing=bool(settings.get("skip_missing")))
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
        return self["rows"]

    @property
    def errors(self) -> list[dict]:
        return self["errors"]


def _skipped_row(source: Path, out: Path, summary: dict) -> dict:
    from .export.summary import summary_row

    row = summary_row(summary)
    row.update(slide=out.name, source=str(source), out_dir=str(out), status="skipped", worker_pid=None,
               resume="skipped (complete)")
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
            raise ModelError(f"{rec.get('card_path')}: model card gives no sha256 for its weights, so they "
                             f"cannot be verified; add weights.sha256 or pass trust_unverified=True "
                             f"(--trust-unverified)")
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

    fixed = ["slide", "status", "resume", "source", "out_dir", "cells", "blast_percent", "review", "mpp",
             "mpp_source", "detector", "classifier", "seconds", "worker_pid", "error"]
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


def run_batch(sources, out_dir: str | os.PathLike, *, workers: Optional[int] = None,
              scheduler: Optional[str] = None, client=None,
              detector: str = "wbc-stardist", classifier: str = "all-binary", device: str = "auto",
              mpp: Optional[float] = None, batch_size: Optional[int] = None, review_threshold: Optional[float] = None,
              tile_size: int = 1024, threads_per_worker: int = 1, resume: bool = True,
              progress: Optional[Callable] = None, cancel=None,
              on_submitted: Optional[Callable] = None, trust_unverified: bool = False,
              skip_missing: bool = False) -> BatchResult:
    """Analyse many slides on dask.distributed; returns per-slide rows and writes the batch files.

    Parameters
    ----------
    sources : path-like or sequence
        A folder (recursive), a list file, one slide, or a list of slide paths.
    out_dir : path-like
        Output root; each slide gets ``out_dir/<name>/``.
    workers : int, optional
        Worker processes of the LocalCluster started when neither ``scheduler`` nor
        ``client`` is given (default 1).
    scheduler : str, optional
        Address of an existing dask scheduler (``tcp://host:8786``); same code path.
    client : distributed.Client, optional
        An existing client to run on (not closed here).
    detector, classifier, device, mpp, batch_size, review_threshold, tile_size
        Passed to :func:`leukcore.pipeline.analyze_slide` on the workers.
    threads_per_worker : int
        Threads per worker process (also ``torch.set_num_threads`` in the worker).
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
    trust_unverified : bool
        Load model cards whose weights have no sha256 (refused by default).
    skip_missing : bool
        Passed to :func:`leukcore.pipeline.analyze_slide`: analyse damaged slides around their missing
        tiles (recorded in their summary, never complete) instead of failing them.

    Returns
    -------
    BatchResult
        ``rows`` (one per slide, status done/skipped/error), ``errors``, ``paths``,
        ``wall_s``, ``n_done``, ``n_skipped``, ``n_error``.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    srcs = find_slides(sources, exclude=out) if not isinstance(sources, (list, tuple)) else [Path(s) for s in sources]
    names = slide_names(srcs)
    if workers is not None and int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    settings = {"detector": _model_arg(detector), "classifier": _model_arg(classifier),
                "device": device, "mpp": mpp, "batch_size": batch_size, "review_threshold": review_threshold,
                "tile_size": tile_size, "threads": int(threads_per_worker),
                "trust_unverified": bool(trust_unverified), "skip_missing": bool(skip_missing)}

    from .export.summary import read_summary
    from .provenance import analysis_settings, invalidate

    models = current_models(settings["detector"], settings["classifier"], trust_unverified)
    fp_settings = analysis_settings(mpp=mpp, review_threshold=review_threshold, tile_size=tile_size,
                                    batch_size=batch_size, device=device, skip_missing=skip_missing)
    rows: list[dict] = []
    todo: list[tuple[Path, Path]] = []
    plan: dict[str, str] = {}
    for src, name in zip(srcs, names, strict=False):
        d = out / name
        skip, why = resume_decision(src, d, fp_settings, models, resume)
        plan[name] = why
        if skip:
            rows.append(_skipped_row(src, d, read_summary(d)))
        else:
            invalidate(d)            # before any work: a killed run never leaves the old complete summary
            todo.append((src, d))
    total = len(srcs)
    done = len(rows)
    emit(progress, "batch", done, total, message=f"{done} already complete", data={"plan": plan})

    own_client = own_cluster = None
    if todo:
        from distributed import Client, LocalCluster, as_completed

        if client is None:
            if scheduler:
                client = own_client = Client(scheduler)
            else:
                import logging

                own_cluster = LocalCluster(n_workers=int(workers or 1), threads_per_worker=int(threads_per_worker),
                                           processes=True, dashboard_address=None,
                                           silence_logs=logging.ERROR)
                client = own_client = Client(own_cluster)
        try:
            run_id = hashlib.sha1(f"{os.getpid()}-{time.time()}".encode()).hexdigest()[:8]
            futs = {}
            for src, d in todo:
                f = client.submit(process_slide, str(src), str(d), settings, pure=False,
                                  key=f"leuk-slide-{d.name}-{run_id}")
                futs[f] = (src, d)
            if on_submitted is not None:
                on_submitted(client)
            ac = as_completed(list(futs))
            for f in ac:
                src, d = futs[f]
                try:
                    row = f.result()
                except Exception as e:  # the task itself died (e.g. worker killed too often)
                    row = {"slide": d.name, "source": str(src), "out_dir": str(d), "status": "error",
                           "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=5)}
                row["resume"] = plan[d.name]
                rows.append(row)
                done += 1
                emit(progress, "batch", done, total, cells=int(row.get("cells") or 0),
                     message=f"{d.name}: {row['status']}", data={"row": row})
                if is_cancelled(cancel):
                    for g in futs:
                        if not g.done():
                            g.cancel()
                    break
        finally:
            if own_client is not None:
                own_client.close()
            if own_cluster is not None:
                own_cluster.close()
    errors = [{"slide": r["slide"], "source": r["source"], "error": r.get("error"),
               "traceback": r.get("traceback")} for r in rows if r.get("status") == "error"]
    paths = _write_batch_files(out, rows, errors)
    res = BatchResult(rows=sorted(rows, key=lambda r: r["slide"]), errors=errors, paths=paths,
                      wall_s=time.perf_counter() - t0,
                      n_done=sum(r["status"] == "done" for r in rows),
                      n_skipped=sum(r["status"] == "skipped" for r in rows),
                      n_error=len(errors), n_total=total,
                      cancelled=bool(is_cancelled(cancel)))
    return res
