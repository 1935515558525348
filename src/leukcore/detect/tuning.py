"""Threshold tuning of a trained detector: point matching, the validation sets, the grid search, re-tuning.

The validation sets (BCCD ``val``, held-out four-class fields, the PBC images training never drew)
are built the same way after training (:func:`leukcore.detect.train.train_detector`) and by
``leuk train-detector --retune`` (:func:`retune_detector`).
"""

from __future__ import annotations

import itertools
import json
import zlib
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .data import TrainItem, field_input

__all__ = [
    "VAL_IGNORE_BELOW_UM",
    "TUNING_OBJECTIVES",
    "VAL_SPLIT_NOTE",
    "match_points_to_boxes",
    "match_points_to_labels",
    "restained_sets",
    "tune_thresholds",
    "compare_tunings",
    "is_val_name",
    "validation_sets",
    "fourclass_val_items",
    "tuning_sets",
    "apply_tuning",
    "training_draws",
    "retune_detector",
]

#: four-class validation instances smaller than a disc this many microns across (the smallest white
#: cell) are *ignore* when tuning: the derived masks split cells into fragments (13 % of their
#: instances), which no white-cell detector should report; detections on them are not false
#: positives either (COCO's treatment of objects outside the evaluated size range)
VAL_IGNORE_BELOW_UM = 7.0


def match_points_to_boxes(points: np.ndarray, scores: np.ndarray, boxes: np.ndarray) -> int:
    """One-to-one matches (greedy by score): a point matches a box when it lies inside it."""
    used = np.zeros(len(boxes), bool)
    tp = 0
    for i in np.argsort(-np.asarray(scores)):
        y, x = points[i]
        inside = (boxes[:, 0] <= y) & (y < boxes[:, 2]) & (boxes[:, 1] <= x) & (x < boxes[:, 3]) & ~used
        if inside.any():
            # the box whose centre is nearest
            c = np.nonzero(inside)[0]
            cy, cx = (boxes[c, 0] + boxes[c, 2]) / 2, (boxes[c, 1] + boxes[c, 3]) / 2
            j = c[np.argmin((cy - y) ** 2 + (cx - x) ** 2)]
            used[j] = True
            tp += 1
    return tp


def match_points_to_labels(points: np.ndarray, lab: np.ndarray) -> tuple[int, int, int]:
    """(tp, n_pred, n_gt) where a point matches the instance it falls in (one-to-one); ignore (-1) not counted."""
    gt = set(np.unique(lab[lab > 0]).tolist())
    used, tp, n_pred = set(), 0, 0
    for y, x in np.asarray(points, int):
        v = int(lab[min(max(y, 0), lab.shape[0] - 1), min(max(x, 0), lab.shape[1] - 1)])
        if v < 0:
            continue
        n_pred += 1
        if v > 0 and v not in used:
            used.add(v)
            tp += 1
    return tp, n_pred, len(gt)


def _f1_of_counts(c: np.ndarray) -> dict:
    """Precision / recall / F1 of summed per-image ``(tp, n_pred, n_gt)`` rows."""
    tp, npred, ngt = np.asarray(c, dtype=np.int64).reshape(-1, 3).sum(axis=0)
    prec = tp / npred if npred else 0.0
    rec = tp / ngt if ngt else 0.0
    return {
        "precision": float(prec),
        "recall": float(rec),
        "f1": float(2 * prec * rec / (prec + rec)) if prec + rec else 0.0,
    }


def restained_sets(val_sets: dict) -> dict:
    """Re-stained copies of validation sets (``<name>-restained``), one deterministic stain per image.

    Image ``i`` gets red-cell hue ``i`` of :data:`~leukcore.detect.augment.RBC_PALETTE`, glass tint
    ``i // 2`` and white-cell gain ``i // 3`` (cycling), so every set spans every stain; targets are
    unchanged.  Thresholds chosen by the worst set then hold on stains no source shows.
    """
    from .augment import GLASS_TINTS, RBC_PALETTE, WBC_GAINS, restain

    rbcs, glasses, gains = list(RBC_PALETTE), list(GLASS_TINTS), list(WBC_GAINS)
    out = {}
    for name, pairs in val_sets.items():
        rows = []
        for i, (img, tgt) in enumerate(pairs):
            # white cells found by colour, not from the targets: a nucleated cell the derived masks
            # missed must stay a white cell, not be re-coloured as a red cell
            rows.append(
                (
                    restain(
                        img,
                        rbcs[i % len(rbcs)],
                        glasses[(i // 2) % len(glasses)],
                        gains[(i // 3) % len(gains)],
                        lab=None,
                    ),
                    tgt,
                )
            )
        out[f"{name}-restained"] = rows
    return out


#: how tuning ranks grid points: ``mean`` F1 over the sets (v1-v3) or the ``worst`` set's F1
#: (v4: a model must hold on every source and stain, ties broken by the mean)
TUNING_OBJECTIVES = ("mean", "worst")


def tune_thresholds(
    det,
    val_sets: dict,
    probs=(0.3, 0.4, 0.5, 0.6, 0.7),
    nmss=(0.3, 0.4, 0.5),
    min_cells=(4.0, 5.0, 6.0, 7.0),
    objective: str = "mean",
) -> dict:
    """Grid-search probability / NMS thresholds and the smallest cell kept for the best F1.

    ``objective``: ``"mean"`` ranks grid points by the mean F1 over the sets, ``"worst"`` by the
    lowest set F1 (then the mean).

    ``min_cells`` are diameters in microns: polygons smaller than a disc of that diameter are
    dropped (the smallest white cells, small lymphocytes, are about 7 um across; platelet clumps
    and debris are smaller).  Ties go to the first grid point (lowest thresholds).

    ``val_sets``: name -> list of (image at working mpp, target) where target is
    ``("boxes", (N, 4))`` or ``("labels", (H, W))``.

    Returns ``{"best": ..., "grid": [...], "per_image": {set: [[tp, n_pred, n_gt], ...]}}``;
    ``per_image`` holds the best grid point's counts, image by image, in ``val_sets`` order
    (what :func:`compare_tunings` resamples).
    """
    from ..results import polygon_area
    from .model import disc_area_px
    from .postprocess import instances_from_maps

    maps = {}
    for name, pairs in val_sets.items():
        maps[name] = []
        for img, tgt in pairs:
            H, W = img.shape[:2]
            m = det.multiple
            Hp, Wp = -(-H // m) * m, -(-W // m) * m
            # the detector's own input (its stain template too), as predict_image reads a field
            x = field_input(img, getattr(det, "stain_template", None), None, getattr(det, "stain_bounds", None))
            x = np.pad(x, ((0, Hp - H), (0, Wp - W), (0, 0)), constant_values=1.0)
            p, d = det.predict_maps(x[None])
            maps[name].append((p[0, :H, :W], d[0, :H, :W], tgt))
    # NMS once per (prob, nms); the smallest-cell bound only filters its output by area
    counts = {}  # (prob, nms, min_cell) -> set -> per-image rows
    for pt, nt in itertools.product(probs, nmss):
        for name, lst in maps.items():
            for p, d, (kind, t) in lst:
                pts, sc, polys = instances_from_maps(p, d, prob_thresh=pt, nms_thresh=nt)
                areas = np.array([polygon_area(q) for q in polys], dtype=np.float64)
                for mc in min_cells:
                    keep = areas >= disc_area_px(mc, det.mpp)
                    if kind == "boxes":
                        row = (match_points_to_boxes(pts[keep], sc[keep], t), int(keep.sum()), len(t))
                    else:
                        row = match_points_to_labels(pts[keep], t)
                    counts.setdefault((pt, nt, mc), {}).setdefault(name, []).append(row)
    table = []
    for pt, nt, mc in itertools.product(probs, nmss, min_cells):
        f1s = {name: _f1_of_counts(rows) for name, rows in counts[(pt, nt, mc)].items()}
        table.append(
            {
                "prob": pt,
                "nms": nt,
                "min_cell_um": mc,
                "sets": f1s,
                "mean_f1": float(np.mean([v["f1"] for v in f1s.values()])),
                "worst_f1": float(min(v["f1"] for v in f1s.values())),
            }
        )
    if objective not in TUNING_OBJECTIVES:
        raise ValueError(f"unknown tuning objective {objective!r}; known: {TUNING_OBJECTIVES}")
    key = (lambda r: r["mean_f1"]) if objective == "mean" else (lambda r: (r["worst_f1"], r["mean_f1"]))
    best = max(table, key=key)
    per_image = {
        k: [list(map(int, r)) for r in v] for k, v in counts[(best["prob"], best["nms"], best["min_cell_um"])].items()
    }
    return {"best": best, "grid": table, "per_image": per_image}


def compare_tunings(a: dict, b: dict, n_boot: int = 2000, seed: int = 0) -> dict:
    """Paired bootstrap of the mean validation F1 of two tunings (:func:`tune_thresholds` results).

    Images are resampled within each set, the same draw for both models, so the interval is that
    of the difference itself.  Both must come from the same validation images in the same order.

    Returns ``{"diff": A - B, "ci95": [lo, hi], "p_a_better": share of resamples where A wins}``.
    """
    pa, pb = a["per_image"], b["per_image"]
    if sorted(pa) != sorted(pb) or any(len(pa[k]) != len(pb[k]) for k in pa):
        raise ValueError(
            "the two tunings were not made on the same validation sets: "
            f"{ {k: len(v) for k, v in pa.items()} } vs { {k: len(v) for k, v in pb.items()} }"
        )
    A = {k: np.asarray(v, dtype=np.int64).reshape(-1, 3) for k, v in pa.items()}
    B = {k: np.asarray(v, dtype=np.int64).reshape(-1, 3) for k, v in pb.items()}

    def mean_f1(X, idx):
        return float(np.mean([_f1_of_counts(X[k][idx[k]])["f1"] for k in X]))

    whole = {k: np.arange(len(v)) for k, v in A.items()}
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        idx = {k: rng.integers(0, len(v), len(v)) for k, v in A.items()}
        diffs[i] = mean_f1(A, idx) - mean_f1(B, idx)
    return {
        "diff": mean_f1(A, whole) - mean_f1(B, whole),
        "ci95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))],
        "p_a_better": float(np.mean(diffs > 0)),
        "n_boot": n_boot,
    }


def is_val_name(name: str, frac: float = 0.1) -> bool:
    """The four-class validation rule: a field is held out when its file name hashes below ``frac``."""
    return (zlib.crc32(name.encode()) % 1000) < frac * 1000


VAL_SPLIT_NOTE = (
    "BCCD ImageSets/Main/val.txt (image-level) + four-class fields held out by name hash "
    "(image-level; no patient IDs, optimistic) + PBC images the training run never drew "
    "(60 per white-cell class and 60 platelet images; image-level, healthy donors)"
)


def validation_sets(
    data_dir,
    mpp: float,
    bccd_mpp: Optional[float],
    fourclass_items: Sequence[TrainItem],
    pbc_items: Sequence[TrainItem] = (),
) -> dict:
    """Threshold-tuning sets: BCCD ``val`` fields with WBC boxes, held-out four-class fields, held-out PBC.

    The PBC set (:func:`~leukcore.detect.data.pbc_heldout_items`) is what measures split cells
    and platelet / debris detections: one labelled centred cell per white-cell image, platelet
    images all background.

    Returns ``name -> [(image at working mpp, ("boxes", (N, 4)) | ("labels", (H, W))), ...]``.
    """
    from .data import bccd_boxes, bccd_split, read_rgb, resize_to_mpp

    val_sets = {}
    if bccd_mpp:
        pairs = []
        for i in bccd_split(data_dir, "val"):
            b = bccd_boxes(data_dir, i)
            if len(b) == 0:
                continue
            img = read_rgb(Path(data_dir) / "bccd" / "BCCD" / "JPEGImages" / f"{i}.jpg")
            pairs.append((resize_to_mpp(img, bccd_mpp, mpp), ("boxes", b * (bccd_mpp / mpp))))
        val_sets["bccd-val"] = pairs
    if fourclass_items:
        val_sets["four-class-val"] = [(it.image, ("labels", it.labels)) for it in fourclass_items]
    if pbc_items:
        val_sets["pbc-val"] = [(it.image, ("labels", it.labels)) for it in pbc_items]
    return val_sets


def fourclass_val_items(
    data_dir, mpp: float = 0.5, log=None, ignore_below_um: Optional[float] = VAL_IGNORE_BELOW_UM
) -> list[TrainItem]:
    """Every four-class field of the name-hash validation split (never trained on), with derived masks.

    ``ignore_below_um``: derived-mask instances smaller than a disc this many microns across
    become *ignore* (:func:`~leukcore.detect.data.ignore_fragments`).  The derived masks hold fragments (13 % of the
    instances are smaller than a 7 um disc, the smallest white cell), which otherwise count as
    cells to find.  Default :data:`VAL_IGNORE_BELOW_UM`; ``None`` or 0 counts every instance.
    """
    from .data import FOUR_CLASSES, dedup, folder_mpp
    from .masks import fourclass_field_item

    data_dir = Path(data_dir)
    out = []
    for cls in FOUR_CLASSES:
        files = dedup((data_dir / "all4class" / "Original" / cls).glob("*.jpg"))
        if not files:
            continue
        # pixel size from 40 fields spread over the folder (the first 40 by name can be
        # an unrepresentative run of one magnification)
        m_src = folder_mpp(files[:: max(1, len(files) // 40)][:40])
        n = 0
        for f in files:
            if is_val_name(Path(f).name):
                it = fourclass_field_item(data_dir, cls, f, m_src, mpp, ignore_below_um=ignore_below_um)
                if it is not None:
                    out.append(it)
                    n += 1
        if log:
            log(f"four-class {cls}: {n} validation fields at estimated {m_src:.3f} um/px")
    return out


def tuning_sets(
    data_dir, mpp: float, draws: Optional[dict], log=None, ignore_below_um: Optional[float] = VAL_IGNORE_BELOW_UM
) -> dict:
    """The three threshold-tuning sets, built the same way after training and by ``--retune``.

    BCCD ``val`` fields at the BCCD train folder's pixel size, every four-class name-hash
    validation field (:func:`fourclass_val_items`, not only those among a run's per-class
    draws), and, when ``draws`` (``seed``, ``n_pbc``, ``n_platelet`` of the training run) is
    given, the PBC images that run never drew.  ``ignore_below_um``: see :func:`fourclass_val_items`.
    """
    from .data import bccd_split, folder_mpp, pbc_heldout_items

    jpgs = [Path(data_dir) / "bccd" / "BCCD" / "JPEGImages" / f"{i}.jpg" for i in bccd_split(data_dir, "train")]
    bccd_mpp = folder_mpp(jpgs[:40]) if jpgs else None
    return validation_sets(
        data_dir,
        mpp,
        bccd_mpp,
        fourclass_val_items(data_dir, mpp, log=log, ignore_below_um=ignore_below_um),
        pbc_heldout_items(data_dir, mpp, log=log, **draws) if draws else (),
    )


def apply_tuning(
    card: dict, det, val_sets: dict, say, ignore_below_um: Optional[float] = None, objective: str = "mean"
) -> Optional[dict]:
    """Tune thresholds on ``val_sets`` and write them (and the validation metrics) into ``card``."""
    tuned = tune_thresholds(det, val_sets, objective=objective) if val_sets else None
    if tuned:
        b = tuned["best"]
        card["thresholds"] = {
            "prob": b["prob"],
            "nms": b["nms"],
            "min_cell_um": b["min_cell_um"],
            "tuned_on": sorted(val_sets),
            "split": VAL_SPLIT_NOTE,
            "objective": objective,
        }
        if ignore_below_um:
            card["thresholds"]["four_class_val_ignore_below_um"] = float(ignore_below_um)
        card.setdefault("input", {})["min_cell_um"] = b["min_cell_um"]
        say(
            f"tuned thresholds: prob {b['prob']} nms {b['nms']} min cell {b['min_cell_um']} um "
            f"-> {json.dumps(b['sets'])}"
        )
    card["metrics"] = {
        **card.get("metrics", {}),
        "validation": tuned["best"]["sets"] if tuned else {},
        "validation_split": "image-level (see thresholds.split)",
    }
    return tuned


def training_draws(card: dict) -> dict:
    """Seed and PBC caps of the run that trained ``card`` (what :func:`pbc_heldout_items` replays)."""
    tr = card.get("training", {})
    src = tr.get("data", {})
    wbc = [v.get("images", 0) for k, v in src.items() if k.startswith("pbc/") and not v.get("negative")]
    neg = [v.get("images", 0) for k, v in src.items() if k.startswith("pbc/") and v.get("negative")]
    return {"seed": int(tr.get("seed", 0)), "n_pbc": max(wbc, default=60), "n_platelet": max(neg, default=40)}


def retune_detector(
    card_path,
    data_dir,
    out_dir,
    *,
    mpp: Optional[float] = None,
    device: str = "auto",
    pbc: bool = True,
    val_ignore_below_um: Optional[float] = VAL_IGNORE_BELOW_UM,
    log: Optional[Callable[[str], None]] = print,
) -> Path:
    """Re-tune a trained detector's thresholds (probability, NMS, smallest cell) on the validation sets.

    Writes a copy of the model (same weights, new card) to ``out_dir`` and returns its card path.
    Test-set metrics in the card are dropped: they belong to the old thresholds.  ``pbc`` adds the
    held-out PBC images (:func:`~leukcore.detect.data.pbc_heldout_items`, replayed with the seed and
    per-class image counts the card records for its training run).  ``val_ignore_below_um``:
    four-class validation fragments smaller than this disc are ignored (:func:`fourclass_val_items`).
    """
    from ..models.registry import load_card, load_state_dict, save_model
    from .model import Detector

    say = log or (lambda s: None)
    card = dict(load_card(card_path))
    state = load_state_dict(card)  # checks the weights' sha256
    det = Detector.load(card_path, device=device)
    mpp = float(mpp or det.mpp)
    val_sets = tuning_sets(
        data_dir, mpp, training_draws(card) if pbc else None, log=say, ignore_below_um=val_ignore_below_um
    )
    card["metrics"] = {k: v for k, v in card.get("metrics", {}).items() if k != "test"}
    tuned = apply_tuning(card, det, val_sets, say, val_ignore_below_um)
    card.pop("weights", None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cpath = save_model(state, card, out_dir, card["name"])
    (out_dir / "tuning.json").write_text(json.dumps(tuned, default=float))
    say(f"wrote {cpath}")
    return cpath
