"""Peak resident memory of ``analyze_slide`` against the area analysed.

Runs the pipeline on centred square regions of one mosaic, each in a fresh
subprocess (so ``ru_maxrss`` is that run's peak), and writes
``benchmarks/results/bench_pipeline_memory.json`` plus a short table.

Usage::

    python benchmarks/bench_pipeline_memory.py SLIDE [--regions 3000 8000 12000] [--model all-binary] [--outputs]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time, tempfile
from leukcore.pipeline import analyze_slide
path, r, model, outputs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
from leukcore.io import open_slide
H, W = open_slide(path).shape
cy, cx = H // 2, W // 2
out = tempfile.mkdtemp() if outputs else None
t = time.time()
res = analyze_slide(path, "wbc-stardist", model, device="cpu", out_dir=out,
                    region=(max(0, cy - r // 2), max(0, cx - r // 2), min(H, cy + r // 2), min(W, cx + r // 2)))
print(json.dumps({"region_px": r, "outputs": outputs, "cells": len(res.table), "seconds": round(time.time() - t, 1),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("slide")
    ap.add_argument("--regions", type=int, nargs="+", default=[3000, 8000, 12000])
    ap.add_argument("--model", default="all-binary")
    ap.add_argument("--outputs", action="store_true", help="also write every output file")
    ap.add_argument("--results", default=str(Path(__file__).parent / "results" / "bench_pipeline_memory.json"))
    a = ap.parse_args(argv)
    rows = []
    for r in a.regions:
        p = subprocess.run(
            [sys.executable, "-c", CHILD, a.slide, str(r), a.model, "1" if a.outputs else "0"],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
    Path(a.results).parent.mkdir(parents=True, exist_ok=True)
    Path(a.results).write_text(json.dumps({"slide": a.slide, "model": a.model, "runs": rows}, indent=2))
    print(f"{'region px':>10} {'cells':>7} {'s':>7} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['region_px']:>10} {r['cells']:>7} {r['seconds']:>7} {r['peak_rss_mb']:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
