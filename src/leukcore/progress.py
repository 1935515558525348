"""Progress reporting and cancellation, as plain callables.

The core never knows about threads or GUIs.  Long-running functions take

``progress``
    a callable receiving a :class:`ProgressEvent` (or ``None``);
``cancel``
    a :class:`CancelToken` (or anything with a ``cancelled`` attribute / a
    zero-argument callable returning ``bool``), checked between tiles/batches.

A cancelled run stops at the next check and returns what it has, marked
``partial``; it never raises from inside a worker thread unless asked to.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

__all__ = ["ProgressEvent", "ProgressCallback", "CancelToken", "Cancelled",
           "is_cancelled", "emit"]


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
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def __bool__(self) -> bool:  # pragma: no cover - convenience
        return self.cancelled

    def raise_if_cancelled(self) -> None:
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
