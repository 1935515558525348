"""How the detector's scale check (:mod:`leukcore.detect.scale`) changes the pixel-size estimate.

For every held-out field of four-class, BCCD and PBC (``bench_mpp``'s evenly spaced test fields), read
by the shipped ScaleNet (image-level) and by a ScaleNet trained without that source (source-level,
``--loso DIR`` with ``no-<source>/mpp-scalenet.yaml``): the estimate, and where the two rulers disagree
by more than 1.5x the detector's count at each candidate and at 1.25x it.  The rule's constants
(``MIN_CELLS``, ``MIN_MARGIN``) are then applied offline, so one run compares them; the share of fields
within +-15 % of the folder's pixel size is printed per source and split.

Usage::

    .venv/bin/python benchmarks/bench_mpp_settle.py --loso DIR [--limit 60] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def records(data, loso, limit, det, log=print):
    """Per-field rows: source, split, truth, estimate, both rulers, and the detector counts on disagreement."""
    from bench_mpp import load_test

    from leukcore.detect.scale import fragmentation
    from leukcore.mpp import MAX_RULER_DISAGREEMENT, estimate_mpp
    from leukcore.mpp_train import SOURCE_MPP

    rows = []
    for src in SOURCE_MPP:
        imgs = load_test(data, src, limit)
        models = [(None, "image-level")]
        if loso and (Path(loso) / f"no-{src}" / "mpp-scalenet.yaml").exists():
            models.append((str(Path(loso) / f"no-{src}" / "mpp-scalenet.yaml"), "source-level"))
        for model, split in models:
            for i, img in enumerate(imgs):
                try:
                    e = estimate_mpp(img, model=model)
                except Exception:  # no answer: a miss either way
                    rows.append({"source": src, "split": split, "i": i, "truth": SOURCE_MPP[src], "mpp": math.nan})
                    continue
                a, b = e.rbc_mpp, e.scalenet_mpp
                r = {"source": src, "split": split, "i": i, "truth": SOURCE_MPP[src], "mpp": e.mpp, "rbc": a, "sn": b}
                if math.isfinite(a) and math.isfinite(b) and max(a, b) / min(a, b) > MAX_RULER_DISAGREEMENT:
                    r["frag_rbc"] = fragmentation([img], det, a)
                    r["frag_sn"] = fragmentation([img], det, b)
                rows.append(r)
            log(
                f"{src} {split}: {sum('frag_rbc' in r for r in rows if r['source'] == src and r['split'] == split)} "
                f"of {len(imgs)} fields with disagreeing rulers"
            )
    return rows


def settled(r, min_cells, margin):
    """The pixel size the rule gives for one row (the estimator's own when there is nothing to settle)."""
    from leukcore.detect.scale import winner

    if "frag_rbc" not in r:
        return r["mpp"]
    win = winner({"rbc": tuple(r["frag_rbc"]), "sn": tuple(r["frag_sn"])}, min_cells, margin)
    return {"rbc": r["rbc"], "sn": r["sn"]}.get(win, r["mpp"])


def table(rows, rules):
    """``{(source, split): {"without": share, "min_cells=..": share, ...}}`` within +-15 %."""
    out = {}
    for r in rows:
        key = f"{r['source']}/{r['split']}"
        d = out.setdefault(key, {"n": 0, "without": 0})
        d["n"] += 1
        d["without"] += abs(r["mpp"] / r["truth"] - 1) <= 0.15
        for mc, mg in rules:
            k = f"min_cells={mc},margin={mg}"
            d[k] = d.get(k, 0) + (abs(settled(r, mc, mg) / r["truth"] - 1) <= 0.15)
    return {k: {kk: (round(vv / v["n"], 3) if kk != "n" else vv) for kk, vv in v.items()} for k, v in out.items()}


def main(argv=None) -> int:
    import torch

    from leukcore.detect.data import default_data_dir
    from leukcore.detect.model import Detector
    from leukcore.detect.scale import MIN_CELLS, MIN_MARGIN

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--loso", default=None, help="folder with no-<source>/mpp-scalenet.yaml")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--detector", default="wbc-stardist")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_mpp_settle.json"))
    ap.add_argument("--rows-from", default=None, help="re-apply the rules to the rows of an earlier run's JSON")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = Path(a.data) if a.data else default_data_dir()
    if a.rows_from:
        rows = json.loads(Path(a.rows_from).read_text())["rows"]
    else:
        rows = records(data, a.loso, a.limit, Detector.load(a.detector), log=lambda s: print(s, file=sys.stderr))
    rules = sorted({(MIN_CELLS, MIN_MARGIN), (3, 0.15), (5, 0.15), (12, 0.15), (5, 0.3)})
    res = {
        "shipped_rule": {"min_cells": MIN_CELLS, "margin": MIN_MARGIN},
        "within_15pct": table(rows, rules),
        "rows": rows,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1, default=float))
    cols = ["without"] + [f"min_cells={mc},margin={mg}" for mc, mg in rules]
    print("| source / split | n | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 2) + "|")
    for k, v in res["within_15pct"].items():
        print(f"| {k} | {v['n']} | " + " | ".join(f"{v[c]:.3f}" for c in cols) + " |")
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
