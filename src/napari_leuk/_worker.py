"""The Qt worker thread of an analysis: :func:`start_analysis` runs :func:`._run.analysis_events` in a superqt
worker, so events reach the GUI thread through the worker's ``yielded`` signal and the result through
``returned``; :func:`run_in_thread` runs any function that way (Grad-CAM).
"""

from __future__ import annotations

from leukcore.progress import CancelToken

from ._run import analysis_events

__all__ = ["start_analysis", "run_in_thread"]


def start_analysis(analyze, source, *, cancel: CancelToken, on_progress, on_done, on_error, on_finished=None, **kwargs):
    """Start :func:`analysis_events` in a worker thread; returns the (started) worker.

    The worker is superqt's ``thread_worker`` (the one ``napari.qt.threading`` wraps):
    napari 0.9.2's wrapper connects a task-status lambda to ``errored`` that fails with a
    ``TypeError`` on every error and relays the error a second time, so errors would show
    twice, once garbled.  Our ``on_error`` turns them into one clear notification.
    """
    connect = {"yielded": on_progress, "returned": on_done, "errored": on_error}
    if on_finished is not None:
        connect["finished"] = on_finished
    return run_in_thread(analysis_events, analyze, source, cancel=cancel, _connect=connect, **kwargs)


def run_in_thread(func, *args, _connect: dict, **kwargs):
    """Run ``func`` (function or generator) in a started superqt worker with ``_connect`` signals."""
    from superqt.utils import create_worker

    from . import guard_triton

    guard_triton()  # the canvas may have loaded Mesa's LLVM since the plugin was imported
    return create_worker(func, *args, _connect=_connect, _start_thread=True, **kwargs)
