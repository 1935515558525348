"""Progress reporting and cancellation, as plain callables.

The core never knows about threads or GUIs.  Long-running functions take

``progress``
    a callable receiving a :class:`ProgressEvent` (or ``None``);
``cancel``
    a :class:`CancelToken` (or anything with a ``cancelled`` attribute / a
    zero-argument callable returning ``bool``), checked between tiles/batches.

A cancelled run stops at the next check and returns what it has, marked
``partial``; it never raises from inside a worker thread unless asked to.

:func:`iter_progress` turns such a function into a generator of its events and, last, its result
(:func:`leukcore.pipeline.iter_analyze` for a slide's analysis).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

__all__ = ["ProgressEvent", "ProgressCallback", "CancelToken", "Cancelled", "is_cancelled", "emit", "iter_progress"]


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report.

    Attributes
    ----------
    stage : str
        Short stage name: ``"detect"``, ``"classify"``, ``"write"``, ``"batch"``...
    done, total : int
        Units finished and the total (tiles, cells, slides).  ``total`` may be 0
        when unknown.
    cells : int
        Cells found so far (when meaningful).
    message : str
        Free text for a status line.
    data : dict
        Optional payload (e.g. the newest partial results for live display).
    """

    stage: str
    done: int
    total: int
    cells: int = 0
    message: str = ""
    data: dict = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """``done / total`` (0 when the total is unknown)."""
        return (self.done / self.total) if self.total else 0.0


ProgressCallback = Callable[[ProgressEvent], Any]


class Cancelled(Exception):
    """Raised by :meth:`CancelToken.raise_if_cancelled`."""


class CancelToken:
    """Thread-safe cancellation flag.

    Examples
    --------
    >>> tok = CancelToken()
    >>> tok.cancelled
    False
    >>> tok.cancel(); tok.cancelled
    True
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the run to stop at its next check."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._event.is_set()

    def __bool__(self) -> bool:  # pragma: no cover - convenience
        return self.cancelled

    def raise_if_cancelled(self) -> None:
        """Raise :class:`Cancelled` when cancelled."""
        if self.cancelled:
            raise Cancelled("cancelled by user")


def is_cancelled(cancel: Optional[object]) -> bool:
    """True when ``cancel`` (token, event, callable or None) says stop."""
    if cancel is None:
        return False
    if isinstance(cancel, CancelToken):
        return cancel.cancelled
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    if callable(cancel):
        return bool(cancel())
    return bool(getattr(cancel, "cancelled", False))


def emit(progress: Optional[ProgressCallback], stage: str, done: int, total: int, **kw) -> None:
    """Call ``progress`` with a :class:`ProgressEvent` if it is not None."""
    if progress is not None:
        progress(ProgressEvent(stage=stage, done=int(done), total=int(total), **kw))


_DONE = object()


def iter_progress(run: Callable[..., Any], *args, cancel=None, min_interval: float = 0.0, **kwargs) -> Iterator:
    """Run ``run(*args, progress=..., cancel=cancel, **kwargs)`` in a helper thread, as a generator.

    Yields the run's :class:`ProgressEvent` s in order, then, last, what ``run`` returned (also the generator's
    return value, ``StopIteration.value``).  An error of the run is raised from the generator.  Events closer
    together than ``min_interval`` seconds are coalesced, the newest winning (0: every event), so a fast producer
    cannot flood a GUI.  Cancelling ``cancel`` stops the run at its next check (it then returns what it has,
    marked partial); closing the generator early cancels the run too (``cancel`` given as a
    :class:`CancelToken`, or none: one is made).
    """
    import queue

    token = CancelToken() if cancel is None else cancel
    q: queue.Queue = queue.Queue()
    box: dict[str, Any] = {}

    def target():
        try:
            box["result"] = run(*args, progress=q.put, cancel=token, **kwargs)
        except BaseException as e:  # raised from the generator below
            box["error"] = e
        finally:
            q.put(_DONE)

    th = threading.Thread(target=target, name="leukcore-progress", daemon=True)
    th.start()
    try:
        yield from _events(q, min_interval)
    except GeneratorExit:
        if hasattr(token, "cancel"):
            token.cancel()
        raise
    th.join()
    if "error" in box:
        raise box["error"]
    result = box.get("result")
    yield result
    return result


def _events(q, min_interval: float) -> Iterator[ProgressEvent]:
    """The events put on ``q`` until the end marker, coalesced to one per ``min_interval`` seconds."""
    import queue
    import time

    last = 0.0
    pending: Optional[ProgressEvent] = None
    while True:
        try:
            item = q.get(timeout=min_interval) if min_interval > 0 else q.get()
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
