"""The napari cell gallery on a large result: time to open, time per page, one-key edit, memory.

A synthetic results folder of ``--cells`` classified cells (four classes, random confidences, review
threshold 0.6) over the bundled sample slide (``leukcore.sample.sample_slide_path()``), opened through the
plugin's reader into a shown viewer; then the gallery dock (:class:`napari_leuk._gallery.GalleryWidget`):

* ``open_s``: reader (table + corrections) + adding the layers + the gallery with its first page drawn,
  and ``gallery_s`` the gallery alone (groups, tabs, first page of thumbnails);
* ``page_s``: the next page (``PAGE_SIZE`` thumbnails read from the slide, drawn), over ``--pages`` pages
  of the largest tab, and ``tab_s`` switching tabs;
* ``edit_s``: one key (reclassify 2 selected cells: corrections.parquet rewritten, features, colours,
  counts, tabs and page redrawn) and ``undo_s``;
* ``rss_mb`` after all this (and ``rss_before_mb`` before opening).

Run on a (virtual) display::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/bench_gallery.py

Writes ``benchmarks/results/bench_gallery.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def write_results(out: Path, n: int, seed: int = 0) -> Path:
    """A results folder of ``n`` synthetic cells spread over the sample slide."""
    from leukcore.io import open_slide
    from leukcore.results import CellTable
    from leukcore.sample import sample_slide_path

    slide_path = sample_slide_path()
    with open_slide(slide_path) as s:
        H, W = s.shape[:2]
        mpp = s.mpp
    rng = np.random.default_rng(seed)
    cy = rng.uniform(20, H - 20, n)
    cx = rng.uniform(20, W - 20, n)
    r = rng.uniform(12, 22, n)
    t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    polys = [
        np.stack([y + rr * np.sin(t), x + rr * np.cos(t)], 1).astype(np.float32)
        for y, x, rr in zip(cy, cx, r, strict=False)
    ]
    tab = CellTable.from_detections(
        np.stack([cy, cx], 1),
        polys,
        rng.uniform(0.5, 1, n),
        mpp=mpp,
        meta={"shape": [H, W], "slide": Path(slide_path).name},
    )
    tab.set_classification(rng.dirichlet(np.full(4, 0.5), n), ["Benign", "Early", "Pre", "Pro"], review_threshold=0.6)
    out.mkdir(parents=True, exist_ok=True)
    tab.to_parquet(out / "cells.parquet")
    (out / "summary.json").write_text(
        json.dumps(
            {
                "slide": {"path": str(slide_path), "name": Path(slide_path).name},
                "mpp": {"value": mpp},
                "classes": tab.classes,
            }
        )
    )
    return out


def _settle():
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    QApplication.processEvents()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=20000)
    ap.add_argument("--pages", type=int, default=20)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_gallery.json"))
    a = ap.parse_args(argv)

    from napari.layers import Layer

    import napari
    from leukcore import __version__
    from leukcore.results import atomic_path
    from napari_leuk import _gallery as G
    from napari_leuk._reader import read_results

    res = {
        "cells": a.cells,
        "page_size": G.PAGE_SIZE,
        "thumb_px": G.THUMB_PX,
        "leukcore": __version__,
        "napari": napari.__version__,
        "cpus": len(os.sched_getaffinity(0)),
        "machine": platform.machine(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_results(Path(tmp) / "results", a.cells)
        viewer = napari.Viewer(show=True)
        _settle()
        res["rss_before_mb"] = round(_rss_mb(), 1)
        t0 = time.perf_counter()
        layers = [viewer.add_layer(Layer.create(d, kw, lt)) for d, kw, lt in read_results(str(folder))]
        _settle()
        t1 = time.perf_counter()
        g = G.GalleryWidget(viewer, layer=layers[-1])
        viewer.window.add_dock_widget(g, name="cell gallery")
        _settle()
        t2 = time.perf_counter()
        res["layer_kind"] = layers[-1].metadata.get("leuk_kind")
        res["reader_and_layers_s"] = round(t1 - t0, 3)
        res["gallery_s"] = round(t2 - t1, 3)
        res["open_s"] = round(t2 - t0, 3)
        res["tabs"] = g.tab_counts()
        big = max(res["tabs"], key=res["tabs"].get)
        g.select_tab(big)
        _settle()
        times = []
        for _ in range(min(a.pages, g.n_pages() - 1)):
            t = time.perf_counter()
            g.show_page(g.page + 1)
            _settle()
            times.append(time.perf_counter() - t)
        res["page_s"] = {
            "median": round(float(np.median(times)), 4),
            "max": round(float(np.max(times)), 4),
            "n": len(times),
        }
        t = time.perf_counter()
        g.show_page(0)  # cached page
        _settle()
        res["page_cached_s"] = round(time.perf_counter() - t, 4)
        tt = []
        for name in g.tab_names:
            t = time.perf_counter()
            g.select_tab(name)
            _settle()
            tt.append(time.perf_counter() - t)
        res["tab_s"] = {"median": round(float(np.median(tt)), 4), "max": round(float(np.max(tt)), 4)}
        g.select_tab(big)
        g.show_page(0)
        g.list.item(0).setSelected(True)
        g.list.item(1).setSelected(True)
        other = "1" if big != g.review.classes[0] else "2"
        t = time.perf_counter()
        g.key(other)
        _settle()
        res["edit_s"] = round(time.perf_counter() - t, 4)
        t = time.perf_counter()
        g.key("Control-Z")
        _settle()
        res["undo_s"] = round(time.perf_counter() - t, 4)
        res["rss_mb"] = round(_rss_mb(), 1)
        viewer.close()
    res["targets"] = {"open_s": 3.0, "page_s": 0.3}
    print(json.dumps(res, indent=1))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
