"""Pixel-size estimation per source: the red-cell ruler (old) vs ScaleNet (+ red-cell cross-check).

For every held-out field of each source, ``leukcore.mpp.estimate_mpp`` with ``method="rbc"`` (the
old estimator) and ``method="auto"`` (ScaleNet, new default) against the folder's pixel size
(``leukcore.mpp_train.SOURCE_MPP``).  Per source: median absolute error in percent, share within
+-15 %, failures (no answer), share flagged unreliable and the within-15 % share of the fields
kept as reliable.  Failures count as misses.

Rows:

* ``image-level``: the shipped model (trained on the train splits of all three sources) on each
  source's held-out split (four-class, PBC: content-hash fifth; BCCD: ``test.txt``);
* ``source-level``: leave-one-source-out models (trained on the other two sources' train splits)
  on the held-out source's test split (``--loso RUN_DIR`` holding ``no-<source>/mpp-scalenet.yaml``);
* ``restained``: the test fields re-stained (:func:`leukcore.detect.augment.restain`: red cells
  pink-red / brown / grey-blue, glass white / yellow / green), shipped model;
* ``zheng2018``: evaluation only.  Its pixel size could not be established (no metadata; the 120 px
  crops show few red cells, and hand-measured red-cell rings and white-cell sizes disagree, so crops may
  be resized per cell): reported as *consistency* only, each estimator against its own median over
  the crops (``truth: null``), unless ``--zheng-mpp`` is given.

``python benchmarks/bench_mpp.py --data ../shared/data [--loso runs/mpp-loso] [--limit 200]``
writes ``benchmarks/results/bench_mpp.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

RESTAINS = [("pink-red", "white"), ("brown", "yellow"), ("grey-blue", "green")]


def _metrics(est, truth, flags=None) -> dict:
    est = np.asarray(est, float)
    ok = np.isfinite(est)
    err = np.full(len(est), np.inf)
    err[ok] = np.abs(est[ok] / truth - 1.0)
    out = {
        "n": int(len(est)),
        "failed": int((~ok).sum()),
        "median_abs_err_pct": round(float(np.median(err)) * 100, 1) if len(err) else None,
        "within_15pct": round(float(np.mean(err <= 0.15)), 3) if len(err) else None,
    }
    if flags is not None:
        flags = np.asarray(flags, bool)
        out["flagged_unreliable"] = round(float(np.mean(~flags)), 3)
        keep = flags & ok
        out["within_15pct_of_reliable"] = round(float(np.mean(err[keep] <= 0.15)), 3) if keep.any() else None
        bad = err > 0.15
        out["misses_flagged"] = round(float(np.mean(~flags[bad])), 3) if bad.any() else None
    return out


#: detector that settles a ruler disagreement (``--detector``; :mod:`leukcore.detect.scale`), or None
SETTLE = {"detector": None}


def run_estimator(images, method, model=None):
    from leukcore.mpp import MppError, estimate_mpp

    vals, flags, secs = [], [], []
    for img in images:
        t = time.process_time()  # CPU seconds: the shared machine is loaded
        try:
            e = estimate_mpp(img, method=method, model=model)
            if method == "auto" and SETTLE["detector"] is not None:
                from leukcore.detect.scale import settle_disagreement

                e = settle_disagreement(img, e, SETTLE["detector"])
            vals.append(e.mpp)
            flags.append(bool(e.reliable))
        except MppError:
            vals.append(math.nan)
            flags.append(False)
        secs.append(time.process_time() - t)
    return np.asarray(vals), np.asarray(flags), float(np.median(secs))


def load_test(data, source, limit):
    from leukcore.mpp_train import read_source_image, source_files

    files = source_files(data, source, "test")
    if limit and len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    GROUPS[source] = [f.parent.name for f in files]
    if source == "four-class":
        from leukcore.detect.data import read_rgb  # the scale bar stays: users' fields have it

        return [read_rgb(f) for f in files]
    return [read_source_image(f, source) for f in files]


#: class folder of every test image (four-class: Benign / Early / Pre / Pro), for per-folder medians
GROUPS: dict = {}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--limit", type=int, default=200, help="test fields per source (evenly spaced)")
    ap.add_argument("--restain-limit", type=int, default=40)
    ap.add_argument("--loso", default=None, help="folder with no-<source>/mpp-scalenet.yaml")
    ap.add_argument("--model", default=None, help="ScaleNet card (default: the shipped mpp-scalenet)")
    ap.add_argument(
        "--detector",
        default=None,
        help="settle ruler disagreements with this detector (leuk's default path: wbc-stardist)",
    )
    ap.add_argument("--zheng-mpp", type=float, default=None, help="Zheng 2018 Dataset 1 pixel size, if known")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_mpp.json"))
    a = ap.parse_args(argv)
    if a.detector:
        from leukcore.detect.model import Detector

        SETTLE["detector"] = Detector.load(a.detector)

    import torch

    torch.set_num_threads(1)
    from leukcore.detect.augment import restain
    from leukcore.detect.data import default_data_dir
    from leukcore.mpp_train import SOURCE_MPP

    data = Path(a.data) if a.data else default_data_dir()
    res = {"truth_mpp": SOURCE_MPP, "limit_per_source": a.limit, "rows": []}
    sources = list(SOURCE_MPP)
    tests = {s: load_test(data, s, a.limit) for s in sources}
    tests["zheng2018"] = load_test(data, "zheng", a.limit)
    truth = dict(SOURCE_MPP, zheng2018=a.zheng_mpp)

    old_cache = {}

    def row(source, split, images, extra="", old_key=None):
        # the old estimator has no training: the source-level rows reuse the image-level run on the same fields
        key = old_key or (source, split, extra)
        if key not in old_cache:
            old_cache[key] = run_estimator(images, "rbc")
        old, oldf, t_old = old_cache[key]
        new, newf, t_new = run_estimator(images, "auto", a.model)
        t_old_ref = truth[source] or float(np.nanmedian(old))
        t_new_ref = truth[source] or float(np.nanmedian(new))
        r = {
            "source": source,
            "split": split,
            "variant": extra,
            "n": len(images),
            "truth": truth[source]
            or f"none: consistency against own median (old {t_old_ref:.3f}, new {t_new_ref:.3f})",
            "old_rbc": _metrics(old, t_old_ref, oldf),
            "new_auto": _metrics(new, t_new_ref, newf),
            "cpu_sec_per_field_median": {"old": round(t_old, 4), "new": round(t_new, 4)},
            "new_estimates_pct": [
                round(float(x), 1) for x in np.nanpercentile(new / t_new_ref * 100, [5, 25, 50, 75, 95])
            ],
        }
        if source == "four-class" and len(images) == len(GROUPS.get(source, [])):
            g = np.asarray(GROUPS[source])
            r["per_class_median_mpp"] = {
                c: {
                    "old": round(float(np.nanmedian(old[g == c])), 3),
                    "new": round(float(np.nanmedian(new[g == c])), 3),
                    "n": int((g == c).sum()),
                }
                for c in sorted(set(g))
            }
            print(
                "   per class median mpp (old / new):",
                ", ".join(f"{c} {v['old']:.3f} / {v['new']:.3f}" for c, v in r["per_class_median_mpp"].items()),
            )
        res["rows"].append(r)
        print(
            f"{source:11s} {split:13s} {extra:18s} n={len(images):4d} | old {r['old_rbc']['median_abs_err_pct']:6.1f}% "
            f"{r['old_rbc']['within_15pct']:.3f} | new {r['new_auto']['median_abs_err_pct']:6.1f}% "
            f"{r['new_auto']['within_15pct']:.3f} flagged {r['new_auto']['flagged_unreliable']:.3f} "
            f"reliable-within {r['new_auto']['within_15pct_of_reliable']} | {t_new * 1000:.0f} ms",
            flush=True,
        )
        return r

    print(
        f"{'source':11s} {'split':13s} {'variant':18s} {'n':>6s} | old: median |err|, within 15 % | "
        f"new: median |err|, within 15 %, flagged unreliable, within 15 % of the reliable | time"
    )
    for s in tests:
        row(s, "image-level" if s != "zheng2018" else "evaluation-only", tests[s])
    for s in sources:
        imgs = tests[s][:: max(1, len(tests[s]) // a.restain_limit)][: a.restain_limit]
        for rbc, glass in RESTAINS:
            row(s, "image-level", [restain(im, rbc, glass) for im in imgs], f"restain {rbc}/{glass}")
    if a.loso:
        for s in sources:
            card = Path(a.loso) / f"no-{s}" / "mpp-scalenet.yaml"
            if not card.exists():
                continue
            old_model = a.model
            a.model = str(card)
            row(s, "source-level", tests[s], f"trained w/o {s}", old_key=(s, "image-level", ""))
            a.model = old_model
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
