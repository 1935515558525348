"""White-cell detection per source, as a new user runs it: a mosaic of whole fields, no pixel size.

For every source in ``../shared/data`` the held-out fields are laid edge to edge (a few pixels of
glass between them) into one image **without** a pixel size, ``detect_cells`` estimates the pixel
size from the red cells as ``leuk detect`` does, and every detection is mapped back to its field and
matched one-to-one to the ground truth (a detection matches a box when its centroid lies in it, a
label when its centroid lies in that instance; each ground-truth cell matches at most once):

``bccd-test``        BCCD test split, WBC boxes as published (image-level split; in-source for the detector)
``four-class-val``   four-class name-hash validation fields, derived masks, fragments < 7 um ignored
``pbc-val``          PBC images the training run never drew (one centred cell; platelet images = no cell)
``zheng``            Zheng 2018 Dataset 1 crops, expert masks (evaluation-only source: never trained on)

and each again **re-stained** (``<set>-restained``: red cells to pale pink, pink-red, deep red,
orange, brown, grey-blue, violet-grey; glass white, green, yellow, blue, warm; white cells blue to
magenta; :func:`leukcore.detect.augment.restain`), one stain per field, cycling.  Models are
compared by their **worst** set.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_detect_cross_source.py [MODEL ...] [--limit N]

Writes ``benchmarks/results/bench_detect_cross_source.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_detect_cross_source.json"
#: pixel size of each set as laid out (BCCD native; four-class / PBC resampled to the working 0.5;
#: Zheng crops ~0.17 um/px, see bench_detect_quality.py): used only when the estimate fails
KNOWN_MPP = {"bccd-test": 0.092, "four-class-val": 0.5, "pbc-val": 0.5, "zheng": 0.17}


def prf(c):
    tp, npred, ngt = (int(v) for v in np.asarray(c).reshape(-1, 3).sum(0))
    p = tp / npred if npred else 0.0
    r = tp / ngt if ngt else 0.0
    return {
        "precision": round(p, 4),
        "recall": round(r, 4),
        "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0,
        "tp": tp,
        "n_pred": npred,
        "n_gt": ngt,
    }


def _zheng_fields(data, limit):
    from skimage.measure import label as cc

    from leukcore.detect.data import read_rgb

    root = Path(data) / "wbc_masks_zheng2018" / "Dataset 1"
    out = []
    for p in sorted(root.glob("*.bmp"))[:limit]:
        m = read_rgb(p.with_suffix(".png"))[..., 0] if p.with_suffix(".png").exists() else None
        if m is None:
            continue
        lab = cc(m > 0)
        if lab.max() > 1:  # keep the largest component: the one annotated cell
            sizes = np.bincount(lab.ravel())[1:]
            lab = (lab == 1 + int(np.argmax(sizes))).astype(np.int32)
        out.append((read_rgb(p), ("labels", lab.astype(np.int32))))
    return out


def load_sets(data, limit=None, reference: str = "derived"):
    """``name -> [(field RGB, target)]``: BCCD test at native size, the others at the working pixel size.

    ``reference``: the four-class fields' truth, the authors' colour-threshold masks (``derived``) or those masks
    adjudicated by a reviewer (``adjudicated``: ``adjudicate_fourclass.py``, first 60 fields only).
    """
    from leukcore.detect.data import bccd_boxes, bccd_split, pbc_heldout_items, read_rgb
    from leukcore.detect.train import fourclass_val_items

    data = Path(data)
    sets = {}
    bccd = []
    for i in bccd_split(data, "test")[:limit]:
        bccd.append((read_rgb(data / "bccd" / "BCCD" / "JPEGImages" / f"{i}.jpg"), ("boxes", bccd_boxes(data, i))))
    sets["bccd-test"] = bccd
    if reference == "adjudicated":
        from adjudicate_fourclass import adjudicated_pairs

        sets["four-class-val"] = adjudicated_pairs(data, limit or 60)
    else:
        sets["four-class-val"] = [(it.image, ("labels", it.labels)) for it in fourclass_val_items(data, 0.5)][:limit]
    sets["pbc-val"] = [(it.image, ("labels", it.labels)) for it in pbc_heldout_items(data, 0.5)][:limit]
    if (data / "wbc_masks_zheng2018").exists():
        sets["zheng"] = _zheng_fields(data, limit)
    return sets


def mosaic(pairs, gap: int = 6, cols: int | None = None):
    """Lay fields edge to edge (``gap`` px of the fields' median glass colour between them)."""
    from leukcore.detect.data import background_color

    n = len(pairs)
    cols = cols or int(np.ceil(np.sqrt(n)))
    hmax = max(p[0].shape[0] for p in pairs) + gap
    wmax = max(p[0].shape[1] for p in pairs) + gap
    rows = int(np.ceil(n / cols))
    glass = np.median([background_color(p[0]) for p in pairs[:50]], axis=0).astype(np.uint8)
    canvas = np.empty((rows * hmax, cols * wmax, 3), np.uint8)
    canvas[:] = glass
    offsets = []
    for k, (img, _) in enumerate(pairs):
        y, x = (k // cols) * hmax, (k % cols) * wmax
        canvas[y : y + img.shape[0], x : x + img.shape[1]] = img
        offsets.append((y, x))
    return canvas, offsets


def score(det, pairs, mpp=None, fallback_mpp=None, sweep=None):
    """Detect on the mosaic (pixel size estimated unless given) and count per field.

    ``sweep``: probability thresholds; the mosaic is detected once at the lowest and each threshold
    keeps the detections scoring at least it (NMS keeps higher-scoring candidates first, so this
    equals a run at that threshold up to the pixel-size check's counts).  Counts per threshold in
    ``out["sweep"]``.
    """
    from leukcore.detect import detect_cells
    from leukcore.io import Slide
    from leukcore.mpp import MppError

    canvas, offs = mosaic(pairs)
    t0 = time.time()
    note = None
    kw = {"prob_thresh": min(sweep)} if sweep else {}
    try:
        table = detect_cells(Slide.from_array(canvas, mpp=mpp), det, progress=None, **kw)
    except MppError as e:  # the user would get this error; score at the set's known pixel size instead
        if fallback_mpp is None:
            raise
        note = f"pixel size not estimable ({e}); scored at the known {fallback_mpp} um/px"
        table = detect_cells(Slide.from_array(canvas, mpp=fallback_mpp), det, progress=None, **kw)
    secs = time.time() - t0
    pts = table.df[["centroid_y", "centroid_x"]].to_numpy(np.float64) if len(table) else np.zeros((0, 2))
    sc = table.df["score"].to_numpy(np.float64) if len(table) else np.zeros(0)
    rows = _count(pairs, offs, pts, sc)
    swept = {f"{t:g}": prf(_count(pairs, offs, pts[sc >= t], sc[sc >= t])) for t in sweep or ()}
    meta = table.meta
    est = meta.get("mpp_estimate") or {}
    return {
        **prf(rows),
        "fields": len(pairs),
        "mpp": meta.get("mpp"),
        "mpp_source": meta.get("mpp_source"),
        "mpp_spread": est.get("spread"),
        "seconds": round(secs, 1),
        **({"note": note} if note else {}),
        **({"sweep": swept} if sweep else {}),
    }


def _count(pairs, offs, pts, sc):
    """Per-field ``(tp, n_pred, n_gt)`` of the detections ``pts`` (mosaic coordinates) against each field's truth."""
    from leukcore.detect.train import match_points_to_boxes, match_points_to_labels

    rows = []
    for (img, (kind, t)), (y, x) in zip(pairs, offs, strict=True):
        h, w = img.shape[:2]
        m = (pts[:, 0] >= y) & (pts[:, 0] < y + h) & (pts[:, 1] >= x) & (pts[:, 1] < x + w)
        local = pts[m] - np.array([y, x])
        if kind == "boxes":
            rows.append((match_points_to_boxes(local, sc[m], t), int(m.sum()), len(t)))
        else:
            rows.append(match_points_to_labels(local, t))
    return rows


def restained(pairs):
    from leukcore.detect.train import restained_sets

    return restained_sets({"x": pairs})["x-restained"]


def restained_slides(pairs):
    """One stain per slide: field ``i`` goes to slide ``i % 8`` and every field of slide ``k`` gets stain ``k``
    (red-cell hue ``k``, glass tint ``k % 5``, white-cell gain ``k % 6``), as one lab's smear has one stain.
    White cells are the purple pixels and, where the truth is a mask, its cells (:func:`_cells`).
    The slide-level colour steps (white balance, stain normalisation, pixel size from the red cells) then
    see one stain, where :func:`restained` mixes every stain into one mosaic.
    """
    from leukcore.detect.augment import GLASS_TINTS, RBC_PALETTE, WBC_GAINS, restain

    rbcs, glasses, gains = list(RBC_PALETTE), list(GLASS_TINTS), list(WBC_GAINS)
    n = len(rbcs)
    return [
        [
            (restain(img, rbcs[k], glasses[k % len(glasses)], gains[k % len(gains)], lab=_cells(img, tgt)), tgt)
            for img, tgt in pairs[k::n]
        ]
        for k in range(n)
        if pairs[k::n]
    ]


def _cells(img, target):
    """The labels a re-stain colours by: white cells > 0, red cells and glass 0, untouched -1 (``None``:
    :func:`~leukcore.detect.augment.restain`'s own purple threshold).

    Where the truth is a mask, its cells and the purple pixels within 4 px of them (a cell's rim); its ignored
    fragments stay as they are.  A purple threshold alone paints half of every lavender red cell of the
    four-class set's blue fields as a white cell (blotched red cells no stain makes) and a pale-pink white
    cell as a red cell.  Where the truth is boxes (BCCD: pink red cells), the purple threshold alone.
    """
    kind, t = target
    if kind != "labels":
        return None
    from scipy import ndimage as ndi

    from leukcore.detect.colour import purple_measure

    cells = t > 0
    cells |= (purple_measure(img) > 40) & ndi.binary_dilation(cells, iterations=4)
    return np.where(t < 0, -1, cells).astype(np.int32)


def score_slides(det, slides, fallback_mpp=None, sweep=None):
    """:func:`score` over several mosaics (one per stain), counts pooled; per-slide F1 in ``per_slide``."""
    parts = [score(det, p, fallback_mpp=fallback_mpp, sweep=sweep) for p in slides]
    pooled = prf([(r["tp"], r["n_pred"], r["n_gt"]) for r in parts])
    if sweep:
        pooled["sweep"] = {
            k: prf([(r["sweep"][k]["tp"], r["sweep"][k]["n_pred"], r["sweep"][k]["n_gt"]) for r in parts])
            for k in parts[0]["sweep"]
        }
    return {
        **pooled,
        "fields": sum(r["fields"] for r in parts),
        "slides": len(parts),
        "per_slide_f1": [r["f1"] for r in parts],
        "per_slide_mpp": [r["mpp"] for r in parts],
        "seconds": round(sum(r["seconds"] for r in parts), 1),
    }


def main(argv=None) -> int:
    import torch

    from leukcore.detect import Detector
    from leukcore.train.datasets import data_root

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["wbc-stardist"])
    ap.add_argument("--data", default=None)
    ap.add_argument("--limit", type=int, default=None, help="fields per set (default all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-restain", action="store_true")
    ap.add_argument("--only", nargs="+", default=None, help="score only these sets (names as printed)")
    ap.add_argument(
        "--restain-per-slide",
        action="store_true",
        help="also <set>-restained-slides: one stain per mosaic (restained_slides), counts pooled",
    )
    ap.add_argument(
        "--sweep-prob",
        nargs="+",
        type=float,
        default=None,
        help="also count at these probability thresholds (one run at the lowest; per-threshold worst and mean)",
    )
    ap.add_argument(
        "--reference",
        choices=["derived", "adjudicated"],
        default="derived",
        help="four-class truth: the authors' colour-threshold masks, or those masks adjudicated by a reviewer "
        "(benchmarks/references/four-class-val-adjudicated.json; --limit 60); results keyed <model>@<sha>+adjudicated",
    )
    ap.add_argument(
        "--min-cell-um",
        type=float,
        default=None,
        help="score with this smallest cell (um across) instead of the card's (results keyed ...@mincell<UM>)",
    )
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = Path(a.data) if a.data else data_root()
    sets = load_sets(data, a.limit, a.reference)
    base = dict(sets)
    if not a.no_restain:
        sets.update({f"{k}-restained": restained(v) for k, v in base.items()})
    if a.restain_per_slide:
        sets.update({f"{k}-restained-slides": restained_slides(v) for k, v in base.items()})
    if a.only:
        sets = {k: v for k, v in sets.items() if k in a.only}
    out = Path(a.out)
    allres = json.loads(out.read_text()) if out.exists() else {}
    for m in a.models:
        det = Detector.load(m)
        if a.min_cell_um is not None:
            det.card.setdefault("input", {})["min_cell_um"] = a.min_cell_um
        res = {
            "model": det.card.get("name"),
            "version": det.card.get("version"),
            "weights_sha256": det.card.get("weights", {}).get("sha256"),
            "protocol": "mosaic of whole fields per set, pixel size estimated (no --mpp), one-to-one matching",
            "sets": {},
        }
        for name, pairs in sets.items():
            known = KNOWN_MPP.get(name.split("-restained")[0])
            if name.endswith("-slides"):
                res["sets"][name] = score_slides(det, pairs, fallback_mpp=known, sweep=a.sweep_prob)
            else:
                res["sets"][name] = score(det, pairs, fallback_mpp=known, sweep=a.sweep_prob)
            r = res["sets"][name]
            print(
                f"{m:28} {name:28} P {r['precision']:.3f} R {r['recall']:.3f} F1 {r['f1']:.3f} "
                f"(n_gt {r['n_gt']}, mpp {r.get('mpp') or float('nan'):.3f} {r.get('mpp_source', 'per slide')})",
                flush=True,
            )
        res["worst"] = min(((k, v["f1"]) for k, v in res["sets"].items()), key=lambda kv: kv[1])
        if a.sweep_prob:
            res["sweep"] = _sweep_table(res["sets"])
        key = f"{res['model']}@{(res['weights_sha256'] or '')[:12]}" + (
            "+adjudicated" if a.reference != "derived" else ""
        )
        key += f"@mincell{a.min_cell_um:g}" if a.min_cell_um is not None else ""
        allres[key] = {**allres.get(key, {}), **res, "sets": {**allres.get(key, {}).get("sets", {}), **res["sets"]}}
        print(f"{m}: worst set {res['worst'][0]} F1 {res['worst'][1]:.3f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(allres, indent=1, default=float))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _sweep_table(sets: dict) -> dict:
    """Per threshold: F1 of every set, the worst and the mean (printed as a short table)."""
    out = {}
    for t in next(iter(sets.values()))["sweep"]:
        f1 = {k: v["sweep"][t]["f1"] for k, v in sets.items()}
        out[t] = {"f1": f1, "worst": min(f1.values()), "mean": round(float(np.mean(list(f1.values()))), 4)}
        print(
            f"prob >= {t:5}  worst {out[t]['worst']:.3f}  mean {out[t]['mean']:.3f}  "
            + " ".join(f"{k}={v:.3f}" for k, v in f1.items())
        )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
