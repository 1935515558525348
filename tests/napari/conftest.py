"""Fixtures for the napari plugin tests (run on a virtual display through pytest-xvfb).

``fake_analyze`` obeys the contract of :func:`leukcore.pipeline.analyze_slide`
(progress events per tile, cancel checked between tiles, partial result) with
synthetic cells, so the GUI wiring is tested fast; one slow test runs the real
pipeline on the bundled sample slide.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

_HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(config, items):
    """Every test of this folder is a ``napari`` test (the fast lane ``-m "not slow and not napari"`` skips them)."""
    for item in items:
        if str(item.fspath).startswith(_HERE + os.sep):
            item.add_marker(pytest.mark.napari)


def make_table(n=12, size=2000, classes=("ALL", "normal"), mpp=0.5, seed=0, conf=None):
    from leukcore.results import CellTable

    rng = np.random.default_rng(seed)
    cy = np.linspace(100, size - 100, n)
    cx = rng.uniform(100, size - 100, n)
    t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    polys = [
        np.stack([y + 20 * np.sin(t), x + 20 * np.cos(t)], 1).astype(np.float32) for y, x in zip(cy, cx, strict=False)
    ]
    tab = CellTable.from_detections(
        np.stack([cy, cx], 1), polys, np.full(n, 0.9), mpp=mpp, meta={"shape": [size, size]}
    )
    k = len(classes)
    p = np.full((n, k), 0.05 / max(k - 1, 1), np.float32)
    p[np.arange(n), np.arange(n) % k] = 0.95
    if conf is not None:  # make some cells low-confidence
        for i in conf:
            p[i] = 1.0 / k
    tab.set_classification(p, list(classes), review_threshold=0.6)
    return tab


class FakeAnalyze:
    """Contract-shaped stand-in for analyze_slide: ``n_tiles`` tiles, ``per_tile`` cells each."""

    def __init__(self, n_tiles=4, per_tile=3, delay=0.0, error=None, classes=("ALL", "normal"), caveats=()):
        self.n_tiles, self.per_tile, self.delay, self.error, self.classes = n_tiles, per_tile, delay, error, classes
        self.caveats = list(caveats)
        self.calls = []

    def __call__(
        self,
        source,
        detector="wbc-stardist",
        classifier="all-binary",
        *,
        settings=None,
        device="auto",
        mpp=None,
        region=None,
        progress=None,
        cancel=None,
        **kw,
    ):
        from leukcore.pipeline import AnalysisResult
        from leukcore.progress import emit, is_cancelled

        if settings is not None:  # the widget passes one AnalysisSettings
            classifier, device = settings.classifier, settings.device
            mpp, region = settings.mpp, settings.region

        self.calls.append(dict(source=source, classifier=classifier, device=device, region=region, mpp=mpp))
        if self.error is not None:
            raise self.error
        done = 0
        for _ in range(self.n_tiles):
            if is_cancelled(cancel):
                break
            time.sleep(self.delay)
            done += 1
            emit(progress, "detect", done, self.n_tiles, cells=done * self.per_tile)
        partial = done < self.n_tiles
        n = done * self.per_tile
        tab = make_table(n, classes=self.classes) if n else make_table(0, classes=self.classes)
        tab.meta["partial"] = partial
        return AnalysisResult(tab, {**tab.summary(), "partial": partial, "caveats": self.caveats})


@pytest.fixture
def notes(monkeypatch):
    """Capture napari notifications: {"error": [...], "warning": [...], "info": [...]}."""
    import napari.utils.notifications as N

    got = {"error": [], "warning": [], "info": []}
    monkeypatch.setattr(N, "show_error", lambda m: got["error"].append(str(m)))
    monkeypatch.setattr(N, "show_warning", lambda m: got["warning"].append(str(m)))
    monkeypatch.setattr(N, "show_info", lambda m: got["info"].append(str(m)))
    return got


@pytest.fixture
def viewer_widget(make_napari_viewer, qtbot):
    """A shown viewer with a 2000x2000 RGB multiscale slide layer and the docked widget."""
    import dask.array as da

    from leukcore.io import Slide
    from napari_leuk._reader import slide_layer_data
    from napari_leuk._widget import LeukWidget

    viewer = make_napari_viewer(show=True)
    img = np.full((2000, 2000, 3), 230, np.uint8)
    slide = Slide.from_array(da.from_array(img, chunks=(512, 512, 3)), mpp=0.5, path="synthetic")
    data, kw, _ = slide_layer_data(slide, name="slide")
    kw["metadata"]["leuk_slide_path"] = None
    viewer.add_image(data, **kw)
    w = LeukWidget(viewer)
    viewer.window.add_dock_widget(w, name="leuk")
    return viewer, w


@pytest.fixture
def data_dir():
    from pathlib import Path

    d = Path(os.environ.get("LEUK_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
    if not d.is_dir():
        pytest.skip(f"real data not found at {d} (set LEUK_DATA)")
    return d


@pytest.fixture
def table_factory():
    """``make_table(n, size, classes, mpp, seed, conf)`` -> classified synthetic CellTable."""
    return make_table


@pytest.fixture
def fake_analyze_cls():
    return FakeAnalyze
