"""Whole-slide detection side by side with the ``stardist`` package, in one run, interleaved.

The project's side runs ``detect_cells`` as ``leuk detect`` does (open the slide, plan, read, network,
NMS; defaults: candidate blocks + sub-windows), each variant in a fresh process of the project's
environment.  The stardist side runs ``StarDist2D.predict_instances_big`` (TensorFlow) in a fresh process
of a SEPARATE environment (TensorFlow never enters the product's environment)::

    python3 -m venv runs/bench-venv-stardist
    runs/bench-venv-stardist/bin/pip install tensorflow-cpu stardist imagecodecs psutil

The stardist model is the ``2D_versatile_he`` architecture (32 rays, grid 2x2, U-Net depth 3, 32 filters,
128-channel conv after the U-Net) with random weights (the pretrained weights are a download, which this
machine cannot make); its probability map is replaced by a content-driven one (Gaussian-blurred nucleus
colour mask at the output grid) and its distances by a white-cell radius (14 px), so its NMS sees about as
many realistic candidates as a trained model's would; the network itself runs in full.  Its cells are
reported, but its recall is not a detection-quality number.  Process start-up and model loading are
excluded on both sides; the image read is included on both sides (stardist reads level 0, or the
level at ~0.5 um/px, into memory with tifffile, as a user of ``predict_instances_big`` would).

Slides (``bench_detect_slide.py``): smear-like 0.5 um/px slides of ``--size`` px square (real BCCD
red-cell carpet + real BCCD white cells) at normal density and x10 (leukaemic), and the dense
four-class + BCCD field mosaic (6,000 px at 0.25 um/px).

For every slide, thread count (``--threads``) and round (``--rounds``), the runs go in turn (project
variants, then stardist), so load drifts hit all sides alike; medians over rounds are reported.
Variants of the project's side (``--variants``) are the levers: ``torch`` (eager PyTorch, the
state before the ONNX backend), ``onnx`` (ONNX Runtime, the default on CPU), ``onnx-tight`` (+ per-cell
windows, ``windows="tight"``) and ``full`` (ONNX, no skipping: the project's full path, the reference for
relative recall).  Relative recall = share of
the full path's cells with a cell of the variant within 4 um.  Peak RSS = the child's ``ru_maxrss``.

``--network`` also measures the network alone on one 1024 px tile (eager torch, ONNX Runtime, stardist's
TF network) in MP/s and GFLOP/s next to a float32 matmul in the same processes.

Usage::

    .venv/bin/python benchmarks/bench_detect_vs_stardist.py --rounds 2 --threads 1 2 --network
    # -> benchmarks/results/bench_detect_vs_stardist.json

``--snapshot DIR`` runs the project's children from a copy of ``src/`` (other work may go on in the tree).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STARDIST_PY = ROOT / "runs" / "bench-venv-stardist" / "bin" / "python"
#: extra child arguments of a variant: ``onnx-tight-before`` is the default path before issue 17's arena
#: and thread levers (no ONNX Runtime arena, spinning threads)
VARIANT_ARGS = {
    "onnx-tight-before": ["--memory", "off", "--spin"],
    "onnx-before": ["--memory", "off", "--spin"],
    # today's default without windows run side by side (one run at a time on every core: the state before it)
    "onnx-tight-intra": ["--no-side-by-side"],
}
#: white-cell radius (level px at 0.5 um/px) used for the stardist side's distances
SD_RADIUS = 14.0


# --------------------------------------------------------------------------- children
def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def child_ours(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("slide")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--backend", default="onnx")
    ap.add_argument("--mode", default="fast", choices=["fast", "tight", "full", "tiles"])
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--cells-out", required=True)
    ap.add_argument("--memory", default=None, help="ONNX Runtime memory mode (onnx_backend.MEMORY_MODES)")
    ap.add_argument("--spin", action="store_true", help="let idle ONNX Runtime threads spin (the old setting)")
    ap.add_argument("--no-side-by-side", action="store_true", help="small windows one at a time on every core")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    from leukcore.detect import Detector, detect_cells
    from leukcore.detect import onnx_backend as ob
    from leukcore.io import open_slide

    if a.memory:
        ob.MEMORY = a.memory
    if a.spin:
        ob.SPIN = True
    if a.no_side_by_side:
        from leukcore.detect import predict

        predict.SIDE_BY_SIDE_PX = 0
    t0 = time.perf_counter()
    det = Detector.load("wbc-stardist", device="cpu", backend=a.backend, threads=a.threads)
    _import_detection_modules()
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with open_slide(a.slide) as s:
        H, W = s.shape
        t = detect_cells(
            s,
            det,
            tile_size=a.tile,
            skip_empty=a.mode != "full",
            windows={"fast": "exact", "tight": "tight"}.get(a.mode, False),
        )
    dt = time.perf_counter() - t0
    np.save(a.cells_out, t.df[["centroid_y", "centroid_x"]].to_numpy())
    print(
        json.dumps(
            {
                "seconds": round(dt, 2),
                "load_s": round(load_s, 2),
                "megapixels": round(H * W / 1e6, 2),
                "mp_per_s": round(H * W / 1e6 / dt, 3),
                "cells": len(t),
                "tiles_run": t.meta.get("tiles_run"),
                "n_tiles": t.meta.get("n_tiles"),
                "windows_run": t.meta.get("windows_run"),
                "network_mpx": round((t.meta.get("px_run") or 0) / 1e6, 2),
                "backend": det.backend,
                "threads": det.threads,
                "torch_threads": torch.get_num_threads(),
                "peak_rss_mb": _peak_rss_mb(),
            }
        )
    )


def _import_detection_modules():
    """Import what detection and slide reading import lazily (stardist's NMS, pandas, scikit-image, scipy, the
    tifffile / zarr / dask reader stack): process start-up, excluded as the stardist side's TensorFlow, stardist
    and tifffile imports are."""
    import dask.array  # noqa: F401
    import pandas  # noqa: F401
    import scipy.ndimage  # noqa: F401
    import scipy.spatial  # noqa: F401
    import skimage.color  # noqa: F401
    import skimage.measure  # noqa: F401
    import stardist.nms  # noqa: F401
    import tifffile  # noqa: F401
    import zarr  # noqa: F401

    import leukcore.detect.candidates  # noqa: F401
    import leukcore.detect.stain  # noqa: F401
    import leukcore.io.tiff  # noqa: F401
    import leukcore.results  # noqa: F401


def _content_prob(x: np.ndarray, grid: int = 2) -> np.ndarray:
    """Probability map at the output grid from nucleus colour: purple or blue-violet pixels, blurred."""
    from scipy.ndimage import gaussian_filter

    g = x[::grid, ::grid].astype(np.float32) * 255.0
    bmg = g[..., 2] - g[..., 1]
    m = (np.minimum(bmg, g[..., 0] - g[..., 1]) > 18) | (bmg > 40)
    return np.clip(gaussian_filter(m.astype(np.float32), 4.0 / grid * 2) * 1.1, 0, 1)


class _ContentModel:
    """Stands in for the Keras model: runs it, then swaps in the content-driven maps."""

    def __init__(self, km, grid):
        self.km, self.grid = km, grid

    def predict(self, x, **kw):
        ys = self.km.predict(x, **kw)
        prob, dist = np.asarray(ys[0]), np.asarray(ys[1])
        p = _content_prob(x[0], self.grid[0])[: prob.shape[1], : prob.shape[2]]
        prob = np.zeros_like(prob)
        prob[0, : p.shape[0], : p.shape[1], 0] = p
        return [prob, np.full_like(dist, SD_RADIUS)]


def _versatile_he_config(Config2D):
    """The ``2D_versatile_he`` architecture (32 rays, grid 2x2, U-Net depth 3, 32 filters), random weights."""
    return Config2D(
        n_rays=32,
        grid=(2, 2),
        n_channel_in=3,
        unet_n_depth=3,
        unet_n_filter_base=32,
        unet_kernel_size=(3, 3),
        net_conv_after_unet=128,
        unet_batch_norm=False,
    )


def child_stardist(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("slide")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--level", type=int, default=0)
    ap.add_argument("--block", type=int, default=4096)
    ap.add_argument("--cells-out", required=True)
    a = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)  # stardist's NMS (OpenMP)
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1 if a.threads == 1 else 2)
    import tifffile
    from csbdeep.data import Normalizer
    from stardist.models import Config2D, StarDist2D

    class Div255(Normalizer):
        def before(self, x, axes):
            return (x / np.float32(255)).astype(np.float32, copy=False)

        def after(self, *a, **k):
            raise NotImplementedError

        @property
        def do_after(self):
            return False

    t0 = time.perf_counter()
    conf = _versatile_he_config(Config2D)
    model = StarDist2D(conf, name=None, basedir=None)  # 2D_versatile_he architecture, random weights
    model.thresholds = {"prob": 0.5, "nms": 0.4}
    model._axes_tile_overlap("YXC")  # receptive field, with the real network
    model.keras_model = _ContentModel(model.keras_model, conf.grid)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    img = tifffile.imread(a.slide, level=a.level)
    block = min(a.block, min(img.shape[:2]) // 16 * 16)  # predict_instances_big: block <= image
    _, det = model.predict_instances_big(
        img,
        axes="YXC",
        block_size=block,
        min_overlap=128,
        context=128,
        labels_out=False,
        show_progress=False,
        normalizer=Div255(),
        n_tiles=(4, 4, 1),
        show_tile_progress=False,
    )
    dt = time.perf_counter() - t0
    pts = np.asarray(det["points"], float).reshape(-1, 2)
    with tifffile.TiffFile(a.slide) as tf_:
        H, W = tf_.series[0].levels[0].shape[:2]
        h, w = tf_.series[0].levels[a.level].shape[:2]
    pts = (pts + 0.5) * (H / h) - 0.5  # -> level-0 px
    np.save(a.cells_out, pts)
    print(
        json.dumps(
            {
                "seconds": round(dt, 2),
                "load_s": round(load_s, 2),
                "megapixels": round(H * W / 1e6, 2),
                "mp_per_s": round(H * W / 1e6 / dt, 3),
                "cells": int(len(pts)),
                "level": a.level,
                "tf": tf.__version__,
                "peak_rss_mb": _peak_rss_mb(),
            }
        )
    )


def child_network(argv):
    """Network alone on one 1024 px tile + a float32 matmul, in this process (project or stardist env)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", choices=["ours", "stardist"], required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args(argv)
    n = a.threads
    out = {"threads": n}
    tile = 1024
    rng = np.random.default_rng(0)
    x = (0.4 + 0.6 * rng.random((1, tile, tile, 3))).astype(np.float32)

    def best(f, reps=a.reps):
        f()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts))

    if a.side == "ours":
        import torch

        torch.set_num_threads(n)
        A = torch.randn(2048, 2048)
        B = torch.randn(2048, 2048)
        s = best(lambda: A @ B, reps=5)
        out["matmul_gflops"] = round(2 * 2048**3 / s / 1e9, 1)
        from leukcore.detect import Detector

        det_t = Detector.load("wbc-stardist", device="cpu", backend="torch", threads=n)
        det_o = Detector.load("wbc-stardist", device="cpu", backend="onnx", threads=n)
        flops = _conv_flops(det_t.net, tile)
        out["gflop_per_mp"] = round(flops / 1e9 / (tile * tile / 1e6), 1)
        # onnx-logits: what detection runs (the distance softplus left to the NMS candidates, issue 17)
        runs = (("torch", det_t.predict_maps), ("onnx", det_o.predict_maps), ("onnx-logits", det_o.predict_maps_raw))
        for name, f in runs:
            s = best(lambda f=f: f(x))
            out[name] = {
                "s": round(s, 3),
                "mp_per_s": round(tile * tile / 1e6 / s, 3),
                "gflops": round(flops / s / 1e9, 1),
                "share_of_matmul": round(flops / s / 1e9 / out["matmul_gflops"], 3),
            }
    else:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1 if n == 1 else 2)
        A = tf.random.normal((2048, 2048))
        B = tf.random.normal((2048, 2048))
        s = best(lambda: tf.linalg.matmul(A, B).numpy(), reps=5)
        out["matmul_gflops"] = round(2 * 2048**3 / s / 1e9, 1)
        from stardist.models import Config2D, StarDist2D

        conf = _versatile_he_config(Config2D)
        km = StarDist2D(conf, name=None, basedir=None).keras_model
        flops = _keras_conv_flops(km, tile)
        out["gflop_per_mp"] = round(flops / 1e9 / (tile * tile / 1e6), 1)
        s = best(lambda: km.predict(x, verbose=0))
        out["tf"] = {
            "s": round(s, 3),
            "mp_per_s": round(tile * tile / 1e6 / s, 3),
            "gflops": round(flops / s / 1e9, 1),
            "share_of_matmul": round(flops / s / 1e9 / out["matmul_gflops"], 3),
        }
    print(json.dumps(out))


def _conv_flops(net, size: int) -> float:
    """Multiply-adds x 2 of every conv / transposed conv of a torch net on a size x size input."""
    import torch

    total = [0.0]

    def hook(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        if isinstance(m, torch.nn.ConvTranspose2d):
            total[0] += 2.0 * inp[0].numel() / inp[0].shape[0] * m.out_channels * k / m.groups
        else:
            total[0] += 2.0 * out.numel() / out.shape[0] * m.in_channels * k / m.groups

    hs = [
        m.register_forward_hook(hook)
        for m in net.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
    ]
    with torch.inference_mode():
        net(torch.zeros(1, 3, size, size))
    for h in hs:
        h.remove()
    return total[0]


def _keras_conv_flops(km, size: int) -> float:
    import tensorflow as tf

    total = 0.0
    probe = tf.keras.Model(km.inputs, [l.output for l in km.layers if isinstance(l, tf.keras.layers.Conv2D)])
    outs = probe.predict(np.zeros((1, size, size, 3), np.float32), verbose=0)
    convs = [l for l in km.layers if isinstance(l, tf.keras.layers.Conv2D)]
    for l, o in zip(convs, outs, strict=False):
        kh, kw, cin, cout = l.kernel.shape
        total += 2.0 * o.shape[1] * o.shape[2] * cout * kh * kw * cin
    return total


# --------------------------------------------------------------------------- driver
def _run(cmd, env=None) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))}...: {p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _match(a, b, tol):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_detect_slide import match

    return match(a, b, tol)[0]


def _load_avg():
    return [round(v, 2) for v in os.getloadavg()]


def _trainers() -> list:
    try:
        out = subprocess.run(["pgrep", "-af", "leuk train|mpp_train"], capture_output=True, text=True).stdout
    except OSError:
        return []
    return [line for line in out.splitlines() if "pgrep" not in line]


def table(path) -> str:
    """Markdown table of a result JSON (``python bench_detect_vs_stardist.py --table FILE``)."""
    d = json.loads(Path(path).read_text())
    names = {
        "torch": "torch (before)",
        "onnx": "ONNX",
        "onnx-tight": "ONNX + tight windows (today's default)",
        "onnx-tight-before": "ONNX + tight windows, no arena, spinning (before issue 17's levers)",
        "onnx-before": "ONNX, no arena, spinning",
        "onnx-tight-intra": "ONNX + tight windows, one window at a time on every core (before side by side)",
        "full": "full path (ONNX)",
        "stardist": "stardist package",
    }
    rows = [
        "| slide | threads | variant | MP/s median (best) | rounds | vs stardist median (best) | vs torch median (best) "
        "| cells | relative recall vs full | recall vs placed | network MP | peak RSS MB |",
        "|" + "---|" * 12,
    ]
    for key, row in d["summary"].items():
        slide, th = key.rsplit("_", 1)
        for v, r in row.items():
            best = f" ({r['mp_per_s_best']:.3f})" if "mp_per_s_best" in r else ""
            vs_sd = (
                f"{r['ratio_vs_stardist']} ({r.get('ratio_vs_stardist_best', '')})" if "ratio_vs_stardist" in r else ""
            )
            vs_t = f"{r['speedup_vs_torch']} ({r.get('speedup_vs_torch_best', '')})" if "speedup_vs_torch" in r else ""
            rows.append(
                f"| {slide} | {th[:-1]} | {names.get(v, v)} | {r['mp_per_s_median']:.3f}{best} | {r['rounds']} | "
                f"{vs_sd} | {vs_t} | {r['cells']} | "
                f"{r.get('relative_recall_vs_full', '')} | {r.get('recall_vs_placed', '')} | "
                f"{r.get('network_mpx') if r.get('network_mpx') is not None else ''} | {r['peak_rss_mb_max']:.0f} |"
            )
    return "\n".join(rows)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("_ours", "_stardist", "_network"):
        return {"_ours": child_ours, "_stardist": child_stardist, "_network": child_network}[argv[0]](argv[1:])
    if argv and argv[0] == "--table":
        print(table(argv[1] if len(argv) > 1 else RESULTS / "bench_detect_vs_stardist.json"))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8000, help="smear slides: edge in px (0.5 um/px)")
    ap.add_argument(
        "--slides", nargs="+", default=["normal", "leukaemic", "mosaic"], choices=["normal", "leukaemic", "mosaic"]
    )
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["torch", "onnx", "onnx-tight"],
        help="project-side variants: torch (exact windows), onnx (exact windows), onnx-tight "
        "(windows='tight'), onnx-tiles (tile skipping only)",
    )
    ap.add_argument("--no-full", action="store_true", help="skip the full-path reference (no relative recall)")
    ap.add_argument("--no-stardist", action="store_true")
    ap.add_argument("--stardist-python", default=str(STARDIST_PY))
    ap.add_argument("--network", action="store_true", help="also the network alone on a 1024 px tile")
    ap.add_argument("--snapshot", default=None, help="copy src/ here and run the project's children from it")
    ap.add_argument("--out", default="bench_detect_vs_stardist.json")
    ap.add_argument("--resummarize", action="store_true", help="recompute the summary of --out from its runs")
    ap.add_argument(
        "--from-log",
        default=None,
        help="rebuild the JSON from a driver log (stderr) of an interrupted run and its cell files",
    )
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_detect_slide as bds

    env = dict(os.environ)
    if a.snapshot:
        snap = Path(a.snapshot)
        if snap.exists():
            shutil.rmtree(snap)
        shutil.copytree(ROOT / "src", snap / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        env["PYTHONPATH"] = str(snap / "src") + os.pathsep + env.get("PYTHONPATH", "")
        shutil.copytree(
            ROOT / "benchmarks", snap / "benchmarks", ignore=shutil.ignore_patterns("results", "__pycache__")
        )
    script = str(Path(a.snapshot) / "benchmarks" / Path(__file__).name) if a.snapshot else __file__
    sd_ok = not a.no_stardist and Path(a.stardist_python).exists()
    slides = {}
    for s in a.slides:
        if s == "mosaic":
            slides[s] = {"path": bds.mosaic(6000), "level_sd": 1, "mpp": 0.25}
        else:
            p = bds.smear(a.size, factor=1 if s == "normal" else bds.ALL_FACTOR)
            sm = json.loads(Path(str(p) + ".smear.json").read_text())
            slides[s] = {
                "path": p,
                "level_sd": 0,
                "mpp": 0.5,
                "placed": np.asarray(sm["wbc_centres"], float),
                "density_wbc_per_mm2": sm["density_wbc_per_mm2"],
                "n_wbc": sm["n_wbc"],
            }
    work = bds.WORK / "vs_stardist"
    work.mkdir(parents=True, exist_ok=True)
    me = [sys.executable, script]

    def write(network):
        # ---- summary
        summary = {}
        for sname, s in slides.items():
            tol = 4.0 / s["mpp"]
            full = [x for x in runs if x["slide"] == sname and x["side"] == "full"]
            full_c = np.load(full[0]["cells_file"]) if full else None
            for n in a.threads:
                row = {}
                for side in [*a.variants, "stardist", "full"]:
                    rs = [x for x in runs if x["slide"] == sname and x["side"] == side and x["threads"] == n]
                    if not rs:
                        continue
                    c = np.load(rs[0]["cells_file"])
                    d = {
                        "mp_per_s_median": round(float(np.median([x["mp_per_s"] for x in rs])), 3),
                        "mp_per_s_best": round(float(max(x["mp_per_s"] for x in rs)), 3),
                        "seconds_median": round(float(np.median([x["seconds"] for x in rs])), 2),
                        "rounds": len(rs),
                        "cells": int(len(c)),
                        "peak_rss_mb_max": max(x["peak_rss_mb"] for x in rs),
                        "network_mpx": rs[0].get("network_mpx"),
                    }
                    if full_c is not None and side != "stardist":
                        d["relative_recall_vs_full"] = round(_match(full_c, c, tol) / max(len(full_c), 1), 4)
                    if "placed" in s:
                        d["recall_vs_placed"] = round(
                            _match(s["placed"], c, 6.0 / s["mpp"]) / max(len(s["placed"]), 1), 4
                        )
                    row[side] = d
                if "stardist" in row:
                    for v in a.variants:
                        if v in row:
                            row[v]["ratio_vs_stardist"] = round(
                                row[v]["mp_per_s_median"] / row["stardist"]["mp_per_s_median"], 2
                            )
                            row[v]["ratio_vs_stardist_best"] = round(
                                row[v]["mp_per_s_best"] / row["stardist"]["mp_per_s_best"], 2
                            )
                if "torch" in row:
                    for v in a.variants:
                        if v in row and v != "torch":
                            row[v]["speedup_vs_torch"] = round(
                                row[v]["mp_per_s_median"] / row["torch"]["mp_per_s_median"], 2
                            )
                            row[v]["speedup_vs_torch_best"] = round(
                                row[v]["mp_per_s_best"] / row["torch"]["mp_per_s_best"], 2
                            )
                summary[f"{sname}_{n}t"] = row
        from leukcore.models.registry import load_card

        card = load_card("wbc-stardist")
        out = {
            "summary": summary,
            "network_1024_tile": network,
            "runs": runs,
            "slides": {
                k: {kk: (str(vv) if kk == "path" else vv) for kk, vv in v.items() if kk != "placed"}
                for k, v in slides.items()
            },
            "stardist_side": (
                "predict_instances_big(block_size=4096, min_overlap=128, context=128, n_tiles=(4,4,1), "
                "labels_out=False); 2D_versatile_he architecture, random weights; probability "
                f"replaced by a content-driven map, distances by {SD_RADIUS} px"
                if sd_ok
                else "not run (no stardist environment)"
            ),
            "detector": {
                "name": card.get("name"),
                "version": card.get("version"),
                "weights_sha256": card.get("weights", {}).get("sha256"),
            },
            "machine": {
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
                "affinity": len(os.sched_getaffinity(0)),
                "load_avg_end": _load_avg(),
                "trainers_running_at_end": len(_trainers()),
            },
            "wall_s": round(time.time() - t_start, 1),
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / a.out).write_text(json.dumps(out, indent=2))
        return summary

    runs = []  # one row per child run
    t_start = time.time()
    if a.resummarize:
        runs.extend(json.loads((RESULTS / a.out).read_text())["runs"])
        a.rounds = max([x["round"] for x in runs], default=-1) + 1
        network = json.loads((RESULTS / a.out).read_text()).get("network_1024_tile", {})
        write(network)
        return
    if a.from_log:
        import re

        pat = re.compile(
            r"\[\s*(\d+) s\] (\S+)\s+(\S+)\s+(\d+)t r(\d+):\s+([\d.]+) s\s+([\d.]+) MP/s\s+(\d+) cells "
            r"RSS (\d+) MB load ([\d.]+)"
        )
        for line in Path(a.from_log).read_text().splitlines():
            m = pat.search(line)
            if not m:
                continue
            _, sname, side, n, r, sec, mps, cells, rss, la = m.groups()
            runs.append(
                {
                    "slide": sname,
                    "side": side,
                    "threads": int(n),
                    "round": int(r),
                    "seconds": float(sec),
                    "mp_per_s": float(mps),
                    "cells": int(cells),
                    "peak_rss_mb": float(rss),
                    "load_avg_before": [float(la)],
                    "cells_file": str(work / f"{sname}_{side}_{n}t_r{r}.npy"),
                }
            )
        a.rounds = max([x["round"] for x in runs], default=-1) + 1
        write({})
        print(json.dumps({k: v for k, v in json.loads((RESULTS / a.out).read_text())["summary"].items()}, indent=1))
        return
    network = {}
    if a.network:
        for n in a.threads:
            network[f"{n}t"] = {"ours": _run(me + ["_network", "--side", "ours", "--threads", str(n)], env=env)}
            if sd_ok:
                network[f"{n}t"]["stardist"] = _run(
                    [a.stardist_python, script, "_network", "--side", "stardist", "--threads", str(n)]
                )
            print(f"network {n}t: {json.dumps(network[f'{n}t'])}", file=sys.stderr, flush=True)
    for r in range(a.rounds):
        for sname, s in slides.items():
            for n in a.threads:
                jobs = [
                    (
                        v,
                        me
                        + [
                            "_ours",
                            str(s["path"]),
                            "--threads",
                            str(n),
                            "--backend",
                            "torch" if v == "torch" else "onnx",
                            "--mode",
                            {"onnx-tiles": "tiles"}.get(v, "tight" if "tight" in v else "fast"),
                        ]
                        + VARIANT_ARGS.get(v, []),
                        env,
                    )
                    for v in a.variants
                ]
                if not a.no_full and r == 0 and n == max(a.threads):
                    jobs.append(("full", me + ["_ours", str(s["path"]), "--threads", str(n), "--mode", "full"], env))
                if sd_ok:
                    jobs.append(
                        (
                            "stardist",
                            [
                                a.stardist_python,
                                script,
                                "_stardist",
                                str(s["path"]),
                                "--threads",
                                str(n),
                                "--level",
                                str(s["level_sd"]),
                            ],
                            None,
                        )
                    )
                for side, cmd, e in jobs:
                    f = work / f"{sname}_{side}_{n}t_r{r}.npy"
                    la0 = _load_avg()
                    res = _run(cmd + ["--cells-out", str(f)], env=e)
                    res.update(
                        {
                            "slide": sname,
                            "side": side,
                            "threads": n,
                            "round": r,
                            "cells_file": str(f),
                            "load_avg_before": la0,
                            "load_avg_after": _load_avg(),
                            "other_trainers": len(_trainers()),
                        }
                    )
                    runs.append(res)
                    print(
                        f"[{time.time() - t_start:6.0f} s] {sname:9s} {side:9s} {n}t r{r}: {res['seconds']:7.1f} s "
                        f"{res['mp_per_s']:6.3f} MP/s {res['cells']:5d} cells RSS {res['peak_rss_mb']:.0f} MB "
                        f"load {la0[0]}",
                        file=sys.stderr,
                        flush=True,
                    )
        write(network)  # partial results after every round
    summary = write(network)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
