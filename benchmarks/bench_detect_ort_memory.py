"""ONNX Runtime's CPU memory for the detector: speed, CPU time and peak RSS of whole-slide detection per mode.

Each run is a fresh process (``detect_cells`` on one slide, model loading excluded) with
``leukcore.detect.onnx_backend.MEMORY`` set to one of ``off`` / ``shrink`` / ``same`` / ``arena``
(see that module); the modes go in turn within a round, so load drifts hit them alike; medians over rounds.
CPU seconds (user + system of the process) are reported next to wall seconds: on a shared machine a
process may get a fraction of a core, and CPU time is what the mode changes.

Usage::

    .venv/bin/python benchmarks/bench_detect_ort_memory.py --slide x10 --paths exact full --rounds 2
    # -> benchmarks/results/bench_detect_ort_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def child(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("slide")
    ap.add_argument("--memory", required=True)
    ap.add_argument("--path", choices=["tight", "exact", "full"], required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tile", type=int, default=1024)
    a = ap.parse_args(argv)
    import resource

    from leukcore.detect import (
        Detector,
        detect_cells,
        postprocess,  # noqa: F401  (NMS imports: start-up, not detection)
    )
    from leukcore.detect import onnx_backend as ob
    from leukcore.io import open_slide

    ob.MEMORY = a.memory
    det = Detector.load("wbc-stardist", device="cpu", backend="onnx", threads=a.threads)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    with open_slide(a.slide) as s:
        H, W = s.shape
        t = detect_cells(
            s,
            det,
            tile_size=a.tile,
            skip_empty=a.path != "full",
            windows={"tight": "tight", "exact": "exact"}.get(a.path, False),
        )
    dt = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "memory": a.memory,
                "path": a.path,
                "threads": a.threads,
                "seconds": round(dt, 2),
                "cpu_s": round(ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime, 2),
                "sys_s": round(ru.ru_stime - ru0.ru_stime, 2),
                "minor_faults_k": (ru.ru_minflt - ru0.ru_minflt) // 1000,
                "mp_per_s": round(H * W / 1e6 / dt, 3),
                "cells": len(t),
                "network_mpx": round(t.meta["px_run"] / 1e6, 2),
                "peak_rss_mb": round(ru.ru_maxrss / 1024),
            }
        )
    )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        return child(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", default="x10", help="normal | x10 (bench_detect_slide smear) or a path")
    ap.add_argument("--size", type=int, default=4000)
    ap.add_argument("--paths", nargs="+", default=["exact", "full"])
    ap.add_argument("--modes", nargs="+", default=["off", "shrink", "same"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", default="bench_detect_ort_memory.json")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_detect_slide as bds

    if a.slide in ("normal", "x10"):
        slide = bds.smear(a.size, factor=1 if a.slide == "normal" else bds.ALL_FACTOR)
    else:
        slide = Path(a.slide)
    runs = []
    for r in range(a.rounds):
        for p in a.paths:
            for m in a.modes:
                cmd = [
                    sys.executable,
                    __file__,
                    "_child",
                    str(slide),
                    "--memory",
                    m,
                    "--path",
                    p,
                    "--threads",
                    str(a.threads),
                ]
                la = os.getloadavg()[0]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode:
                    raise RuntimeError(out.stderr[-3000:])
                res = {**json.loads(out.stdout.strip().splitlines()[-1]), "round": r, "load_avg_before": round(la, 2)}
                runs.append(res)
                print(json.dumps(res), file=sys.stderr, flush=True)
    summary = {}
    for p in a.paths:
        for m in a.modes:
            rs = [x for x in runs if x["path"] == p and x["memory"] == m]
            summary[f"{p}/{m}"] = {
                k: float(np.median([x[k] for x in rs]))
                for k in ("seconds", "cpu_s", "sys_s", "minor_faults_k", "mp_per_s")
            }
            summary[f"{p}/{m}"].update(
                peak_rss_mb_max=max(x["peak_rss_mb"] for x in rs),
                cells=rs[0]["cells"],
                network_mpx=rs[0]["network_mpx"],
                rounds=len(rs),
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / a.out).write_text(
        json.dumps(
            {"slide": str(slide), "threads": a.threads, "summary": summary, "runs": runs, "cpu_count": os.cpu_count()},
            indent=2,
        )
    )
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
