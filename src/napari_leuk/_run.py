"""An analysis as the plugin's worker consumes it, as plain Python (no Qt here).

:func:`analysis_events` yields the :class:`~leukcore.progress.ProgressEvent` s of
:func:`leukcore.pipeline.iter_analyze` (throttled) and returns the result (or re-raises its error);
:func:`friendly_error` words a failure for a notification.  The Qt worker that runs it is
:func:`napari_leuk._worker.start_analysis`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from leukcore.progress import CancelToken, ProgressEvent

__all__ = ["analysis_events", "friendly_error", "MIN_INTERVAL"]

#: seconds between two progress events shown (closer ones are coalesced, the newest wins)
MIN_INTERVAL = 0.05


def analysis_events(
    analyze: Callable[..., Any], source, *, cancel: CancelToken, min_interval: float = MIN_INTERVAL, **kwargs
) -> Iterator[ProgressEvent]:
    """The progress events of ``analyze(source, progress=..., cancel=cancel, **kwargs)``.

    :func:`leukcore.pipeline.iter_analyze` runs it; its last item, the result, becomes this generator's
    return value (``StopIteration.value``: the worker's ``returned`` signal).
    """
    from leukcore.pipeline import iter_analyze

    for item in iter_analyze(source, analyze=analyze, cancel=cancel, min_interval=min_interval, **kwargs):
        if not isinstance(item, ProgressEvent):
            return item
        yield item
    return None


def friendly_error(exc: BaseException) -> str:
    """A one-line message for a notification: what went wrong and what to try."""
    msg = str(exc) or type(exc).__name__
    low = msg.lower()
    if isinstance(exc, MemoryError) or "out of memory" in low or "cuda error: out of memory" in low:
        return (
            "Out of memory while analysing the slide: analyse a smaller region (current view or a drawn "
            f"shape), or choose the CPU device. ({type(exc).__name__}: {msg[:200]})"
        )
    try:
        from leukcore.io import SlideError

        if isinstance(exc, SlideError):
            return f"Cannot read the slide: {msg}"
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, FileNotFoundError):
        return f"File not found: {msg}"
    return f"Analysis failed: {type(exc).__name__}: {msg}"
