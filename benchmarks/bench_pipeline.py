"""End-to-end pipeline benchmark: ``analyze_slide`` (detection + classification + all outputs).

What it measures (JSON to ``benchmarks/results/bench_pipeline.json``, table on stdout):

``sample``
    The bundled real-content sample slide (``leuk demo``'s slide): end-to-end seconds,
    cells, cells/s, stage times, and the pipeline efficiency = end-to-end pipeline time
    over the slower stage run *alone* (a second run with ``overlap=False`` times the
    detection and classification stages separately).
``mosaic``
    A >= 20k x 20k mosaic of real smear fields (four-class + BCCD from ``$LEUK_DATA``,
    ``leukcore.sample.build_mosaic``, 0.25 um/px), same numbers.
``rss``
    Peak resident memory (``ru_maxrss`` of a fresh process running ``analyze_slide`` with
    all outputs) on a 20k mosaic and on a 60k x 60k mosaic whose real fields are spread
    sparsely (mostly background, so detection skips most tiles — said in the JSON).

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_pipeline.py                # sample + 20k + rss
    nice -n 10 .venv/bin/python benchmarks/bench_pipeline.py --only sample
    nice -n 10 .venv/bin/python benchmarks/bench_pipeline.py --mosaic 20000 --rss 20000 60000

The development machine is shared (2 CPU cores, no GPU, other jobs running): the numbers
are wall-clock and indicative; ``device`` in the JSON says where they were taken.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_pipeline.json"
WORK = Path(os.environ.get("LEUK_BENCH_WORK", "/tmp/leuk-bench-pipeline"))


def mosaic_files() -> list[str]:
    from leukcore.paths import data_dir

    d = data_dir()
    files = sorted((d / "all4class" / "Original").glob("*/*.jpg")) + sorted(
        (d / "bccd" / "BCCD" / "JPEGImages").glob("*.jpg")
    )
    if not files:
        raise SystemExit(f"{d}: no real fields found (set LEUK_DATA)")
    return [str(f) for f in files]


def build(size: int, sparse: bool = False) -> Path:
    """An N x N mosaic of real fields at 0.25 um/px (cached in WORK)."""
    from leukcore.sample import MosaicOptions, build_mosaic

    WORK.mkdir(parents=True, exist_ok=True)
    out = WORK / (f"mosaic_{size}{'_sparse' if sparse else ''}.ome.tif")
    if out.exists() and Path(str(out) + ".layout.json").exists():
        return out
    files = mosaic_files()
    if sparse:
        # real fields every 6000 px (10 x 10 of them on 60k): mostly background
        cell = 6000
    else:
        cell = 470
    n = max(1, -(-size // cell))
    t = time.perf_counter()
    build_mosaic(files, out, grid=(n, n), mpp=0.25, shuffle=0, options=MosaicOptions(cell=cell))
    print(f"built {out.name} ({n}x{n} fields) in {time.perf_counter() - t:.0f} s", flush=True)
    return out


def run_one(
    path, out_dir, *, model="all-binary", detector="wbc-stardist", device="auto", overlap=True, write=True
) -> dict:
    import torch

    from leukcore.io import open_slide
    from leukcore.pipeline import analyze_slide

    torch.set_num_threads(int(os.environ.get("LEUK_THREADS", "2")))
    with open_slide(path) as s:
        shape = list(s.shape)
    t = time.perf_counter()
    res = analyze_slide(
        path, detector=detector, classifier=model, device=device, overlap=overlap, out_dir=out_dir if write else None
    )
    wall = time.perf_counter() - t
    tm = res.summary["timings"]
    return {
        "shape": shape,
        "megapixels": shape[0] * shape[1] / 1e6,
        "cells": len(res.table),
        "counts": res.summary["counts"],
        "wall_s": round(wall, 2),
        "cells_per_s": round(len(res.table) / wall, 2) if wall else None,
        "timings": tm,
        "device": res.summary["device"],
        "overlap": overlap,
    }


def stage_bench(path, label: str, model: str, device: str, detector: str = "wbc-stardist") -> dict:
    out = WORK / f"out_{label}"
    seq = run_one(path, None, model=model, detector=detector, device=device, overlap=False, write=False)
    e2e = run_one(path, out, model=model, detector=detector, device=device, overlap=True, write=True)
    det_alone = seq["timings"]["detect_s"]
    clf_alone = seq["timings"]["classify_s"]
    slower = max(det_alone, clf_alone)
    e2e["stage_alone_s"] = {
        "detect_s": det_alone,
        "classify_s": clf_alone,
        "sequential_pipeline_s": seq["timings"]["pipeline_s"],
    }
    e2e["efficiency_vs_stage_alone"] = round(e2e["timings"]["pipeline_s"] / slower, 3) if slower else None
    e2e["slide"] = str(path)
    return e2e


def rss_child(path: Path, model: str, device: str, detector: str = "wbc-stardist") -> dict:
    code = f"""
        import json, resource, time, os, torch
        torch.set_num_threads(2)
        from leukcore.pipeline import analyze_slide
        t = time.perf_counter()
        r = analyze_slide({str(path)!r}, detector={detector!r}, classifier={model!r}, device={device!r}, out_dir={str(WORK / ("rss_" + path.stem))!r})
        wall = time.perf_counter() - t
        print('@@' + json.dumps(dict(peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              wall_s=wall, cells=len(r.table), cells_per_s=len(r.table) / wall, counts=r.summary['counts'],
              shape=list(r.summary['slide']['shape']), timings=r.summary['timings'],
              device=r.summary['device'])))
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="2")
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-4000:])
    return json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("@@")][-1][2:])


def main(argv=None):
    global RESULTS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--only",
        choices=["sample", "mosaic", "rss", "alone"],
        action="append",
        help="alone: the N x N mosaic's stages timed alone (overlap=False, no outputs); with the "
        "rss_N run (overlapped, all outputs) it gives that mosaic's efficiency",
    )
    ap.add_argument("--mosaic", type=int, default=20000, help="mosaic side in px (>= 20000)")
    ap.add_argument("--rss", type=int, nargs="*", default=[20000, 60000], help="mosaic sides for the RSS runs")
    ap.add_argument("--model", default="all-binary")
    ap.add_argument("--detector", default="wbc-stardist")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--results", default=None, help="JSON output path (default benchmarks/results/...)")
    args = ap.parse_args(argv)
    parts = args.only or ["sample", "mosaic", "rss"]
    RESULTS = Path(args.results) if args.results else RESULTS
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["models"] = {"detector": args.detector, "classifier": args.model}
    results["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "note": "shared 2-core dev machine, other jobs running; wall-clock numbers",
    }
    if "sample" in parts:
        from leukcore.sample import sample_slide_path

        results["sample"] = stage_bench(sample_slide_path(), "sample", args.model, args.device, args.detector)
        _save(results)
    if "mosaic" in parts:
        results[f"mosaic_{args.mosaic}"] = stage_bench(
            build(args.mosaic), f"mosaic_{args.mosaic}", args.model, args.device, args.detector
        )
        _save(results)
    if "alone" in parts:
        seq = run_one(
            build(args.mosaic),
            None,
            model=args.model,
            detector=args.detector,
            device=args.device,
            overlap=False,
            write=False,
        )
        results[f"alone_{args.mosaic}"] = seq
        _save(results)
    if "rss" in parts:
        for n in args.rss:
            sparse = n > 30000
            r = rss_child(build(n, sparse=sparse), args.model, args.device, args.detector)
            r["note"] = (
                "real fields spread sparsely (one every 6000 px), mostly background"
                if sparse
                else "dense mosaic of real fields"
            )
            results[f"rss_{n}"] = r
            _save(results)
    for n in [args.mosaic] + list(args.rss or []):
        a, r = results.get(f"alone_{n}"), results.get(f"rss_{n}")
        if a and r:
            slower = max(a["timings"]["detect_s"], a["timings"]["classify_s"])
            r["efficiency_vs_stage_alone"] = round(r["timings"]["pipeline_s"] / slower, 3)
            r["stage_alone_s"] = {
                "detect_s": a["timings"]["detect_s"],
                "classify_s": a["timings"]["classify_s"],
                "sequential_pipeline_s": a["timings"]["pipeline_s"],
            }
    _save(results)
    table(results)


def _save(results):
    from leukcore.results import atomic_path

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(RESULTS) as tmp:
        Path(tmp).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


def table(results):
    print(
        f"\n{'run':<18}{'shape':>14}{'cells':>8}{'wall s':>9}{'cells/s':>9}{'detect s':>10}{'classify s':>11}"
        f"{'eff':>7}{'RSS MB':>9}"
    )
    for k, r in results.items():
        if k in ("machine", "models"):
            continue
        tm = r.get("timings", {})
        shape = "x".join(str(v) for v in r.get("shape", []))
        eff = r.get("efficiency_vs_stage_alone") or tm.get("efficiency")
        print(
            f"{k:<18}{shape:>14}{r.get('cells', ''):>8}{r.get('wall_s', 0):>9.1f}"
            f"{(r.get('cells_per_s') or 0):>9.1f}{tm.get('detect_s', 0):>10.1f}{tm.get('classify_s', 0):>11.1f}"
            f"{(eff or 0):>7.2f}{(r.get('peak_rss_mb') or 0):>9.0f}"
        )


if __name__ == "__main__":
    main()
