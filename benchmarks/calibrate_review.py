"""Choose a classifier's review threshold on shifted validation cells and write it into its card.

The validation cells of the model's own split (never trained on) are run as they are and through
:func:`leukcore.train.review.shifted_copies` (another lab's camera and stain, fixed seed); the threshold
is the lowest top-class probability at which the kept shifted cells reach the target accuracy
(:func:`leukcore.train.review.choose_review_threshold`).  No test or evaluation-only data is read.

Usage::

    nice -n 10 .venv/bin/python benchmarks/calibrate_review.py RUN_DIR_OR_CARD [--target 0.95] [--write]

Writes ``benchmarks/results/review_<name>.json``; ``--write`` adds the ``review`` block to the card.

``--ood`` instead fits the out-of-distribution statistics (:mod:`leukcore.classify.ood`) on the pooled
features of the model's own **training** cells (the crop cache ``leuk train`` wrote, with the finder the
card records), chooses the OOD threshold as the largest per-source score quantile keeping ``--ood-keep`` of every
source's **shifted validation** cells, reports the share of unshifted validation and in-source held-out
test cells (per source) it sends to review (``--write`` refuses when a source's share is over
``--max-review-share``), and writes ``<weights stem>.ood.safetensors`` beside the weights plus, with ``--write``, the
card's ``review.ood`` block (the rest of the ``review`` block is kept)::

    nice -n 10 .venv/bin/python benchmarks/calibrate_review.py all-binary --ood [--ood-keep 0.95] [--write]
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
    ap.add_argument(
        "--max-blast-fpr",
        type=float,
        default=0.05,
        help="at most this share of each source's normal validation cells (shifted) may be called a blast",
    )
    ap.add_argument("--write", action="store_true", help="write the review block into the model card")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ood", action="store_true", help="fit the OOD statistics and threshold (see above)")
    ap.add_argument("--ood-keep", type=float, default=0.95, help="share of shifted validation cells kept")
    ap.add_argument("--ood-k", type=int, default=256, help="principal directions of the OOD covariance")
    ap.add_argument(
        "--features-cache",
        default=None,
        help="--ood: .npz of the cells' features (benchmarks/bench_ood.py writes the same one)",
    )
    ap.add_argument(
        "--max-per-split",
        type=int,
        default=None,
        help="--ood: at most this many cells of each split (a seeded draw; CPU budget)",
    )
    ap.add_argument(
        "--max-review-share",
        type=float,
        default=0.10,
        help="--write refuses OOD statistics sending more of the in-source test cells to review",
    )
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.ood:
        return calibrate_ood(a)
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
    bl = (
        choose_blast_threshold(P1, y, groups, blast, floor=t, max_fpr=a.max_blast_fpr)
        if blast.any() and (~blast).any()
        else None
    )
    res = {
        "model": clf.card.get("name"),
        "version": clf.card.get("version"),
        "val_cells": int(len(va)),
        "split": "image-level validation split of the model's own config (never trained on)",
        "chosen_on": "validation cells through shifted_copies (camera quality + stain jitter, seed 0)",
        "chosen": {k: v for k, v in chosen.items() if k != "table"},
        "at_chosen_on_unshifted_val": {
            "kept": float(keep0.mean()),
            "kept_accuracy": float((P0.argmax(1) == y)[keep0].mean()),
        },
        "unshifted_choice_would_be": {k: v for k, v in as_is.items() if k != "table"},
        "blast": bl,
        "table_shifted": chosen["table"],
        "table_unshifted": as_is["table"],
    }
    out = Path("benchmarks/results") / f"review_{res['model']}.json"
    out.write_text(json.dumps(res, indent=1))
    print(
        f"{res['model']} v{res['version']}: review below {t:.2f} -> shifted val kept {chosen['kept']:.3f} "
        f"at accuracy {chosen['kept_accuracy']:.3f}; unshifted val kept {keep0.mean():.3f} "
        f"(accuracy {res['at_chosen_on_unshifted_val']['kept_accuracy']:.3f}); blast calls need "
        f"{bl['blast_confidence'] if bl else '-'} ({bl}); wrote {out}"
    )
    if a.write:
        path = Path(clf.card["_card_path"])
        card = yaml.safe_load(path.read_text())
        card["review"] = review_block(chosen, data=res["chosen_on"] + "; " + res["split"], n_cells=len(va), blast=bl)
        path.write_text(yaml.safe_dump(card, sort_keys=False))
        print(f"wrote review block into {path}", file=sys.stderr)
    return 0


def calibrate_ood(a) -> int:
    """``--ood``: statistics from the training cells, threshold on shifted validation cells."""
    import numpy as np
    import yaml

    from leukcore.classify import Classifier
    from leukcore.classify.infer import review_rule
    from leukcore.classify.ood import fit_ood, save_ood
    from leukcore.train.review import choose_ood_threshold, model_cell_features, ood_review_block

    clf = Classifier.load(a.model, device="cpu", backend="torch")
    d = model_cell_features(clf, a.features_cache, a.max_per_split)
    split, y, src = d["split"], d["label"], d["source"]
    classes = [str(c) for c in d["classes"]]
    F = d["feats"].astype(np.float32)
    tr, va = np.flatnonzero(split == "train"), d["val_idx"]
    held = set(clf.card["training"]["config"]["data"].get("holdout_sources") or [])
    te = np.flatnonzero((split == "test") & ~np.isin(src, list(held)))
    shrink = 0.05
    stats = fit_ood(F[tr], y[tr], k=a.ood_k, shrinkage=shrink)
    t = choose_ood_threshold(stats.score(d["val_shift_feats"].astype(np.float32)), a.ood_keep, groups=src[va])
    Fv, Pt, Ft = F[va], d["probs"][te], F[te]
    rt, bt = review_rule(clf)
    blast = np.array([c in ("ALL", "Early", "Pre", "Pro") for c in classes])

    def conf_review(P):
        r = P.max(1) < rt
        return r | (blast[P.argmax(1)] & (P.max(1) < bt)) if bt is not None else r

    ood_v, ood_t = stats.score(Fv) > t, stats.score(Ft) > t
    measured = {
        "val_ood_share": round(float(ood_v.mean()), 4),
        "in_source_test_ood_share": round(float(ood_t.mean()), 4),
        "in_source_test_review_share": round(float((ood_t | conf_review(Pt)).mean()), 4),
        "in_source_test_review_share_without_ood": round(float(conf_review(Pt).mean()), 4),
        "in_source_test_ood_share_per_source": {
            str(k): round(float(ood_t[src[te] == k].mean()), 4) for k in sorted(set(src[te]))
        },
        "in_source_test_split": "image-level held-out test split ("
        + ", ".join(sorted(set(src[te])))
        + f"), {len(te)} cells",
    }
    wfile = Path(clf.card["_card_path"]).parent / clf.card["weights"]["file"]
    ofile = wfile.with_name(wfile.name.replace(".safetensors", "") + ".ood.safetensors")
    block = ood_review_block(
        {"file": ofile.name, "sha256": ""},
        t,
        a.ood_keep,
        "validation cells through shifted_copies (camera quality + stain jitter, "
        f"seed 0): the largest per-source score quantile, keeping at least {a.ood_keep:g} "
        "of every source's cells",
        "image-level validation split of the model's own config (never trained on)",
        {
            "n_train_cells": int(len(tr)),
            "n_val_cells": int(len(va)),
            "pca_k": int(stats.basis.shape[1]),
            "shrinkage": shrink,
            "cells_per_split_cap": a.max_per_split,
        },
        measured,
    )
    print(f"{clf.name}: OOD threshold {t:.4f} (keeps {a.ood_keep} of {len(va)} shifted val cells); {measured}")
    res = Path("benchmarks/results") / f"review_ood_{clf.name}.json"
    res.write_text(json.dumps(block, indent=1))
    if not a.write:
        return 0
    worst = max(measured["in_source_test_ood_share_per_source"].values())
    if worst > a.max_review_share:
        print(f"not written: a source's in-source OOD review share {worst} > {a.max_review_share}", file=sys.stderr)
        return 1
    block["sha256"] = save_ood(stats, ofile)
    path = Path(clf.card["_card_path"])
    card = yaml.safe_load(path.read_text())
    card.setdefault("review", {})["ood"] = block
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    print(f"wrote {ofile} ({ofile.stat().st_size} bytes) and review.ood into {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
