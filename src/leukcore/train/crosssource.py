"""Cross-source evaluation of a classifier, through the path ``leuk classify`` uses.

In-source validation tells little about a user's slide.  Every figure here comes from images run
exactly as a user runs them (:func:`leukcore.field.classify_image`, no ``--mpp`` unless asked),
and each names its source and split type:

``zheng``
    Zheng et al. 2018 Dataset 1 (Jiangxi Tecom; 300 normal white cells, evaluation only, never
    trained on): the share called a blast class, overall and per cell type.
``pbc``
    PBC normal cells (Hospital Clinic Barcelona, CellaVision): the share called a blast class per
    cell type.  *Cross-source* when the model was trained without PBC (config
    ``holdout_sources: [pbc]``), else its held-out test split only (in-source).
``four-class`` / ``four-class-restained``
    The held-out four-class fields (image-level split; the set has no patient IDs), as they are
    and re-stained (Reinhard in LAB) to another class's stain: accuracy and ECE.

ECE is computed per source over the image-level probabilities.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Optional

import numpy as np

__all__ = ["ZHENG_TYPES", "zheng_items", "cross_source_eval", "format_table"]

#: class ids of ``Class Labels of Dataset 1.csv`` (Zheng et al. 2018)
ZHENG_TYPES = {1: "neutrophil", 2: "lymphocyte", 3: "monocyte", 4: "eosinophil", 5: "basophil"}
#: what a blast call is, per model family
_BLAST = {"ALL", "Early", "Pre", "Pro"}


def zheng_items(data_dir) -> list[tuple[Path, str]]:
    """``(image path, cell type)`` of Zheng 2018 Dataset 1 (all normal white cells)."""
    root = Path(data_dir) / "wbc_masks_zheng2018"
    lab = root / "Class Labels of Dataset 1.csv"
    types = {}
    if lab.exists():
        with open(lab, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    types[int(row["image ID"])] = ZHENG_TYPES.get(int(row["class label"]), "unknown")
                except (KeyError, ValueError):
                    continue
    out = []
    for p in sorted((root / "Dataset 1").glob("*.bmp")):
        try:
            out.append((p, types.get(int(p.stem), "unknown")))
        except ValueError:
            continue
    return out


def _run(clf, items, mpp, say, what) -> list[dict]:
    from ..field import classify_image

    recs = []
    for k, (img, meta) in enumerate(items):
        # a file goes in as a file: the same loader, header checks and warnings as `leuk classify`
        r = classify_image(img if isinstance(img, np.ndarray) else str(img), clf, mpp=mpp)
        recs.append({**meta, "label": r.get("label"), "probabilities": r.get("probabilities") or {},
                     "rule": r.get("rule"), "n_cells": r.get("n_cells")})
        if say and (k + 1) % 50 == 0:
            say(f"[cross-source] {what}: {k + 1}/{len(items)}")
    return recs


def _blast_rates(recs, key="cell_type") -> dict:
    """Share of records called a blast class (``None`` labels count as not blast, and are counted)."""
    out = {"n": len(recs), "called_blast": int(sum(r["label"] in _BLAST for r in recs)),
           "no_label": int(sum(r["label"] is None for r in recs))}
    out["false_positive_rate"] = out["called_blast"] / max(out["n"], 1)
    per = {}
    for r in recs:
        per.setdefault(r.get(key) or "unknown", []).append(r["label"] in _BLAST)
    out["per_type"] = {k: {"n": len(v), "false_positive_rate": float(np.mean(v))} for k, v in sorted(per.items())}
    out["worst_type_rate"] = max((v["false_positive_rate"] for v in out["per_type"].values()), default=None)
    return out


def _ece_of(recs, classes, truth) -> Optional[float]:
    from .metrics import ece

    rows = [(r["probabilities"], truth(r)) for r in recs if r["probabilities"] and truth(r) in classes]
    if not rows:
        return None
    P = np.array([[p.get(c, 0.0) for c in classes] for p, _ in rows], np.float64)
    y = np.array([classes.index(t) for _, t in rows])
    return ece(P, y)


def _accuracy(recs) -> dict:
    ok = [r["label"] == r["truth"] for r in recs]
    return {"n": len(recs), "accuracy": float(np.mean(ok)) if ok else None,
            "no_label": int(sum(r["label"] is None for r in recs))}


def cross_source_eval(model, data_dir, *, cfg: Optional[dict] = None, sets=("zheng", "pbc", "four-class"),
                      n_per_type: Optional[int] = None, n_fields: Optional[int] = None, restain: bool = True,
                      mpp: Optional[float] = None, seed: int = 0, device: str = "auto",
                      log: Optional[Callable[[str], None]] = None) -> dict:
    """Run ``model`` over each source as ``leuk classify`` would (see the module doc).

    Parameters
    ----------
    model : str or Classifier
        A model name, card or run directory, or a loaded :class:`~leukcore.classify.Classifier`.
    cfg : dict, optional
        The training config (to rebuild its split and know whether PBC was held out); default the
        one the card records.
    n_per_type, n_fields : int, optional
        Caps (a seeded random draw) on images per cell type / four-class test fields.
    mpp : float, optional
        Pass a pixel size to every image (default ``None``: estimated, as a user without ``--mpp``).
    """
    from ..classify import Classifier
    from .config import resolve_config
    from .prepare import read_datasets

    clf = model if hasattr(model, "predict_crops") else Classifier.load(model, device=device)
    classes = list(clf.classes)
    if cfg is None:
        c = clf.card.get("training", {}).get("config")
        cfg = resolve_config({k: v for k, v in c.items() if not k.startswith("_")}) if c else None
    rng = np.random.default_rng(seed)
    data_dir = Path(data_dir)
    res: dict = {"model": clf.card.get("name"), "version": clf.card.get("version"),
                 "weights_sha256": clf.card.get("weights", {}).get("sha256"),
                 "classes": classes, "mpp": mpp if mpp else "estimated (no --mpp)", "sets": {}}

    def cap(lst, n):
        return lst if not n or len(lst) <= n else [lst[i] for i in sorted(rng.choice(len(lst), n, replace=False))]

    if "zheng" in sets and (data_dir / "wbc_masks_zheng2018").exists():
        by_type: dict = {}
        for p, t in zheng_items(data_dir):
            by_type.setdefault(t, []).append(p)
        items = [(p, {"path": str(p.name), "cell_type": t}) for t, ps in sorted(by_type.items())
                 for p in cap(ps, n_per_type)]
        recs = _run(clf, items, mpp, log, "zheng")
        res["sets"]["zheng"] = {"source": "Zheng 2018 Dataset 1 (Jiangxi Tecom), normal white cells",
                                "split": "evaluation-only source (never trained on)",
                                **_blast_rates(recs), "ece": None, "records": recs}
    df = None
    if cfg is not None and ("pbc" in sets or "four-class" in sets):
        df, _ = read_datasets(cfg)
    if "pbc" in sets and (data_dir / "pbc").exists():
        held = "pbc" in (cfg or {}).get("data", {}).get("holdout_sources", [])
        in_training = cfg is not None and any(d.get("reader") == "pbc" for d in cfg["data"]["datasets"])
        if df is not None and in_training and not held:
            rows = df[(df["source"] == "pbc") & (df["split"] == "test")]
            pool = [(Path(p), t) for p, t in zip(rows["path"], rows["cell_type"])]
            split = "image-level held-out test split of a model trained on PBC (in-source)"
        else:
            pool = [(p, d.name) for d in sorted((data_dir / "pbc").iterdir()) if d.is_dir() and d.name != "platelet"
                    for p in sorted(d.glob("*.jpg"))]
            split = "source-level: PBC never trained on (cross-source)"
        by_type = {}
        for p, t in pool:
            by_type.setdefault(t, []).append(p)
        items = [(p, {"path": str(Path(p).name), "cell_type": t}) for t, ps in sorted(by_type.items())
                 for p in cap(ps, n_per_type)]
        recs = _run(clf, items, mpp, log, "pbc")
        res["sets"]["pbc"] = {"source": "PBC (Hospital Clinic Barcelona, CellaVision DM96), normal cells",
                              "split": split, **_blast_rates(recs), "records": recs}
    if "four-class" in sets and df is not None:
        f = df[(df["source"] == "all4class") & (df["split"] == "test")] if "source" in df else df.iloc[:0]
        if len(f):
            from .stain import class_lab_stats, lab_stats, reinhard, swap_targets

            rows = cap(list(f.index), n_fields)
            items = [(Path(f.at[r, "path"]), {"path": Path(f.at[r, "path"]).name, "truth": f.at[r, "label"],
                                             "stain_group": f.at[r, "stain_group"]}) for r in rows]
            recs = _run(clf, items, mpp, log, "four-class")
            out = {"source": "four-class (Taleqani Hospital) held-out fields",
                   "split": "image-level held-out test split (no patient IDs: optimistic)",
                   **_accuracy(recs), "ece": _ece_of(recs, classes, lambda r: r["truth"]), "records": recs}
            res["sets"]["four-class"] = out
            if restain:
                tr = df[(df["source"] == "all4class") & (df["split"] == "train")]
                tr = tr.iloc[rng.permutation(len(tr))[:400]]
                stats = class_lab_stats(list(tr["path"]), list(tr["stain_group"]))
                groups = sorted(stats)
                targets = swap_targets([m["stain_group"] for _, m in items], groups)
                from .cells import load_image
                sw_items = []
                for (p, m), t in zip(items, targets):
                    img = load_image(p)
                    sw_items.append((reinhard(img, stats[t], lab_stats(img)), {**m, "restained_to": t}))
                recs = _run(clf, sw_items, mpp, log, "four-class re-stained")
                res["sets"]["four-class-restained"] = {
                    "source": "four-class held-out fields, Reinhard re-stained to another class's stain",
                    "split": "image-level held-out test split, re-stained",
                    **_accuracy(recs), "ece": _ece_of(recs, classes, lambda r: r["truth"]), "records": recs}
    return res


def format_table(res: dict) -> str:
    """A short text table of :func:`cross_source_eval`'s result."""
    lines = [f"model {res['model']} v{res.get('version')}  mpp: {res['mpp']}",
             f"{'set':24}{'n':>6}{'metric':>28}{'value':>9}  split"]
    for name, s in res["sets"].items():
        if "false_positive_rate" in s:
            lines.append(f"{name:24}{s['n']:>6}{'called blast (FPR)':>28}{s['false_positive_rate']:>9.3f}  {s['split']}")
            lines.append(f"{'':24}{'':>6}{'worst cell type FPR':>28}{(s['worst_type_rate'] or 0):>9.3f}")
        else:
            acc = s["accuracy"] if s["accuracy"] is not None else float("nan")
            lines.append(f"{name:24}{s['n']:>6}{'accuracy':>28}{acc:>9.3f}  {s['split']}")
            if s.get("ece") is not None:
                lines.append(f"{'':24}{'':>6}{'ECE':>28}{s['ece']:>9.3f}")
    return "\n".join(lines)
