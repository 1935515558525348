"""Training the StarDist-method WBC detector on CPU or GPU.

``leuk train-detector --data ../shared/data -o RUN_DIR`` calls :func:`train_detector`.
The run directory receives ``wbc-stardist.safetensors`` + ``wbc-stardist.yaml``
(the card) and ``train_log.json``.
"""
from __future__ import annotations

import itertools
import json
import math
import time
import zlib
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .data import TrainItem, background_color, field_input

__all__ = ["augment", "make_targets", "sample_batch", "stardist_loss", "train_detector",
           "train_network", "tune_thresholds", "compare_tunings", "retune_detector", "validation_sets",
           "match_points_to_boxes", "match_points_to_labels", "DEFAULT_ARCH", "restained_sets"]

DEFAULT_ARCH = {"type": "stardist-unet", "n_rays": 32, "channels": [16, 32, 64], "head_channels": 32}
#: peak learning rate of the cosine schedule
DEFAULT_LR = 3e-3
#: share of each training source in a batch (each source's images share its weight equally)
DEFAULT_SOURCE_WEIGHTS = {"four-class": 0.5, "bccd": 0.25, "pbc": 0.2, "pbc-platelet": 0.05}
#: four-class validation instances smaller than a disc this many microns across (the smallest white
#: cell) are *ignore* when tuning: the derived masks split cells into fragments (13 % of their
#: instances), which no white-cell detector should report; detections on them are not false
#: positives either (COCO's treatment of objects outside the evaluated size range)
VAL_IGNORE_BELOW_UM = 7.0


# ----------------------------------------------------------------- augmentation
def _stain_jitter(img: np.ndarray, rng) -> np.ndarray:
    """HED (haematoxylin-eosin-DAB) and HSV jitter, uint8 in/out."""
    from skimage.color import hed2rgb, hsv2rgb, rgb2hed, rgb2hsv

    x = img.astype(np.float32) / 255.0
    if rng.random() < 0.7:
        hed = rgb2hed(x)
        alpha = rng.uniform(0.85, 1.15, 3)
        beta = rng.uniform(-0.03, 0.03, 3)
        x = np.clip(hed2rgb(hed * alpha + beta), 0, 1)
    if rng.random() < 0.7:
        hsv = rgb2hsv(x)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-0.05, 0.05)) % 1.0
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.7, 1.3), 0, 1)
        hsv[..., 2] = np.clip(hsv[..., 2] * rng.uniform(0.85, 1.1), 0, 1)
        x = hsv2rgb(hsv)
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


#: augmentation recipes: ``mild`` (v1-v3: scale +-20 %, HED/HSV jitter) and ``strong`` (v4: scale
#: 0.6-1.67x log-uniform, region-wise Romanowsky re-colouring, glass tints, uneven light, JPEG;
#: :mod:`leukcore.detect.augment`)
AUGMENTATIONS = ("mild", "strong")


def augment(img: np.ndarray, lab: np.ndarray, rng, size: int = 128, scale: float = 0.2,
            strength: str = "mild"):
    """Random scale (+-``scale``), crop/pad to ``size``, flips, 90-degree turns, stain jitter, blur.

    ``strength="strong"`` draws the scale log-uniformly in [0.6, 1.67] and re-colours the patch
    region by region (:func:`leukcore.detect.augment.romanowsky_jitter`), then blur / noise / JPEG.

    Labels: 0 background, > 0 instances, -1 ignore.  Returns (uint8 image, int32 labels).
    """
    from skimage.transform import resize

    if strength not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {strength!r}; known: {AUGMENTATIONS}")
    strong = strength == "strong"
    f = float(np.exp(rng.uniform(np.log(0.6), np.log(1.67)))) if strong else rng.uniform(1 - scale, 1 + scale)
    h, w = img.shape[:2]
    nh, nw = max(8, int(round(h * f))), max(8, int(round(w * f)))
    img = np.clip(resize(img, (nh, nw, 3), order=1, preserve_range=True, anti_aliasing=f < 1) + 0.5,
                  0, 255).astype(np.uint8)
    lab = resize(lab, (nh, nw), order=0, preserve_range=True, anti_aliasing=False).astype(np.int32)
    bg = background_color(img)
    out_i = np.empty((size, size, 3), np.uint8)
    out_i[:] = np.clip(bg + rng.normal(0, 2, 3), 0, 255).astype(np.uint8)
    out_l = np.zeros((size, size), np.int32)
    # random placement: crop when larger, random offset when smaller
    sy = rng.integers(0, nh - size + 1) if nh > size else 0
    sx = rng.integers(0, nw - size + 1) if nw > size else 0
    ch, cw = min(size, nh), min(size, nw)
    dy = rng.integers(0, size - ch + 1)
    dx = rng.integers(0, size - cw + 1)
    out_i[dy:dy + ch, dx:dx + cw] = img[sy:sy + ch, sx:sx + cw]
    out_l[dy:dy + ch, dx:dx + cw] = lab[sy:sy + ch, sx:sx + cw]
    k = int(rng.integers(0, 4))
    out_i, out_l = np.rot90(out_i, k), np.rot90(out_l, k)
    if rng.random() < 0.5:
        out_i, out_l = out_i[:, ::-1], out_l[:, ::-1]
    if strong:
        from .augment import degrade, romanowsky_jitter
        out_i = romanowsky_jitter(np.ascontiguousarray(out_i), np.ascontiguousarray(out_l), rng)
        return np.ascontiguousarray(degrade(out_i, rng)), np.ascontiguousarray(out_l)
    from .augment import blur_and_noise

    out_i = blur_and_noise(_stain_jitter(np.ascontiguousarray(out_i), rng), rng, p=0.3)
    return np.ascontiguousarray(out_i), np.ascontiguousarray(out_l)


def make_targets(lab: np.ndarray, n_rays: int):
    """StarDist targets with stardist's own functions: prob (edt_prob), dist (star_dist), weight (ignore=0)."""
    from skimage.segmentation import relabel_sequential
    from stardist import edt_prob, star_dist

    ignore = lab < 0
    l = np.where(ignore, 0, lab)
    l, _, _ = relabel_sequential(l)
    l = l.astype(np.int32)
    prob = edt_prob(l).astype(np.float32)
    dist = star_dist(l, n_rays).astype(np.float32)
    weight = (~ignore).astype(np.float32)
    return prob, dist, weight


def sample_batch(items: Sequence[TrainItem], weights: np.ndarray, rng, batch: int, size: int, n_rays: int,
                 strength: str = "mild", template: Optional[np.ndarray] = None):
    """A batch of augmented patches, normalised as at inference (``template``: the stain template)."""
    xs, ps, ds, ws = [], [], [], []
    idx = rng.choice(len(items), size=batch, p=weights)
    for i in idx:
        img, lab = augment(items[i].image, items[i].labels, rng, size=size, strength=strength)
        p, d, w = make_targets(lab, n_rays)
        xs.append(field_input(img, template))
        ps.append(p)
        ds.append(d)
        ws.append(w)
    return (np.stack(xs).transpose(0, 3, 1, 2), np.stack(ps)[:, None], np.stack(ds).transpose(0, 3, 1, 2),
            np.stack(ws)[:, None])


#: ``leuk train-detector --normalize``: white balance only (v1-v3) or white balance + Reinhard stain transfer
NORMALIZE_CHOICES = ("white-balance", "reinhard")


def training_template(items: Sequence[TrainItem], per_source: int = 40, seed: int = 0) -> np.ndarray:
    """The stain template from the training images: ``per_source`` images of each source, equal weight."""
    from .stain import template_of

    rng = np.random.default_rng(seed)
    by: dict = {}
    for it in items:
        by.setdefault(it.source.split("/")[0], []).append(it)
    pick = []
    for src in sorted(by):
        lst = by[src]
        pick += [lst[i].image for i in rng.permutation(len(lst))[:per_source]]
    return template_of(pick)


def stardist_loss(prob_logit, dist, prob_t, dist_t, weight, dist_weight: float = 0.2, bg_reg: float = 1e-4):
    """BCE on probability + probability-weighted mean absolute error on distances (stardist's recipe)."""
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(prob_logit, prob_t, weight=weight)
    mask = prob_t * weight
    mae = (mask * (dist - dist_t).abs()).mean() / mask.mean().clamp_min(1e-6)
    reg = ((1 - prob_t.clamp(max=1)) * (prob_t == 0).float() * weight * dist.abs()).mean()
    return bce + dist_weight * mae + bg_reg * reg, {"bce": float(bce.detach()), "mae": float(mae.detach())}


# --------------------------------------------------------------------- metrics
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
    return {"precision": float(prec), "recall": float(rec),
            "f1": float(2 * prec * rec / (prec + rec)) if prec + rec else 0.0}


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
            rows.append((restain(img, rbcs[i % len(rbcs)], glasses[(i // 2) % len(glasses)],
                                 gains[(i // 3) % len(gains)], lab=None), tgt))
        out[f"{name}-restained"] = rows
    return out


#: how tuning ranks grid points: ``mean`` F1 over the sets (v1-v3) or the ``worst`` set's F1
#: (v4: a model must hold on every source and stain, ties broken by the mean)
TUNING_OBJECTIVES = ("mean", "worst")


def tune_thresholds(det, val_sets: dict, probs=(0.3, 0.4, 0.5, 0.6, 0.7), nmss=(0.3, 0.4, 0.5),
                    min_cells=(4.0, 5.0, 6.0, 7.0), objective: str = "mean") -> dict:
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
    from .model import disc_area_px
    from .postprocess import instances_from_maps
    from ..results import polygon_area

    maps = {}
    for name, pairs in val_sets.items():
        maps[name] = []
        for img, tgt in pairs:
            H, W = img.shape[:2]
            m = det.multiple
            Hp, Wp = -(-H // m) * m, -(-W // m) * m
            # the detector's own input (its stain template too), as predict_image reads a field
            x = field_input(img, getattr(det, "stain_template", None))
            x = np.pad(x, ((0, Hp - H), (0, Wp - W), (0, 0)), constant_values=1.0)
            p, d = det.predict_maps(x[None])
            maps[name].append((p[0, :H, :W], d[0, :H, :W], tgt))
    # NMS once per (prob, nms); the smallest-cell bound only filters its output by area
    counts = {}                          # (prob, nms, min_cell) -> set -> per-image rows
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
        table.append({"prob": pt, "nms": nt, "min_cell_um": mc, "sets": f1s,
                      "mean_f1": float(np.mean([v["f1"] for v in f1s.values()])),
                      "worst_f1": float(min(v["f1"] for v in f1s.values()))})
    if objective not in TUNING_OBJECTIVES:
        raise ValueError(f"unknown tuning objective {objective!r}; known: {TUNING_OBJECTIVES}")
    key = (lambda r: r["mean_f1"]) if objective == "mean" else (lambda r: (r["worst_f1"], r["mean_f1"]))
    best = max(table, key=key)
    per_image = {k: [list(map(int, r)) for r in v]
                 for k, v in counts[(best["prob"], best["nms"], best["min_cell_um"])].items()}
    return {"best": best, "grid": table, "per_image": per_image}


def compare_tunings(a: dict, b: dict, n_boot: int = 2000, seed: int = 0) -> dict:
    """Paired bootstrap of the mean validation F1 of two tunings (:func:`tune_thresholds` results).

    Images are resampled within each set, the same draw for both models, so the interval is that
    of the difference itself.  Both must come from the same validation images in the same order.

    Returns ``{"diff": A - B, "ci95": [lo, hi], "p_a_better": share of resamples where A wins}``.
    """
    pa, pb = a["per_image"], b["per_image"]
    if sorted(pa) != sorted(pb) or any(len(pa[k]) != len(pb[k]) for k in pa):
        raise ValueError("the two tunings were not made on the same validation sets: "
                         f"{ {k: len(v) for k, v in pa.items()} } vs { {k: len(v) for k, v in pb.items()} }")
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
    return {"diff": mean_f1(A, whole) - mean_f1(B, whole),
            "ci95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))],
            "p_a_better": float(np.mean(diffs > 0)), "n_boot": n_boot}


# -------------------------------------------------------------------- training
def train_network(items: Sequence[TrainItem], *, arch: Optional[dict] = None, steps: int = 1000,
                  minutes: Optional[float] = None, batch: int = 8, size: int = 128, lr: float = DEFAULT_LR,
                  device: str = "auto", seed: int = 0, threads: Optional[int] = None,
                  source_weights: Optional[dict] = None, log: Optional[Callable[[str], None]] = None,
                  init_state: Optional[dict] = None, augmentation: str = "mild",
                  template: Optional[np.ndarray] = None):
    """Train a :class:`StarDistUNet` on ``items``; stops after ``steps`` or ``minutes``.

    Returns ``(net, history)``.
    """
    import torch

    from ..device import device_settings, resolve_device
    from .net import build_network

    arch = dict(arch or DEFAULT_ARCH)
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = resolve_device(device)
    settings = device_settings(dev)
    net = build_network(arch).to(dev)
    if init_state:
        net.load_state_dict(init_state)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sw = source_weights or {}
    w = np.array([sw.get(it.source, 1.0) for it in items], dtype=np.float64)
    # each source contributes its weight in total, not per image
    counts = {}
    for it in items:
        counts[it.source] = counts.get(it.source, 0) + 1
    w = w / np.array([counts[it.source] for it in items])
    w /= w.sum()
    scaler = torch.amp.GradScaler("cuda") if settings["amp"] else None
    history = []
    t0 = time.time()
    total = steps
    say = log or (lambda s: None)
    step = 0
    net.train()
    while True:
        elapsed = (time.time() - t0) / 60
        if step >= steps or (minutes is not None and elapsed >= minutes):
            break
        frac = min(1.0, max(step / max(total, 1), elapsed / minutes if minutes else 0.0))
        for g in opt.param_groups:
            g["lr"] = lr * (0.03 + 0.97 * 0.5 * (1 + math.cos(math.pi * frac)))
        x, p, d, wt = sample_batch(items, w, rng, batch, size, arch["n_rays"], strength=augmentation,
                                  template=template)
        x, p, d, wt = (torch.from_numpy(a).to(dev) for a in (x, p, d, wt))
        with torch.autocast(dev.type, dtype=torch.float16, enabled=bool(settings["amp"])):
            logit, dist = net(x)
        loss, parts = stardist_loss(logit.float(), dist.float(), p, d, wt)
        opt.zero_grad(set_to_none=True)
        if scaler:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        step += 1
        history.append({"step": step, "loss": float(loss.detach()), **parts})
        if step % 50 == 0 or step == 1:
            recent = np.mean([h["loss"] for h in history[-50:]])
            say(f"step {step} loss {recent:.4f} bce {parts['bce']:.3f} mae {parts['mae']:.2f} "
                f"lr {opt.param_groups[0]['lr']:.2e} {(time.time() - t0) / 60:.1f} min")
    net.eval()
    return net, history


def _is_val_name(name: str, frac: float = 0.1) -> bool:
    """The four-class validation rule: a field is held out when its file name hashes below ``frac``."""
    return (zlib.crc32(name.encode()) % 1000) < frac * 1000


def _val_split(items: Sequence[TrainItem], frac: float = 0.1):
    """Deterministic image-level split of four-class items by name hash (others all train)."""
    tr, va = [], []
    for it in items:
        (va if it.source == "four-class" and _is_val_name(it.name, frac) else tr).append(it)
    return tr, va


def train_detector(data_dir, out_dir, *, mpp: float = 0.5, minutes: float = 30.0, steps: int = 100000,
                   batch: int = 8, size: int = 128, device: str = "auto", threads: Optional[int] = 1,
                   n_fourclass: int = 300, n_pbc: int = 60, n_platelet: int = 40, seed: int = 0,
                   name: str = "wbc-stardist", log: Optional[Callable[[str], None]] = print,
                   init_from: Optional[str] = None, lr: float = DEFAULT_LR,
                   source_weights: Optional[dict] = None, channels: Optional[Sequence[int]] = None,
                   train_ignore_below_um: Optional[float] = None,
                   val_ignore_below_um: Optional[float] = VAL_IGNORE_BELOW_UM,
                   augmentation: str = "mild", normalize: str = "white-balance") -> Path:
    """Build the training set, train, tune thresholds on validation data, write weights + card.

    Parameters
    ----------
    init_from : str, optional
        Model card to start from (fine-tuning).  With the same ``seed`` and image caps the
        training draws are the same, so the held-out PBC validation set stays the same.
    lr : float
        Peak learning rate of the cosine schedule.
    source_weights : dict, optional
        Share of each source in a batch (``four-class``, ``bccd``, ``pbc``, ``pbc-platelet``);
        missing keys keep :data:`DEFAULT_SOURCE_WEIGHTS`.
    channels : sequence of int, optional
        U-Net channels per level (default ``DEFAULT_ARCH["channels"]``); ignored with ``init_from``.
    train_ignore_below_um : float, optional
        Four-class training instances smaller than a disc this many microns across (fragments of
        the derived masks) are *ignore* instead of cells (see
        :func:`~leukcore.detect.data.load_training_items`).
    val_ignore_below_um : float, optional
        The same for the four-class fields thresholds are tuned on (:func:`fourclass_val_items`).
    normalize : {"white-balance", "reinhard"}
        The network's input: white balance only, or also the stained pixels' colours moved to a
        template made from the training images (:mod:`leukcore.detect.stain`; written to the card).

    Returns the card path in ``out_dir``.
    """
    import platform

    import torch

    from ..models.registry import load_card, load_state_dict, save_model
    from .data import load_training_items
    from .model import Detector

    if normalize not in NORMALIZE_CHOICES:
        raise ValueError(f"unknown normalize {normalize!r}; known: {NORMALIZE_CHOICES}")
    sw = {**DEFAULT_SOURCE_WEIGHTS, **(source_weights or {})}
    unknown = sorted(set(sw) - set(DEFAULT_SOURCE_WEIGHTS))
    if unknown:
        raise ValueError(f"unknown training source(s) {unknown}; known: {sorted(DEFAULT_SOURCE_WEIGHTS)}")
    t_start = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    say = log or (lambda s: None)
    items, info = load_training_items(data_dir, mpp, n_fourclass=n_fourclass, n_pbc=n_pbc,
                                      n_platelet=n_platelet, seed=seed, log=say,
                                      fourclass_ignore_below_um=train_ignore_below_um)
    train_items, val_items = _val_split(items)
    say(f"{len(train_items)} training images ({len(val_items)} drawn four-class fields are validation fields, "
        f"left out; tuning uses every validation field) "
        f"({(time.time() - t_start) / 60:.1f} min to build)")
    arch = dict(DEFAULT_ARCH)
    if channels:
        arch["channels"] = [int(c) for c in channels]
    init_state = None
    if init_from:
        c0 = load_card(init_from)
        arch = dict(c0["architecture"])
        init_state = load_state_dict(c0)
    template = training_template(train_items, seed=seed) if normalize == "reinhard" else None
    net, hist = train_network(train_items, arch=arch, steps=steps, minutes=minutes, batch=batch, size=size,
                              device=device, seed=seed, threads=threads, log=say, init_state=init_state,
                              lr=lr, source_weights=sw, augmentation=augmentation, template=template)
    card = {
        "name": name, "task": "detection", "version": 1,
        "description": "White-blood-cell (nucleus + cytoplasm) detector for Romanowsky-stained peripheral "
                       "blood smears: StarDist method (star-convex polygons) in PyTorch.",
        "architecture": arch,
        "input": {"mpp": mpp, "patch": size, "max_cell_um": 25.0, "min_cell_um": 4.0,
                  "normalization": {"type": "background-white-balance",
                                    "detail": "RGB divided by the slide's background colour (median of the "
                                              "brightest 10% of a thumbnail), clipped to [0, 1.25]"}},
        "thresholds": {"prob": 0.5, "nms": 0.4},
    }
    if template is not None:
        card["input"]["normalization"] = stain_card(template)
    det = Detector.from_network(net, card, device=device)
    val_sets = tuning_sets(data_dir, mpp, {"seed": seed, "n_pbc": n_pbc, "n_platelet": n_platelet}, log=say,
                           ignore_below_um=val_ignore_below_um)
    objective = "mean"
    if augmentation == "strong":
        val_sets.update(restained_sets(val_sets))
        objective = "worst"
    tuned = _apply_tuning(card, det, val_sets, say, val_ignore_below_um, objective)
    n_params = int(sum(p.numel() for p in net.parameters()))
    card["training"] = {
        "data": info["sources"],
        "excluded": {"wbc_masks_zheng2018": "GPL-3.0, evaluation only",
                     "pbc/erythroblast": "nucleated red cells: not white cells",
                     "bccd test split": "kept for evaluation", "bccd val split": "threshold tuning"},
        "masks": "derived: four-class Segmented (authors' colour threshold) -> watershed instances "
                 "(Pro: own purple/magenta colour mask); BCCD WBC box ellipse + nucleus hull; "
                 "PBC centred-cell colour mask; platelet images as negatives",
        "augmentation": ("scale +-20%, crop/pad, flips, 90-degree rotations, HED + HSV stain jitter, blur, noise"
                         if augmentation == "mild" else
                         "strong: scale 0.6-1.67x (log-uniform), crop/pad, flips, 90-degree rotations, "
                         "region-wise Romanowsky re-colouring in optical density (red cells and debris to "
                         "pale pink / pink-red / deep red / orange / brown / grey-blue / violet-grey, white "
                         "cells blue to magenta, pale to dark), glass tints (green, yellow, blue, warm), "
                         "uneven illumination, HED / hue / saturation / gamma jitter, defocus blur, noise, "
                         "JPEG q25-90"),
        "steps": len(hist), "batch": batch, "patch": size, "minutes": round((time.time() - t_start) / 60, 1),
        "final_loss": float(np.mean([h["loss"] for h in hist[-50:]])) if hist else None,
        "device": str(det.device), "torch": str(torch.__version__), "machine": platform.machine(),
        "params": n_params, "seed": seed, "lr": lr, "source_weights": sw,
        **({"fourclass_ignore_below_um": float(train_ignore_below_um)} if train_ignore_below_um else {}),
        **({"init_from": f"{c0['name']} v{c0.get('version', 1)} (weights sha256 "
                         f"{c0.get('weights', {}).get('sha256', '?')[:12]})"} if init_from else {}),
        "command": _train_command(data_dir, out_dir, minutes, seed, lr, sw, init_from,
                                  None if init_from else arch["channels"], train_ignore_below_um,
                                  val_ignore_below_um, augmentation, normalize),
    }
    cpath = save_model(net.state_dict(), card, out_dir, name)
    (out_dir / "train_log.json").write_text(json.dumps({"history": hist[::10], "tuning": tuned, "info": info},
                                                       default=float))
    say(f"wrote {cpath} ({(time.time() - t_start) / 60:.1f} min)")
    return cpath


def _train_command(data_dir, out_dir, minutes, seed, lr, sw, init_from, channels=None,
                   train_ignore_below_um=None, val_ignore_below_um=VAL_IGNORE_BELOW_UM,
                   augmentation="mild", normalize="white-balance") -> str:
    """The ``leuk train-detector`` command line that reproduces a run (non-default options only)."""
    cmd = f"leuk train-detector --data {data_dir} -o {out_dir} --minutes {minutes} --seed {seed}"
    if lr != DEFAULT_LR:
        cmd += f" --lr {lr:g}"
    for k, v in sw.items():
        if v != DEFAULT_SOURCE_WEIGHTS[k]:
            cmd += f" --source-weight {k}={v:g}"
    if channels and list(channels) != list(DEFAULT_ARCH["channels"]):
        cmd += " --channels " + " ".join(str(c) for c in channels)
    if init_from:
        cmd += f" --init-from {init_from}"
    if train_ignore_below_um:
        cmd += f" --train-ignore-below {float(train_ignore_below_um):g}"
    if (val_ignore_below_um or 0) != VAL_IGNORE_BELOW_UM:
        cmd += f" --val-ignore-below {float(val_ignore_below_um or 0):g}"
    if augmentation != "mild":
        cmd += f" --augment {augmentation}"
    if normalize != "white-balance":
        cmd += f" --normalize {normalize}"
    return cmd


def stain_card(template: np.ndarray) -> dict:
    """The card's ``input.normalization`` for a stain template (2, 3)."""
    t = np.asarray(template, np.float64)
    return {"type": "background-white-balance+reinhard",
            "detail": "RGB divided by the slide's glass colour; the stained pixels' CIE Lab mean and std (from "
                      "the slide's thumbnail, or the field) moved to the template (Reinhard transfer; "
                      "leukcore.detect.stain)",
            "template": {"lab_mean": [round(float(v), 3) for v in t[0]],
                         "lab_std": [round(float(v), 3) for v in t[1]]}}


# ------------------------------------------------------------------ validation
VAL_SPLIT_NOTE = ("BCCD ImageSets/Main/val.txt (image-level) + four-class fields held out by name hash "
                  "(image-level; no patient IDs, optimistic) + PBC images the training run never drew "
                  "(60 per white-cell class and 60 platelet images; image-level, healthy donors)")


def validation_sets(data_dir, mpp: float, bccd_mpp: Optional[float], fourclass_items: Sequence[TrainItem],
                    pbc_items: Sequence[TrainItem] = ()) -> dict:
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


def fourclass_val_items(data_dir, mpp: float = 0.5, log=None,
                        ignore_below_um: Optional[float] = VAL_IGNORE_BELOW_UM) -> list[TrainItem]:
    """Every four-class field of the name-hash validation split (never trained on), with derived masks.

    ``ignore_below_um``: derived-mask instances smaller than a disc this many microns across
    become *ignore* (:func:`~leukcore.detect.data.ignore_fragments`).  The derived masks hold fragments (13 % of the
    instances are smaller than a 7 um disc, the smallest white cell), which otherwise count as
    cells to find.  Default :data:`VAL_IGNORE_BELOW_UM`; ``None`` or 0 counts every instance.
    """
    from .data import FOUR_CLASSES, fourclass_item, dedup, folder_mpp

    data_dir = Path(data_dir)
    out = []
    for cls in FOUR_CLASSES:
        files = dedup((data_dir / "all4class" / "Original" / cls).glob("*.jpg"))
        if not files:
            continue
        # pixel size from 40 fields spread over the folder (the first 40 by name can be
        # an unrepresentative run of one magnification)
        m_src = folder_mpp(files[::max(1, len(files) // 40)][:40])
        n = 0
        for f in files:
            if _is_val_name(Path(f).name):
                it = fourclass_item(f, data_dir / "all4class" / "Segmented" / cls / Path(f).name, m_src, mpp,
                                     use_colour=(cls == "Pro"), ignore_below_um=ignore_below_um)
                if it is not None:
                    out.append(it)
                    n += 1
        if log:
            log(f"four-class {cls}: {n} validation fields at estimated {m_src:.3f} um/px")
    return out


def tuning_sets(data_dir, mpp: float, draws: Optional[dict], log=None,
                ignore_below_um: Optional[float] = VAL_IGNORE_BELOW_UM) -> dict:
    """The three threshold-tuning sets, built the same way after training and by ``--retune``.

    BCCD ``val`` fields at the BCCD train folder's pixel size, every four-class name-hash
    validation field (:func:`fourclass_val_items`, not only those among a run's per-class
    draws), and, when ``draws`` (``seed``, ``n_pbc``, ``n_platelet`` of the training run) is
    given, the PBC images that run never drew.  ``ignore_below_um``: see :func:`fourclass_val_items`.
    """
    from .data import bccd_split, folder_mpp, pbc_heldout_items

    jpgs = [Path(data_dir) / "bccd" / "BCCD" / "JPEGImages" / f"{i}.jpg" for i in bccd_split(data_dir, "train")]
    bccd_mpp = folder_mpp(jpgs[:40]) if jpgs else None
    return validation_sets(data_dir, mpp, bccd_mpp,
                           fourclass_val_items(data_dir, mpp, log=log, ignore_below_um=ignore_below_um),
                           pbc_heldout_items(data_dir, mpp, log=log, **draws) if draws else ())


def _apply_tuning(card: dict, det, val_sets: dict, say, ignore_below_um: Optional[float] = None,
                  objective: str = "mean") -> Optional[dict]:
    """Tune thresholds on ``val_sets`` and write them (and the validation metrics) into ``card``."""
    tuned = tune_thresholds(det, val_sets, objective=objective) if val_sets else None
    if tuned:
        b = tuned["best"]
        card["thresholds"] = {"prob": b["prob"], "nms": b["nms"], "min_cell_um": b["min_cell_um"],
                              "tuned_on": sorted(val_sets), "split": VAL_SPLIT_NOTE, "objective": objective}
        if ignore_below_um:
            card["thresholds"]["four_class_val_ignore_below_um"] = float(ignore_below_um)
        card.setdefault("input", {})["min_cell_um"] = b["min_cell_um"]
        say(f"tuned thresholds: prob {b['prob']} nms {b['nms']} min cell {b['min_cell_um']} um "
            f"-> {json.dumps(b['sets'])}")
    card["metrics"] = {**card.get("metrics", {}), "validation": tuned["best"]["sets"] if tuned else {},
                       "validation_split": "image-level (see thresholds.split)"}
    return tuned


def training_draws(card: dict) -> dict:
    """Seed and PBC caps of the run that trained ``card`` (what :func:`pbc_heldout_items` replays)."""
    tr = card.get("training", {})
    src = tr.get("data", {})
    wbc = [v.get("images", 0) for k, v in src.items() if k.startswith("pbc/") and not v.get("negative")]
    neg = [v.get("images", 0) for k, v in src.items() if k.startswith("pbc/") and v.get("negative")]
    return {"seed": int(tr.get("seed", 0)), "n_pbc": max(wbc, default=60), "n_platelet": max(neg, default=40)}


def retune_detector(card_path, data_dir, out_dir, *, mpp: Optional[float] = None, device: str = "auto",
                    pbc: bool = True, val_ignore_below_um: Optional[float] = VAL_IGNORE_BELOW_UM,
                    log: Optional[Callable[[str], None]] = print) -> Path:
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
    state = load_state_dict(card)                    # checks the weights' sha256
    det = Detector.load(card_path, device=device)
    mpp = float(mpp or det.mpp)
    val_sets = tuning_sets(data_dir, mpp, training_draws(card) if pbc else None, log=say,
                           ignore_below_um=val_ignore_below_um)
    card["metrics"] = {k: v for k, v in card.get("metrics", {}).items() if k != "test"}
    tuned = _apply_tuning(card, det, val_sets, say, val_ignore_below_um)
    card.pop("weights", None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cpath = save_model(state, card, out_dir, card["name"])
    (out_dir / "tuning.json").write_text(json.dumps(tuned, default=float))
    say(f"wrote {cpath}")
    return cpath
