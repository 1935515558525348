"""Held-out evaluation of a shipped classifier on crops from the shipped detector (as deployed).

The held-out (test) images of the model's preset are run through ``wbc-stardist`` (cached per
image), every detected cell is classified, and the usual metrics, colour baseline (trained on the
preset's own training crops) and stain-swap test are computed.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_classify_detector_crops.py all-4class

Writes ``benchmarks/results/classify_<name>_heldout_detector_crops.json`` (plus plots under
``runs/eval-<name>-detector``).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path


def main(argv=None):
    import torch

    from leukcore.train.cells import precompute_cells
    from leukcore.train.config import load_config, preset_path
    from leukcore.train.evaluate import EvalOptions, evaluate_model, headline
    from leukcore.train.prepare import make_finder, prepare, read_datasets

    argv = sys.argv[1:] if argv is None else argv
    name = argv[0] if argv else "all-4class"
    torch.set_num_threads(1)
    base = load_config(preset_path(name))
    seg = prepare(base)  # the training recipe's crops (colour baseline)
    cfg = copy.deepcopy(base)
    cfg["data"].update(finder="detector", only_cached=True, max_cells_per_image=30)
    df, _ = read_datasets(cfg)
    precompute_cells(df[df["split"] == "test"], make_finder(cfg, "cpu"))
    rep: dict = {}
    det = prepare(cfg, report=rep)
    out = Path("runs") / f"eval-{name}-detector"
    res = evaluate_model(
        name, cfg, out, EvalOptions(n_boot=1000, update_card=False), prepared=det, baseline_cells=seg[3]
    )
    res["prepare_report"] = rep
    dst = Path(__file__).parent / "results" / f"classify_{name}_heldout_detector_crops.json"
    dst.write_text(json.dumps(res, indent=1, default=float))
    print(json.dumps(headline(res), indent=1))
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
