"""``iter_analyze``: an analysis as a generator of its progress events, then its result (issue 15)."""

from __future__ import annotations

import pytest

from leukcore.progress import CancelToken, ProgressEvent
from test_pipeline_plumbing import fakes, slide  # noqa: F401  (fixtures)


def _per_stage(events) -> dict:
    out: dict = {}
    for ev in events:
        out.setdefault(ev.stage, []).append((ev.done, ev.total))
    return out


def test_iter_analyze_yields_the_callback_events_in_order_then_the_result(fakes, slide):  # noqa: F811
    from leukcore.pipeline import AnalysisResult, analyze_slide, iter_analyze

    det, clf = fakes
    opts = dict(detector=det, classifier=clf, device="cpu", tile_size=512, batch_size=4)
    seen: list = []
    direct = analyze_slide(slide, progress=seen.append, **opts)
    items = list(iter_analyze(slide, **opts))
    *events, result = items
    assert all(isinstance(ev, ProgressEvent) for ev in events)
    assert isinstance(result, AnalysisResult) and not result.partial
    assert len(result.table) == len(direct.table) == 12
    assert _per_stage(events) == _per_stage(seen)  # the same events, each stage in order
    detect = [done for done, _ in _per_stage(events)["detect"]]
    assert detect == sorted(detect) and detect[-1] == 9


def test_iter_analyze_returns_the_result_as_its_stop_value(fakes, slide):  # noqa: F811
    from leukcore.pipeline import iter_analyze

    det, clf = fakes
    gen = iter_analyze(slide, detector=det, classifier=clf, device="cpu", tile_size=512)
    last = None
    with pytest.raises(StopIteration) as stop:
        while True:
            last = next(gen)
    assert stop.value.value is last and len(last.table) == 12


def test_cancel_stops_iter_analyze_with_a_partial_result(fakes, slide, tmp_path):  # noqa: F811
    from leukcore.pipeline import AnalysisResult, iter_analyze

    det, clf = fakes
    tok = CancelToken()
    items = []
    for item in iter_analyze(
        slide,
        detector=det,
        classifier=clf,
        device="cpu",
        tile_size=256,
        batch_size=2,
        queue_size=1,
        cancel=tok,
        out_dir=tmp_path / "o",
    ):
        items.append(item)
        if isinstance(item, ProgressEvent) and item.stage == "classify":
            tok.cancel()
    result = items[-1]
    assert isinstance(result, AnalysisResult) and result.partial
    assert 0 < len(result.table) < 12
    assert not (tmp_path / "o" / "summary.json").exists()


def test_closing_iter_analyze_early_cancels_the_run(fakes, slide):  # noqa: F811
    from leukcore.pipeline import iter_analyze

    det, clf = fakes
    tok = CancelToken()
    gen = iter_analyze(slide, detector=det, classifier=clf, device="cpu", tile_size=256, cancel=tok)
    assert isinstance(next(gen), ProgressEvent)
    gen.close()
    assert tok.cancelled


def test_iter_analyze_raises_the_analysis_error():
    from leukcore.pipeline import iter_analyze

    def broken(source, *, progress, cancel, **kw):
        progress(ProgressEvent("detect", 1, 2))
        raise ValueError("no pixels")

    gen = iter_analyze("x.svs", analyze=broken)
    assert next(gen).stage == "detect"
    with pytest.raises(ValueError, match="no pixels"):
        next(gen)


def test_iter_progress_coalesces_fast_events():
    import time

    from leukcore.progress import emit, iter_progress

    def fast(*, progress, cancel):
        for i in range(200):
            emit(progress, "detect", i + 1, 200)
        time.sleep(0.3)
        return "done"

    *events, result = iter_progress(fast, min_interval=0.1)
    assert result == "done"
    assert 1 <= len(events) < 20 and events[-1].done == 200


def test_plugin_stream_returns_the_result():
    from napari_leuk._run import analysis_events

    def analyze(source, *, progress, cancel, settings=None):
        progress(ProgressEvent("detect", 1, 1))
        return {"source": source, "settings": settings}

    gen = analysis_events(analyze, "s.svs", cancel=CancelToken(), min_interval=0.0, settings="S")
    assert next(gen).stage == "detect"
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == {"source": "s.svs", "settings": "S"}
