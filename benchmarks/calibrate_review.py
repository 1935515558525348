"""Choose a classifier's review threshold on shifted validation cells and write it into its card.

The validation cells of the model's own split (never trained on) are run as they are and through
:func:`leukcore.train.review.shifted_copies` (another lab's camera and stain, fixed seed); the threshold
is the lowest top-class probability at which the kept shifted cells reach the target accuracy
(:func:`leukcore.train.review.choose_review_threshold`).  No test or evaluation-only data is read.

Usage::

    nice -n 10 .venv/bin/python benchmarks/calibrate_review.py RUN_DIR_OR_CARD [--target 0.95] [--write]

Writes ``benchmarks/results/review_<name>.json``; ``--write`` adds the ``review`` block to the card.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    import numpy as np
    import torch
    import yaml

    from leukcore.classify import Classifier
    from leukcore.results import BLAST_CLASSES
    from leukcore.train.config import resolve_config
    from leukcore.train.prepare import prepare
    from leukcore.train.review import choose_blast_threshold, choose_review_threshold, review_block, shifted_copies

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--min-kept", type=float, default=0.5)
    ap.add_argument("--max-blast-fpr", type=float, default=0.05,
                    help="at most this share of each source's normal validation cells (shifted) may be called a blast")
    ap.add_argument("--write", action="store_true", help="write the review block into the model card")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    clf = Classifier.load(a.model, device="cpu")
    c = clf.card["training"]["config"]
    cfg = resolve_config({k: v for k, v in c.items() if not k.startswith("_")})
    cfg["data"]["only_cached"] = False
    df, classes, spec, cells = prepare(cfg)
    va = np.flatnonzero(cells["split"] == "val")
    crops, y = cells["crops"][va], cells["label"][va]
    P0 = clf.predict_crops(crops)
    P1 = clf.predict_crops(shifted_copies(crops))
    chosen = choose_review_threshold(P1, y, target_accuracy=a.target, min_kept=a.min_kept)
    as_is = choose_review_threshold(P0, y, target_accuracy=a.target, min_kept=a.min_kept)
    t = chosen["confidence"]
    keep0 = P0.max(1) >= t
    blast = np.array([c in BLAST_CLASSES for c in classes])
    groups = df["source"].to_numpy()[cells["row"][va]]
    bl = choose_blast_threshold(P1, y, groups, blast, floor=t, max_fpr=a.max_blast_fpr) if blast.any() and \
        (~blast).any() else None
    res = {"model": clf.card.get("name"), "version": clf.card.get("version"), "val_cells": int(len(va)),
           "split": "image-level validation split of the model's own config (never trained on)",
           "chosen_on": "validation cells through shifted_copies (camera quality + stain jitter, seed 0)",
           "chosen": {k: v for k, v in chosen.items() if k != "table"},
           "at_chosen_on_unshifted_val": {"kept": float(keep0.mean()),
                                          "kept_accuracy": float((P0.argmax(1) == y)[keep0].mean())},
           "unshifted_choice_would_be": {k: v for k, v in as_is.items() if k != "table"},
           "blast": bl,
           "table_shifted": chosen["table"], "table_unshifted": as_is["table"]}
    out = Path("benchmarks/results") / f"review_{res['model']}.json"
    out.write_text(json.dumps(res, indent=1))
    print(f"{res['model']} v{res['version']}: review below {t:.2f} -> shifted val kept {chosen['kept']:.3f} "
          f"at accuracy {chosen['kept_accuracy']:.3f}; unshifted val kept {keep0.mean():.3f} "
          f"(accuracy {res['at_chosen_on_unshifted_val']['kept_accuracy']:.3f}); blast calls need "
          f"{bl['blast_confidence'] if bl else '-'} ({bl}); wrote {out}")
    if a.write:
        path = Path(clf.card["_card_path"])
        card = yaml.safe_load(path.read_text())
        card["review"] = review_block(chosen, data=res["chosen_on"] + "; " + res["split"], n_cells=len(va),
                                      blast=bl)
        path.write_text(yaml.safe_dump(card, sort_keys=False))
        print(f"wrote review block into {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
