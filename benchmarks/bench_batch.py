"""``leuk batch`` benchmark on dask.distributed: speed-up with workers, and a killed worker.

What it measures (JSON to ``benchmarks/results/bench_batch.json``, table on stdout):

``scaling``
    8 real-content slides (mosaics of real four-class + BCCD fields from ``$LEUK_DATA``,
    ``leukcore.sample.build_mosaic``, different fields each) analysed by
    :func:`leukcore.batch.run_batch` on a LocalCluster of 1 and of 2 worker processes
    (1 thread each): wall time (cluster start included) and speed-up.
``fault``
    The same 8 slides with 2 workers; as soon as the first slide finishes, the worker
    process busy with another slide is killed (SIGKILL).  Checks that all 8 slides
    still finish, none is missing and none is duplicated (one complete folder and one
    batch_summary row per slide), and records which slide was running on the killed worker.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_batch.py [--slides 8] [--grid 4]

The development machine has 2 CPU cores shared with other jobs: speed-up is bounded by that.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_batch.json"
WORK = Path(os.environ.get("LEUK_BENCH_WORK", "/tmp/leuk-bench-batch"))


def build_slides(n: int, grid: int) -> Path:
    from leukcore.paths import data_dir
    from leukcore.sample import MosaicOptions, build_mosaic

    d = data_dir()
    files = sorted((d / "all4class" / "Original").glob("*/*.jpg")) + sorted(
        (d / "bccd" / "BCCD" / "JPEGImages").glob("*.jpg")
    )
    if not files:
        raise SystemExit(f"{d}: no real fields found (set LEUK_DATA)")
    src = WORK / f"slides_{n}_{grid}"
    src.mkdir(parents=True, exist_ok=True)
    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(n):
        out = src / f"slide{i:02d}.ome.tif"
        if out.exists():
            continue
        pick = [str(files[j]) for j in rng.choice(len(files), grid * grid, replace=False)]
        build_mosaic(pick, out, grid=(grid, grid), mpp=0.25, shuffle=None, options=MosaicOptions(cell=470))
    return src


def scaling(src: Path, workers: int, model: str, detector: str = "wbc-stardist") -> dict:
    from leukcore.batch import BatchCluster, run_batch

    out = WORK / f"out_w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    res = run_batch(
        src, out, cluster=BatchCluster(workers=workers), detector=detector, classifier=model, device="cpu", threads=1
    )
    wall = time.perf_counter() - t
    return {
        "workers": workers,
        "wall_s": round(wall, 2),
        "n_done": res["n_done"],
        "n_error": res["n_error"],
        "cells": int(sum(int(r.get("cells") or 0) for r in res.rows)),
        "slide_seconds": [r.get("seconds") for r in res.rows],
    }


def fault(src: Path, model: str, detector: str = "wbc-stardist") -> dict:
    import pandas as pd

    from leukcore.batch import BatchCluster, run_batch
    from leukcore.export.summary import is_complete, read_summary

    out = WORK / "out_fault"
    shutil.rmtree(out, ignore_errors=True)
    state: dict = {}
    killed: dict = {}

    def on_submitted(client):
        state["client"] = client

    def progress(ev):
        if killed or ev.done < 1 or "client" not in state:
            return
        c = state["client"]
        busy = {a: ks for a, ks in c.processing().items() if ks}
        if not busy:
            return
        addr = sorted(busy)[0]
        pid = c.run(os.getpid, workers=[addr])[addr]
        os.kill(pid, signal.SIGKILL)
        killed.update(worker=addr, pid=pid, running=[str(k) for k in busy[addr]], after_done=ev.done, t=time.time())

    t = time.perf_counter()
    run_batch(
        src,
        out,
        cluster=BatchCluster(workers=2),
        detector=detector,
        classifier=model,
        device="cpu",
        progress=progress,
        on_submitted=on_submitted,
    )
    wall = time.perf_counter() - t
    df = pd.read_csv(out / "batch_summary.csv")
    slides = sorted(p.name for p in src.glob("*.ome.tif"))
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    complete = [f for f in folders if is_complete(out / f)]
    sources = [read_summary(out / f)["slide"]["path"] for f in complete]
    return {
        "wall_s": round(wall, 2),
        "killed": killed,
        "n_slides": len(slides),
        "n_rows": int(len(df)),
        "rows_unique": bool(df["slide"].is_unique),
        "n_complete_folders": len(complete),
        "n_folders": len(folders),
        "sources_unique": len(set(sources)) == len(sources),
        "statuses": df["status"].value_counts().to_dict(),
        "all_finished": bool(len(complete) == len(slides) and (df["status"] == "done").all()),
        "missing": sorted(set(s.replace(".ome.tif", "") for s in slides) - set(complete)),
        "duplicated": sorted(df["slide"][df["slide"].duplicated()].tolist()),
    }


def main(argv=None):
    global RESULTS
    ap = argparse.ArgumentParser()
    ap.add_argument("--slides", type=int, default=8)
    ap.add_argument("--grid", type=int, default=4, help="fields per side of each slide mosaic (470 px cells)")
    ap.add_argument("--model", default="all-binary")
    ap.add_argument("--detector", default="wbc-stardist")
    ap.add_argument("--results", default=None, help="JSON output path (default benchmarks/results/...)")
    ap.add_argument("--only", choices=["scaling", "fault"], action="append")
    args = ap.parse_args(argv)
    parts = args.only or ["scaling", "fault"]
    RESULTS = Path(args.results) if args.results else RESULTS
    src = build_slides(args.slides, args.grid)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "note": "shared 2-core dev machine, other jobs running; wall-clock numbers",
    }
    results["models"] = {"detector": args.detector, "classifier": args.model}
    results["slides"] = {"n": args.slides, "grid": args.grid, "side_px": args.grid * 470, "mpp": 0.25}
    if "scaling" in parts:
        r1 = scaling(src, 1, args.model, args.detector)
        r2 = scaling(src, 2, args.model, args.detector)
        results["scaling"] = {"w1": r1, "w2": r2, "speedup": round(r1["wall_s"] / r2["wall_s"], 3)}
        _save(results)
    if "fault" in parts:
        results["fault"] = fault(src, args.model, args.detector)
        _save(results)
    print(f"\n{'run':<12}{'wall s':>9}{'done':>6}{'err':>5}{'cells':>8}")
    for k in ("w1", "w2"):
        r = results.get("scaling", {}).get(k)
        if r:
            print(f"{k:<12}{r['wall_s']:>9.1f}{r['n_done']:>6}{r['n_error']:>5}{r['cells']:>8}")
    if "scaling" in results:
        print(f"speed-up 2 workers vs 1: {results['scaling']['speedup']:.2f}x")
    f = results.get("fault")
    if f:
        print(
            f"fault: killed pid {f['killed'].get('pid')} after {f['killed'].get('after_done')} done; "
            f"all finished={f['all_finished']} rows={f['n_rows']} unique={f['rows_unique']} "
            f"missing={f['missing']} duplicated={f['duplicated']} wall={f['wall_s']:.1f}s"
        )


def _save(results):
    from leukcore.results import atomic_path

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(RESULTS) as tmp:
        Path(tmp).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
