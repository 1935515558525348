"""Analysis in a napari worker thread, fed by leukcore's progress callback.

:func:`progress_stream` is plain Python: it runs ``analyze`` in a helper thread and
yields its :class:`~leukcore.progress.ProgressEvent` s (throttled) until the run
ends, then returns the result (or re-raises its error).  :func:`start_analysis`
wraps it in :func:`napari.qt.threading.thread_worker`, so events reach the GUI
thread through the worker's ``yielded`` signal and the result through ``returned``.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Iterator, Optional

from leukcore.progress import CancelToken, ProgressEvent

__all__ = ["progress_stream", "start_analysis", "run_in_thread", "friendly_error"]

_DONE = object()


def progress_stream(analyze: Callable[..., Any], source, *, cancel: CancelToken,
                    min_interval: float = 0.05, **kwargs) -> Iterator[ProgressEvent]:
    """Run ``analyze(source, progress=..., cancel=cancel, **kwargs)``; yield its progress events.

    Events closer together than ``min_interval`` seconds are coalesced (the newest
    wins), so a fast producer cannot flood the GUI.  The generator's return value
    (``StopIteration.value``) is what ``analyze`` returned.
    """
    q: "queue.Queue" = queue.Queue()
    box: dict[str, Any] = {}

    def target():
        try:
            box["result"] = analyze(source, progress=q.put, cancel=cancel, **kwargs)
        except BaseException as e:  # re-raised in the worker thread below
            box["error"] = e
        finally:
            q.put(_DONE)

    th = threading.Thread(target=target, name="napari-leuk-analysis", daemon=True)
    th.start()
    last = 0.0
    pending: Optional[ProgressEvent] = None
    while True:
        try:
            item = q.get(timeout=min_interval)
        except queue.Empty:
            item = None
        if item is _DONE:
            break
        if item is not None:
            pending = item
        now = time.monotonic()
        if pending is not None and (now - last >= min_interval or item is None):
            yield pending
            pending, last = None, now
    if pending is not None:
        yield pending
    th.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def start_analysis(analyze, source, *, cancel: CancelToken, on_progress, on_done, on_error,
                   on_finished=None, **kwargs):
    """Start :func:`progress_stream` in a worker thread; returns the (started) worker.

    The worker is superqt's ``thread_worker`` (the one ``napari.qt.threading`` wraps):
    napari 0.9.2's wrapper connects a task-status lambda to ``errored`` that fails with a
    ``TypeError`` on every error and relays the error a second time, so errors would show
    twice, once garbled.  Our ``on_error`` turns them into one clear notification.
    """
    connect = {"yielded": on_progress, "returned": on_done, "errored": on_error}
    if on_finished is not None:
        connect["finished"] = on_finished
    return run_in_thread(progress_stream, analyze, source, cancel=cancel, _connect=connect, **kwargs)


def run_in_thread(func, *args, _connect: dict, **kwargs):
    """Run ``func`` (function or generator) in a started superqt worker with ``_connect`` signals."""
    from superqt.utils import create_worker

    from . import guard_triton

    guard_triton()      # the canvas may have loaded Mesa's LLVM since the plugin was imported
    return create_worker(func, *args, _connect=_connect, _start_thread=True, **kwargs)


def friendly_error(exc: BaseException) -> str:
    """A one-line message for a notification: what went wrong and what to try."""
    msg = str(exc) or type(exc).__name__
    low = msg.lower()
    if isinstance(exc, MemoryError) or "out of memory" in low or "cuda error: out of memory" in low:
        return ("Out of memory while analysing the slide: analyse a smaller region (current view or a drawn "
                f"shape), or choose the CPU device. ({type(exc).__name__}: {msg[:200]})")
    try:
        from leukcore.io import SlideError

        if isinstance(exc, SlideError):
            return f"Cannot read the slide: {msg}"
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, FileNotFoundError):
        return f"File not found: {msg}"
    return f"Analysis failed: {type(exc).__name__}: {msg}"
