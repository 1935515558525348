"""Model selection for the WBC detector: candidates tuned on the same validation sets, compared
to the shipped model with a paired bootstrap.

Each candidate (a model card, optionally with test-time augmentation ``CARD@TTA``) gets its
thresholds grid-tuned (:func:`leukcore.detect.train.tune_thresholds`) on the three tuning sets
of ``leuk train-detector`` (BCCD ``val.txt``, the four-class name-hash validation fields with
fragments below 7 um ignored, the PBC images the run never drew; image-level splits), then its
mean validation F1 is compared with the first candidate's (the incumbent) by a paired bootstrap
over images (:func:`leukcore.detect.train.compare_tunings`).

The rule this project ships by: a candidate replaces the incumbent only when the 95 % interval
of the difference lies above zero.  Candidates must share the incumbent's PBC draws (same seed
and per-class caps), or the sets differ and the comparison is refused.  No test data is read.

JSON to ``benchmarks/results/bench_detect_selection.json``; table on stdout.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_detect_selection.py wbc-stardist RUN/wbc-stardist.yaml \\
        wbc-stardist@8
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_detect_selection.json"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "candidates",
        nargs="+",
        metavar="CARD[@TTA]",
        help="model name or card path; the first is the incumbent; @2/@4/@8 averages that many flips/transposes",
    )
    ap.add_argument("--data", default=None)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from leukcore.detect import Detector
    from leukcore.detect.data import default_data_dir
    from leukcore.detect.train import VAL_IGNORE_BELOW_UM, compare_tunings, training_draws, tune_thresholds, tuning_sets

    data = Path(a.data) if a.data else default_data_dir()
    specs = []
    for c in a.candidates:
        card, _, tta = c.partition("@")
        specs.append((c, card, int(tta or 1)))
    dets = [(c, Detector.load(card, device="auto"), tta) for c, card, tta in specs]
    draws = [training_draws(d.card) for _, d, _ in dets]
    if any(dr != draws[0] for dr in draws):
        sys.exit(f"candidates were trained with different PBC draws ({draws}): their validation sets differ")
    mpps = {d.mpp for _, d, _ in dets}
    if len(mpps) > 1:
        sys.exit(f"candidates work at different pixel sizes {sorted(mpps)}")
    t0 = time.perf_counter()
    sets = tuning_sets(data, mpps.pop(), draws[0], log=None)
    res = {
        "split": "image-level: BCCD val.txt, four-class name-hash validation fields (fragments below "
        f"{VAL_IGNORE_BELOW_UM} um ignored), held-out PBC images",
        "sets": {k: len(v) for k, v in sets.items()},
        "draws": draws[0],
        "candidates": [],
        "machine": {"python": sys.version.split()[0], "platform": platform.platform()},
    }
    tunings = []
    for name, det, tta in dets:
        det.tta = tta
        t1 = time.perf_counter()
        tuned = tune_thresholds(det, sets)
        b = tuned["best"]
        row = {
            "candidate": name,
            "tta": tta,
            "weights_sha256": det.card.get("weights", {}).get("sha256"),
            "thresholds": {"prob": b["prob"], "nms": b["nms"], "min_cell_um": b["min_cell_um"]},
            "sets": b["sets"],
            "mean_f1": b["mean_f1"],
            "seconds": round(time.perf_counter() - t1, 1),
        }
        if tunings:
            row["vs_incumbent"] = compare_tunings(tuned, tunings[0], n_boot=a.n_boot)
            row["replaces_incumbent"] = row["vs_incumbent"]["ci95"][0] > 0
        tunings.append(tuned)
        res["candidates"].append(row)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    names = list(res["sets"])
    print(
        f"{'candidate':44s} {'thresholds':>14s} "
        + " ".join(f"{n:>14s}" for n in names)
        + f" {'mean F1':>8s}  vs first: diff [95% CI] P(better)"
    )
    for r in res["candidates"]:
        t = r["thresholds"]
        cmp = r.get("vs_incumbent")
        tail = (
            (
                f"{cmp['diff']:+.4f} [{cmp['ci95'][0]:+.4f}, {cmp['ci95'][1]:+.4f}] {cmp['p_a_better']:.2f}"
                + (" REPLACES" if r["replaces_incumbent"] else "")
            )
            if cmp
            else "(incumbent)"
        )
        print(
            f"{r['candidate'][-44:]:44s} {t['prob']:.1f}/{t['nms']:.1f}/{t['min_cell_um']:.0f}um "
            + " ".join(f"{r['sets'][n]['f1']:14.4f}" for n in names)
            + f" {r['mean_f1']:8.4f}  {tail}"
        )
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
