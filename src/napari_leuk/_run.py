"""Analysis fed by leukcore's progress callback, as plain Python (no Qt here).

:func:`progress_stream` runs ``analyze`` in a helper thread and yields its
:class:`~leukcore.progress.ProgressEvent` s (throttled) until the run ends, then returns the result (or
re-raises its error); :func:`friendly_error` words a failure for a notification.  The Qt worker that runs it
is :func:`napari_leuk._worker.start_analysis`.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Iterator, Optional

from leukcore.progress import CancelToken, ProgressEvent

__all__ = ["progress_stream", "friendly_error"]

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
