"""Which napari layer shows N classified cells fastest: Shapes (polygons), Points or Labels?

Times, on a synthetic slide of ``--size`` px with ``--cells`` cells (32-vertex polygons):
adding the layer and drawing it once, recolouring one cell after a class edit,
recolouring all cells, and the "low-confidence only" toggle.

Run on a (virtual) display::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/bench_napari_layers.py

Writes ``benchmarks/results/bench_napari_layers.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np


def synthetic_table(n: int, size: int, seed: int = 0):
    from leukcore.results import CellTable

    rng = np.random.default_rng(seed)
    cy = rng.uniform(50, size - 50, n)
    cx = rng.uniform(50, size - 50, n)
    r = rng.uniform(12, 22, n)
    t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    polys = [
        np.stack([y + rr * np.sin(t), x + rr * np.cos(t)], 1).astype(np.float32)
        for y, x, rr in zip(cy, cx, r, strict=False)
    ]
    tab = CellTable.from_detections(
        np.stack([cy, cx], 1), polys, rng.uniform(0.5, 1, n), mpp=0.5, meta={"shape": [size, size]}
    )
    p = rng.dirichlet(np.ones(4), n)
    tab.set_classification(p, ["Benign", "Early", "Pre", "Pro"])
    return tab


def _settle(viewer):
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    viewer.window._qt_viewer.canvas.native.repaint() if hasattr(viewer.window, "_qt_viewer") else None
    QApplication.processEvents()


def bench_kind(viewer, table, kind: str, repeat: int = 1) -> dict:
    from napari.layers import Layer

    from napari_leuk._layers import cells_layer_data, recolor, set_cell_class, show_only_low_confidence

    out = {}
    t0 = time.perf_counter()
    data, kw, ltype = cells_layer_data(table, kind)
    out["build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    layer = viewer.add_layer(Layer.create(data, kw, ltype))
    _settle(viewer)
    out["add_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    set_cell_class(layer, [len(table) // 2], "Pro")
    _settle(viewer)
    out["edit_one_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    recolor(layer)
    _settle(viewer)
    out["recolor_all_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    show_only_low_confidence(layer, True)
    _settle(viewer)
    out["low_conf_toggle_s"] = time.perf_counter() - t0
    viewer.layers.remove(layer)
    _settle(viewer)
    return {k: round(v, 3) for k, v in out.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--kinds", nargs="+", default=["points", "labels", "shapes"])
    ap.add_argument(
        "--shapes-max",
        type=int,
        default=2000,
        help="skip the Shapes layer above this many cells (about 10 ms per polygon)",
    )
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_napari_layers.json"))
    args = ap.parse_args(argv)

    import napari
    from leukcore.results import atomic_path

    viewer = napari.Viewer(show=True)
    # warm-up: the first layer of a session pays for shader compilation
    bench_kind(viewer, synthetic_table(50, 2000, seed=1), "points")
    bench_kind(viewer, synthetic_table(50, 2000, seed=1), "labels")
    bench_kind(viewer, synthetic_table(50, 2000, seed=1), "shapes")  # numba triangulation JIT
    rows = []
    for n in args.cells:
        table = synthetic_table(n, args.size)
        for kind in args.kinds:
            if kind == "shapes" and n > args.shapes_max:
                continue
            r = bench_kind(viewer, table, kind)
            r.update(kind=kind, cells=n, slide_px=args.size)
            rows.append(r)
            print(json.dumps(r), flush=True)
    viewer.close()
    res = {
        "benchmark": "napari cells layer",
        "napari": napari.__version__,
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "rows": rows,
    }
    with atomic_path(args.out) as tmp:
        Path(tmp).write_text(json.dumps(res, indent=2))
    hdr = f"{'kind':8s} {'cells':>7s} {'add+draw s':>10s} {'edit 1 s':>9s} {'recolor s':>9s} {'low-conf s':>10s}"
    print(hdr)
    for r in rows:
        print(
            f"{r['kind']:8s} {r['cells']:7d} {r['add_s']:10.2f} {r['edit_one_s']:9.3f} "
            f"{r['recolor_all_s']:9.3f} {r['low_conf_toggle_s']:10.3f}"
        )


if __name__ == "__main__":
    main()
