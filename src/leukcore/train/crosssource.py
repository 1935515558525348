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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

__all__ = ["ZHENG_TYPES", "zheng_items", "CrossSourceOptions", "cross_source_eval", "format_table"]

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
        recs.append(
            {
                **meta,
                "label": r.get("label"),
                "probabilities": r.get("probabilities") or {},
                "rule": r.get("rule"),
                "n_cells": r.get("n_cells"),
                **{k: r[k] for k in ("mpp", "mpp_source", "mpp_reliable") if k in r},
            }
        )
        if say and (k + 1) % 50 == 0:
            say(f"[cross-source] {what}: {k + 1}/{len(items)}")
    return recs


def _blast_rates(recs, key="cell_type") -> dict:
    """Share of records called a blast class (``None`` labels count as not blast, and are counted)."""
    out = {
        "n": len(recs),
        "called_blast": int(sum(r["label"] in _BLAST for r in recs)),
        "no_label": int(sum(r["label"] is None for r in recs)),
    }
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
    return {
        "n": len(recs),
        "accuracy": float(np.mean(ok)) if ok else None,
        "no_label": int(sum(r["label"] is None for r in recs)),
    }


@dataclass(frozen=True)
class CrossSourceOptions:
    """What :func:`cross_source_eval` runs.

    Attributes
    ----------
    sets : tuple of str
        The sources to run (``zheng``, ``pbc``, ``four-class``).
    n_per_type, n_fields : int, optional
        Caps (a seeded random draw) on images per cell type / four-class test fields.
    restain : bool
        Also run the four-class fields re-stained to another class's stain.
    mpp : float, optional
        Pass a pixel size to every image (default ``None``: estimated, as a user without ``--mpp``).
    seed : int
        Seed of the capped draws.
    device : str
        Where a model given by name runs.
    split : str
        The four-class split to run: ``test`` (held out; the figures to report) or ``val`` (the
        validation split, where models and rules are chosen).
    """

    sets: tuple = ("zheng", "pbc", "four-class")
    n_per_type: Optional[int] = None
    n_fields: Optional[int] = None
    restain: bool = True
    mpp: Optional[float] = None
    seed: int = 0
    device: str = "auto"
    split: str = "test"

    def __post_init__(self):
        if self.split not in ("test", "val"):
            raise ValueError(f"cross-source split must be 'test' or 'val', got {self.split!r}")


def cross_source_eval(
    model,
    data_dir,
    options: Optional[CrossSourceOptions] = None,
    *,
    cfg: Optional[dict] = None,
    log: Optional[Callable[[str], None]] = None,
) -> dict:
    """Run ``model`` over each source as ``leuk classify`` would (see the module doc).

    Parameters
    ----------
    model : str or Classifier
        A model name, card or run directory, or a loaded :class:`~leukcore.classify.Classifier`.
    data_dir : path
        The public data folder.
    options : CrossSourceOptions, optional
        Sets, caps, pixel size, seed and device (default ``CrossSourceOptions()``).
    cfg : dict, optional
        The training config (to rebuild its split and know whether PBC was held out); default the
        one the card records.
    log : callable, optional
        Receives progress lines.
    """
    from ..classify import Classifier
    from .config import resolve_config
    from .prepare import read_datasets

    o = options or CrossSourceOptions()
    clf = model if hasattr(model, "predict_crops") else Classifier.load(model, device=o.device)
    classes = list(clf.classes)
    if cfg is None:
        c = clf.card.get("training", {}).get("config")
        cfg = resolve_config({k: v for k, v in c.items() if not k.startswith("_")}) if c else None
    run = _Run(clf, np.random.default_rng(o.seed), o, log)
    data_dir = Path(data_dir)
    res: dict = {
        "model": clf.card.get("name"),
        "version": clf.card.get("version"),
        "weights_sha256": clf.card.get("weights", {}).get("sha256"),
        "classes": classes,
        "mpp": o.mpp if o.mpp else "estimated (no --mpp)",
        "sets": {},
    }
    if "zheng" in o.sets and (data_dir / "wbc_masks_zheng2018").exists():
        res["sets"]["zheng"] = _zheng_set(run, data_dir)
    df = None
    if cfg is not None and ("pbc" in o.sets or "four-class" in o.sets):
        df, _ = read_datasets(cfg)
    if "pbc" in o.sets and (data_dir / "pbc").exists():
        res["sets"]["pbc"] = _pbc_set(run, data_dir, cfg, df)
    if "four-class" in o.sets and df is not None:
        res["sets"].update(_fourclass_sets(run, df))
    return res


@dataclass
class _Run:
    """One evaluation's classifier, seeded draw, options and log."""

    clf: object
    rng: np.random.Generator
    options: CrossSourceOptions
    log: Optional[Callable[[str], None]]

    def cap(self, lst, n):
        """At most ``n`` of ``lst`` (a seeded draw, in the list's order)."""
        return lst if not n or len(lst) <= n else [lst[i] for i in sorted(self.rng.choice(len(lst), n, replace=False))]

    def run(self, items, what: str) -> list[dict]:
        """Classify ``items`` as ``leuk classify`` does."""
        return _run(self.clf, items, self.options.mpp, self.log, what)

    def by_type(self, pool) -> list:
        """``(path, meta)`` items of ``(path, cell type)`` pairs, capped per cell type."""
        by_type: dict = {}
        for p, t in pool:
            by_type.setdefault(t, []).append(p)
        return [
            (p, {"path": str(Path(p).name), "cell_type": t})
            for t, ps in sorted(by_type.items())
            for p in self.cap(ps, self.options.n_per_type)
        ]


def _zheng_set(run: _Run, data_dir: Path) -> dict:
    recs = run.run(run.by_type(zheng_items(data_dir)), "zheng")
    return {
        "source": "Zheng 2018 Dataset 1 (Jiangxi Tecom), normal white cells",
        "split": "evaluation-only source (never trained on)",
        **_blast_rates(recs),
        "ece": None,
        "records": recs,
    }


def _pbc_set(run: _Run, data_dir: Path, cfg: Optional[dict], df) -> dict:
    held = "pbc" in (cfg or {}).get("data", {}).get("holdout_sources", [])
    in_training = cfg is not None and any(d.get("reader") == "pbc" for d in cfg["data"]["datasets"])
    if df is not None and in_training and not held:
        rows = df[(df["source"] == "pbc") & (df["split"] == "test")]
        pool = [(Path(p), t) for p, t in zip(rows["path"], rows["cell_type"], strict=False)]
        split = "image-level held-out test split of a model trained on PBC (in-source)"
    else:
        pool = [
            (p, d.name)
            for d in sorted((data_dir / "pbc").iterdir())
            if d.is_dir() and d.name != "platelet"
            for p in sorted(d.glob("*.jpg"))
        ]
        split = "source-level: PBC never trained on (cross-source)"
    recs = run.run(run.by_type(pool), "pbc")
    return {
        "source": "PBC (Hospital Clinic Barcelona, CellaVision DM96), normal cells",
        "split": split,
        **_blast_rates(recs),
        "records": recs,
    }


def _fourclass_sets(run: _Run, df) -> dict:
    split = run.options.split
    f = df[(df["source"] == "all4class") & (df["split"] == split)] if "source" in df else df.iloc[:0]
    if not len(f):
        return {}
    what = "held-out test split" if split == "test" else "validation split (model selection)"
    classes = list(run.clf.classes)
    rows = run.cap(list(f.index), run.options.n_fields)
    items = [
        (
            Path(f.at[r, "path"]),
            {"path": Path(f.at[r, "path"]).name, "truth": f.at[r, "label"], "stain_group": f.at[r, "stain_group"]},
        )
        for r in rows
    ]
    recs = run.run(items, "four-class")
    out = {
        "four-class": {
            "source": f"four-class (Taleqani Hospital) {split} fields",
            "split": f"image-level {what} (no patient IDs: optimistic)",
            **_accuracy(recs),
            "ece": _ece_of(recs, classes, lambda r: r["truth"]),
            "records": recs,
        }
    }
    if run.options.restain:
        recs = run.run(_restained_items(run, df, items), "four-class re-stained")
        out["four-class-restained"] = {
            "source": f"four-class {split} fields, Reinhard re-stained to another class's stain",
            "split": f"image-level {what}, re-stained",
            **_accuracy(recs),
            "ece": _ece_of(recs, classes, lambda r: r["truth"]),
            "records": recs,
        }
    return out


def _restained_items(run: _Run, df, items) -> list:
    from .cells import load_image
    from .stain import class_lab_stats, lab_stats, reinhard, swap_targets

    tr = df[(df["source"] == "all4class") & (df["split"] == "train")]
    tr = tr.iloc[run.rng.permutation(len(tr))[:400]]
    stats = class_lab_stats(list(tr["path"]), list(tr["stain_group"]))
    targets = swap_targets([m["stain_group"] for _, m in items], sorted(stats))
    out = []
    for (p, m), t in zip(items, targets, strict=False):
        img = load_image(p)
        out.append((reinhard(img, stats[t], lab_stats(img)), {**m, "restained_to": t}))
    return out


def format_table(res: dict) -> str:
    """A short text table of :func:`cross_source_eval`'s result."""
    lines = [
        f"model {res['model']} v{res.get('version')}  mpp: {res['mpp']}",
        f"{'set':24}{'n':>6}{'metric':>28}{'value':>9}  split",
    ]
    for name, s in res["sets"].items():
        if "false_positive_rate" in s:
            lines.append(
                f"{name:24}{s['n']:>6}{'called blast (FPR)':>28}{s['false_positive_rate']:>9.3f}  {s['split']}"
            )
            lines.append(f"{'':24}{'':>6}{'worst cell type FPR':>28}{(s['worst_type_rate'] or 0):>9.3f}")
        else:
            acc = s["accuracy"] if s["accuracy"] is not None else float("nan")
            lines.append(f"{name:24}{s['n']:>6}{'accuracy':>28}{acc:>9.3f}  {s['split']}")
            if s.get("ece") is not None:
                lines.append(f"{'':24}{'':>6}{'ECE':>28}{s['ece']:>9.3f}")
    return "\n".join(lines)
