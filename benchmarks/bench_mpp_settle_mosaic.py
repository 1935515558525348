"""Detection F1 on 24-field mosaics of each cross-source set, with and without the detector scale check
(leukcore.detect.scale; disabled by an unreachable MIN_CELLS).  Writes benchmarks/results/settle_mosaic24.json.  Run: .venv/bin/python benchmarks/bench_mpp_settle_mosaic.py"""

import json
import sys

sys.path.insert(0, "benchmarks")
from pathlib import Path

import bench_detect_cross_source as b

import leukcore.detect.scale as sc
from leukcore.detect.model import Detector

det = Detector.load("wbc-stardist")
out = {}
for limit in (24,):
    sets = b.load_sets(Path("/work/shared/data"), limit)
    for name, pairs in sets.items():
        for label, mc in (("without", 10**9), ("with", 5)):
            sc.MIN_CELLS = mc
            r = b.score(det, pairs, fallback_mpp=b.KNOWN_MPP.get(name))
            out[f"{name}/{limit}/{label}"] = r
            print(
                f"{name:16s} fields {limit} {label:8s} mpp {r['mpp']:.3f} P {r['precision']:.3f} R {r['recall']:.3f} F1 {r['f1']:.3f}",
                flush=True,
            )
json.dump(out, open(Path(__file__).parent / "results" / "settle_mosaic24.json", "w"), indent=1)
