"""The two stages of a slide analysis, overlapped: detection in a thread, classification in the caller's.

:func:`run_stages` runs :func:`leukcore.detect.iter_detect` in a background thread (the *producer*) that puts
each finished chunk of cells on a bounded queue; the calling thread (the *consumer*) takes chunks off the
queue, reads their crops and classifies them in fixed-size batches while detection goes on.  Cancelling (or an
error on either side) stops both; a cancelled run keeps only the cells that were classified.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .progress import emit, is_cancelled
from .results import CellTable
from .settings import AnalysisSettings

__all__ = ["run_stages", "StagesResult"]


@dataclass
class StagesResult:
    """What the stages give back: the cell chunks (classified ones only), their probabilities, timings."""

    chunks: list = field(default_factory=list)
    probs: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    partial: bool = False


class _Stages:
    """One run of the two stages (state shared by the producer thread and the consumer)."""

    def __init__(self, slide, det, clf, settings: AnalysisSettings, device: str, prog, cancel, batch_size: int):
        self.slide, self.det, self.clf, self.s = slide, det, clf, settings
        self.device, self.prog, self.cancel, self.bs = device, prog, cancel, batch_size
        self.stop = threading.Event()
        self.q: queue.Queue = queue.Queue(maxsize=max(1, int(settings.queue_size)) if settings.overlap else 0)
        self.det_time = 0.0
        self.det_partial = False
        self.chunks: list[CellTable] = []
        self.probs: list[np.ndarray] = []
        self.stats = {"detect_s": 0.0, "classify_s": 0.0, "crops_s": 0.0, "predict_s": 0.0, "wait_s": 0.0}
        self.pending: list[np.ndarray] = []  # crops waiting for a full batch
        self.n_pending = 0
        self.n_cells = 0
        self.n_done = 0
        self.cancelled = False

    # ------------------------------------------------------------ producer (detection)
    def should_stop(self) -> bool:
        return self.stop.is_set() or is_cancelled(self.cancel)

    def put(self, item) -> bool:
        while True:
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                if self.stop.is_set():
                    return False

    def produce(self) -> None:
        from .detect import iter_detect

        try:
            kw = dict(
                tile_size=self.s.tile_size,
                region=self.s.region,
                progress=self.prog,
                cancel=self.should_stop,
                device=self.device,
            )
            if self.s.detect_batch_size:
                kw["batch_size"] = int(self.s.detect_batch_size)
            gen = iter_detect(self.slide, self.det, **kw)
            while True:
                t = time.perf_counter()
                try:
                    chunk = next(gen)
                except StopIteration:
                    self.det_time += time.perf_counter() - t
                    break
                self.det_time += time.perf_counter() - t
                if chunk.meta.get("partial"):
                    self.det_partial = True
                if not self.put(("chunk", chunk)):
                    return
            self.put(("end", None))
        except BaseException as e:  # handed to the consumer, re-raised there
            self.put(("error", e))

    # ------------------------------------------------------------ consumer (classification)
    def classify_batches(self, flush: bool) -> None:
        clf, stats = self.clf, self.stats
        while self.n_pending >= self.bs or (flush and self.n_pending > 0):
            if self.should_stop():
                return
            allc = np.concatenate(self.pending, axis=0) if len(self.pending) > 1 else self.pending[0]
            take = min(self.bs, self.n_pending)
            batch, rest = allc[:take], allc[take:]
            t = time.perf_counter()
            p = np.asarray(clf.predict_crops(batch), dtype=np.float32)
            dt = time.perf_counter() - t
            stats["predict_s"] += dt
            stats["classify_s"] += dt
            self.probs.append(p)
            self.pending = [rest] if len(rest) else []
            self.n_pending = len(rest)
            self.n_done += take
            # the batch's labels travel with the event so a viewer can keep live counts
            emit(
                self.prog,
                "classify",
                self.n_done,
                self.n_cells,
                cells=self.n_cells,
                message=f"classified {self.n_done} of {self.n_cells} cells found so far",
                data={"labels": [clf.classes[int(i)] for i in p.argmax(axis=1)], "classes": list(clf.classes)},
            )

    def take(self, chunk: CellTable) -> None:
        """A detected chunk: kept, its crops read and queued for classification."""
        self.chunks.append(chunk)
        self.n_cells += len(chunk)
        if self.clf is None:
            return
        from .classify import extract_crops

        t = time.perf_counter()
        crops = extract_crops(self.slide, chunk, self.clf)
        dt = time.perf_counter() - t
        self.stats["crops_s"] += dt
        self.stats["classify_s"] += dt
        self.pending.append(crops)
        self.n_pending += len(crops)
        self.classify_batches(flush=False)

    def consume(self) -> None:
        while True:
            t = time.perf_counter()
            try:
                kind, item = self.q.get(timeout=0.1)
            except queue.Empty:
                self.stats["wait_s"] += time.perf_counter() - t
                if is_cancelled(self.cancel):
                    self.cancelled = True
                    return
                continue
            self.stats["wait_s"] += time.perf_counter() - t
            if kind == "error":
                raise item
            if kind == "end":
                return
            if not len(item):
                continue
            self.take(item)
            if is_cancelled(self.cancel):
                self.cancelled = True
                return

    # ------------------------------------------------------------ the run
    def classified_chunks(self) -> list[CellTable]:
        """The chunks cut to the cells that were classified (a cancelled run drops the unclassified tail)."""
        keep = self.n_done
        kept, total = [], 0
        for c in self.chunks:
            if total >= keep:
                break
            if total + len(c) <= keep:
                kept.append(c)
            else:
                kept.append(CellTable(c.df.iloc[: keep - total].copy(), c.meta))
            total += len(c)
        return kept

    def run(self) -> StagesResult:
        th = threading.Thread(target=self.produce, name="leukcore-detect", daemon=True)
        try:
            if self.s.overlap:
                th.start()
            else:
                self.produce()
            self.consume()
            if self.clf is not None and not self.cancelled and not is_cancelled(self.cancel):
                self.classify_batches(flush=True)
        finally:
            self.stop.set()
            if th.is_alive():
                th.join(timeout=60)
        self.stats["detect_s"] = self.det_time
        partial = bool(
            self.cancelled
            or self.det_partial
            or is_cancelled(self.cancel)
            or (self.clf is not None and self.n_pending > 0)
        )
        chunks = self.classified_chunks() if self.clf is not None else self.chunks
        return StagesResult(chunks, self.probs, self.stats, partial)


def run_stages(
    slide, det, clf, settings: AnalysisSettings, *, device: str, progress=None, cancel=None, batch_size: int = 32
) -> StagesResult:
    """Detection in a thread -> bounded queue -> crops + classification in batches of ``batch_size``.

    ``settings`` gives the detection tiling (``tile_size``, ``region``, ``detect_batch_size``) and the
    queue (``queue_size``, ``overlap``); ``clf=None`` detects only.
    """
    return _Stages(slide, det, clf, settings, device, progress, cancel, batch_size).run()
