"""Issue 15 wiring: the settings' thread count reaches the detector; one list of slide suffixes."""

from __future__ import annotations

import numpy as np
import pytest


class _Stop(Exception):
    pass


def _recording_detector_load(monkeypatch) -> list:
    from leukcore.detect.model import Detector

    calls: list = []

    def load(cls, name_or_card, device="auto", backend="auto", threads=None):
        calls.append({"device": device, "backend": backend, "threads": threads})
        raise _Stop

    monkeypatch.setattr(Detector, "load", classmethod(load))
    return calls


@pytest.mark.parametrize("threads", [3, None])
def test_analysis_settings_threads_reach_detector_load(monkeypatch, threads):
    from leukcore.io import Slide
    from leukcore.loader import clear_model_cache
    from leukcore.pipeline import analyze_slide
    from leukcore.settings import AnalysisSettings

    calls = _recording_detector_load(monkeypatch)
    clear_model_cache()
    card = {"name": "fake-detector", "task": "detection"}  # no weights sha256: never cached
    slide = Slide.from_array(np.full((64, 64, 3), 240, np.uint8), mpp=0.5)
    settings = AnalysisSettings(detector=card, classifier=None, device="cpu", threads=threads)
    with pytest.raises(_Stop):
        analyze_slide(slide, settings=settings)
    assert calls == [{"device": "cpu", "backend": "auto", "threads": threads}]


def test_plugin_reads_the_core_slide_suffixes():
    from leukcore.io.find import SLIDE_SUFFIXES
    from napari_leuk import _reader

    assert _reader.SLIDE_SUFFIXES is SLIDE_SUFFIXES
