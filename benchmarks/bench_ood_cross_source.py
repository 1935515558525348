"""Cross-source blast calls of one model with and without its OOD rule, through the ``leuk classify`` path.

Runs :func:`leukcore.train.crosssource.cross_source_eval` (no ``--mpp``, the same seeded draw) for the
model without OOD statistics and for its copy with them (``benchmarks/calibrate_review.py --ood --write``
on a copy of the run folder); each image's cells are found once and reused for both (the detector does
not depend on the classifier).

Usage::

    .venv/bin/python benchmarks/bench_ood_cross_source.py runs/all-binary-nopbc runs/all-binary-nopbc-ood \
        [--sets zheng] [--n-per-type 40] [--out runs/ood_cross_source_nopbc.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path


def _memo_find_cells():
    import leukcore.field as field

    orig, memo = field.find_cells, {}

    def find_cells(image, mpp, detector="wbc-stardist", device="auto", info=None):
        key = (hashlib.sha256(image.tobytes()).hexdigest(), image.shape, mpp, str(detector))
        if key not in memo:
            sub = {}
            memo[key] = (orig(image, mpp, detector, device, info=sub), sub)
        out, sub = memo[key]
        if info is not None:
            info.update(sub)
        return out

    field.find_cells = find_cells


def main(argv=None) -> int:
    import torch

    from leukcore.train.crosssource import CrossSourceOptions, cross_source_eval
    from leukcore.train.datasets import data_root

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("plain")
    ap.add_argument("with_ood")
    ap.add_argument("--sets", nargs="+", default=["zheng"])
    ap.add_argument("--n-per-type", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/ood_cross_source_nopbc.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    _memo_find_cells()
    res = {}
    for tag, m in (("without_ood", a.plain), ("with_ood", a.with_ood)):
        t0 = time.time()
        r = cross_source_eval(
            m,
            data_root(),
            CrossSourceOptions(sets=tuple(a.sets), n_per_type=a.n_per_type),
            log=lambda s: print(s, file=sys.stderr),
        )
        r["seconds"] = round(time.time() - t0, 1)
        res[tag] = r
        for name, s in r["sets"].items():
            rev = sum(x["label"] == "review" for x in s["records"])
            print(
                f"{tag:12} {name:6} n {s['n']}: called ALL {s['called_blast']} "
                f"({s['false_positive_rate']:.3f}), worst type {s['worst_type_rate']:.3f}, review {rev}"
            )
    res["settings"] = {"sets": a.sets, "n_per_type": a.n_per_type, "mpp": "estimated (no --mpp)"}
    Path(a.out).write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
