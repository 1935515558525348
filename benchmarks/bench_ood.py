"""Which OOD score, and what it does: per-cell measurement on a classifier's own cell set.

For a model (default the source-level hold-out ``runs/all-binary-nopbc``, trained without PBC) the
pooled features of its training, validation (as is and through ``shifted_copies``) and test cells are
read once (cached in ``--cache``); then for each candidate score

* ``mahalanobis-pca`` (:mod:`leukcore.classify.ood`, the shipped one) with ``k`` principal directions,
* ``mahalanobis-full`` (every direction),
* ``mahalanobis-relative`` (minus the distance to one class-agnostic Gaussian, Ren et al. 2021), and
* ``knn`` (cosine distance to the 10th nearest of 4000 training cells),

the threshold keeping ``--keep`` of the **shifted validation** cells (chosen on validation data only)
and, at it, per cell: the share of in-source held-out test cells (image-level test split) sent to review
by the OOD rule, and the PBC false-positive rate (normal cells called ALL, confidently: not in review)
per cell type without and with the OOD rule (PBC is the model's source-level hold-out when it was
trained without it, else its in-source test split).

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_ood.py [runs/all-binary-nopbc] [--keep 0.95 0.99] \
        [--out runs/ood_nopbc.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _knn_scorer(Ftr, k=10, bank=4000, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    B = Ftr[rng.choice(len(Ftr), min(bank, len(Ftr)), replace=False)].astype(np.float32)
    B /= np.linalg.norm(B, axis=1, keepdims=True) + 1e-8

    def score(F):
        F = F.astype(np.float32)
        F = F / (np.linalg.norm(F, axis=1, keepdims=True) + 1e-8)
        out = np.empty(len(F), np.float32)
        for i in range(0, len(F), 2048):
            s = F[i : i + 2048] @ B.T
            out[i : i + 2048] = 1.0 - np.sort(s, axis=1)[:, -k]
        return out

    return score


def scorers(F, y, tr):
    from leukcore.classify.ood import fit_ood

    Ftr, ytr = F[tr].astype("float64"), y[tr]
    out = {}
    for k in (64, 256):
        st = fit_ood(Ftr, ytr, k=k)
        out[f"mahalanobis-pca k={k}"] = st.score
    st = fit_ood(Ftr, ytr, k=Ftr.shape[1])
    out["mahalanobis-full"] = st.score
    # relative Mahalanobis (Ren et al. 2021): the class distance minus that to one class-agnostic Gaussian
    st, bg = fit_ood(Ftr, ytr, k=256), fit_ood(Ftr, 0 * ytr, k=256)
    out["mahalanobis-relative k=256"] = lambda F: st.score(F) ** 2 - bg.score(F) ** 2
    out["knn"] = _knn_scorer(Ftr)
    return out


def confident_blast(P, classes, review_t, blast_t):
    import numpy as np

    blast = np.array([c in ("ALL", "Early", "Pre", "Pro") for c in classes])
    conf, pred = P.max(1), P.argmax(1)
    review = conf < review_t
    if blast_t is not None:
        review |= blast[pred] & (conf < blast_t)
    return blast[pred] & ~review, review


def fpr_table(called, types):

    per = {
        t: {"n": int((types == t).sum()), "false_positive_rate": round(float(called[types == t].mean()), 4)}
        for t in sorted(set(types))
    }
    return {
        "n": int(len(called)),
        "false_positive_rate": round(float(called.mean()), 4) if len(called) else None,
        "worst_type_rate": max(v["false_positive_rate"] for v in per.values()) if per else None,
        "per_type": per,
    }


def main(argv=None) -> int:
    import numpy as np

    from leukcore.classify import Classifier
    from leukcore.classify.infer import review_rule
    from leukcore.train.review import choose_ood_threshold

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="runs/all-binary-nopbc")
    ap.add_argument("--keep", type=float, nargs="+", default=[0.95, 0.99])
    ap.add_argument("--cache", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-per-split", type=int, default=None, help="at most this many cells per split (seeded)")
    ap.add_argument("--out", default="runs/ood_nopbc.json")
    a = ap.parse_args(argv)
    cache = Path(a.cache or f"runs/ood_features_{Path(a.model).name}.npz")
    import torch

    from leukcore.train.review import model_cell_features

    torch.set_num_threads(a.threads)
    clf = Classifier.load(a.model, device="cpu", backend="torch")
    d = model_cell_features(clf, cache, a.max_per_split)
    classes = [str(c) for c in d["classes"]]
    rt, bt = review_rule(clf)
    F, P, y, split, src, ctype = (
        d["feats"].astype(np.float32),
        d["probs"],
        d["label"],
        d["split"],
        d["source"],
        d["cell_type"],
    )
    tr = split == "train"
    held_pbc = "pbc" not in set(src[tr])
    pbc = src == "pbc"
    pbc_eval = pbc & (split == "test")
    insrc_test = (split == "test") & ~(pbc if held_pbc else np.zeros_like(pbc))
    called, review = confident_blast(P, classes, rt, bt)
    res = {
        "model": clf.card.get("name"),
        "weights_sha256": clf.card["weights"]["sha256"],
        "confidence_rule": {"review_below": rt, "blast_below": bt},
        "cells": {
            "train": int(tr.sum()),
            "val": int(len(d["val_idx"])),
            "in_source_test": int(insrc_test.sum()),
            "pbc_eval": int(pbc_eval.sum()),
        },
        "pbc_split": "source-level: PBC never trained on (cross-source)"
        if held_pbc
        else "image-level held-out test split (in-source)",
        "in_source_split": "image-level held-out test split of the in-source sources "
        f"({', '.join(sorted(set(src[insrc_test])))})",
        "threshold_chosen_on": "validation cells (image-level validation split) through shifted_copies "
        "(camera quality + stain jitter, seed 0): the score quantile keeping KEEP of them",
        "without_ood": {
            "pbc": fpr_table(called[pbc_eval], ctype[pbc_eval]),
            "in_source_test_review_share": round(float(review[insrc_test].mean()), 4),
        },
        "scores": {},
    }
    Fv = d["val_shift_feats"].astype(np.float32)
    Fv0 = F[d["val_idx"]]
    for name, sc in scorers(F, y, tr).items():
        s_all, s_v, s_v0 = sc(F), sc(Fv), sc(Fv0)
        for keep, per_source in [(k, ps) for k in a.keep for ps in (False, True)]:
            t = choose_ood_threshold(s_v, keep, groups=src[d["val_idx"]] if per_source else None)
            ood = s_all > t
            r = {
                "threshold": round(t, 5),
                "keep": keep,
                "val_unshifted_ood_share": round(float((s_v0 > t).mean()), 4),
                "in_source_test_ood_share": round(float(ood[insrc_test].mean()), 4),
                "in_source_test_review_share": round(float((ood | review)[insrc_test].mean()), 4),
                "in_source_test_ALL_recall": round(float((called & ~ood)[insrc_test & (y == 0)].mean()), 4),
                "in_source_test_ALL_recall_without_ood": round(float(called[insrc_test & (y == 0)].mean()), 4),
                "pbc_ood_share": round(float(ood[pbc_eval].mean()), 4),
                "in_source_test_ood_share_per_source": {
                    str(k): round(float(ood[insrc_test & (src == k)].mean()), 4) for k in sorted(set(src[insrc_test]))
                },
                "pbc": fpr_table((called & ~ood)[pbc_eval], ctype[pbc_eval]),
            }
            rule = "per-source" if per_source else "pooled"
            res["scores"][f"{name} @keep{keep} {rule}"] = r
            print(
                f"{name:26} keep {keep} {rule:10}: t={t:.3f} in-src review {r['in_source_test_review_share']:.3f} "
                f"(ood {r['in_source_test_ood_share']:.3f}) ALL recall {r['in_source_test_ALL_recall']:.3f} | "
                f"PBC ood {r['pbc_ood_share']:.3f} FPR {r['pbc']['false_positive_rate']} "
                f"worst {r['pbc']['worst_type_rate']}",
                flush=True,
            )
    print(
        f"without OOD: PBC FPR {res['without_ood']['pbc']['false_positive_rate']} worst "
        f"{res['without_ood']['pbc']['worst_type_rate']}; in-source review "
        f"{res['without_ood']['in_source_test_review_share']}"
    )
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
