"""Cross-source evaluation of classifiers through the ``leuk classify`` path (no ``--mpp``).

For each model: the share of Zheng 2018 normal cells (evaluation-only source) and of PBC normal
cells (cross-source when the model never saw PBC, else its held-out split) called a blast class,
per cell type; the accuracy of held-out four-class fields as they are and re-stained; ECE per
source.  See :mod:`leukcore.train.crosssource`.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_classify_cross_source.py all-binary [MODEL ...] \
        [--data ../shared/data] [--n-per-type 40] [--n-fields 150] [--mpp X] [--out FILE]

Writes ``benchmarks/results/classify_cross_source.json`` (one entry per model, records included)
and prints a short table per model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    import torch

    from leukcore.train.crosssource import CrossSourceOptions, cross_source_eval, format_table
    from leukcore.train.datasets import data_root

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="model names, cards or run dirs")
    ap.add_argument("--data", default=None, help="data folder (default $LEUK_DATA or ../shared/data)")
    ap.add_argument("--n-per-type", type=int, default=40, help="images per cell type (seeded draw)")
    ap.add_argument("--n-fields", type=int, default=150, help="held-out four-class fields (seeded draw)")
    ap.add_argument("--mpp", type=float, default=None, help="pass this pixel size (default: estimated)")
    ap.add_argument("--sets", nargs="+", default=["zheng", "pbc", "four-class"])
    ap.add_argument(
        "--split", choices=("test", "val"), default="test", help="four-class split: test (report) or val (choose)"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/classify_cross_source.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = Path(a.data) if a.data else data_root()
    out = Path(a.out)
    allres = json.loads(out.read_text()) if out.exists() else {}
    for m in a.models:
        t0 = time.time()
        opts = CrossSourceOptions(
            sets=tuple(a.sets), n_per_type=a.n_per_type, n_fields=a.n_fields, mpp=a.mpp, split=a.split
        )
        res = cross_source_eval(m, data, opts, log=lambda s: print(s, file=sys.stderr))
        res["seconds"] = round(time.time() - t0, 1)
        res["settings"] = {"n_per_type": a.n_per_type, "n_fields": a.n_fields, "threads": a.threads, "split": a.split}
        key = f"{res['model']}@{(res['weights_sha256'] or '')[:12]}" + (f"@mpp{a.mpp:g}" if a.mpp else "")
        key += "@val" if a.split == "val" else ""
        allres[key] = res
        print(format_table(res))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(allres, indent=1, default=float))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
