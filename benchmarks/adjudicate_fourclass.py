"""An adjudicated reference for the four-class validation fields (the detection benchmark's worst set).

The four-class set has no white-cell annotation: its reference is the dataset authors' colour-threshold
segmentation (``Segmented/``), which misses pale-pink and magenta nucleated cells and keeps red-cell and
platelet fragments.  Those errors cap every detector's F1 on ``four-class-val`` (0.84 for each shipped model)
and so the selection rule "choose by the worst held-out set" ends up choosing on the threshold's mistakes.

This script makes the reference a reviewer can check:

``sheets``  renders review sheets of the first ``--limit`` validation fields (2x, numbered): every
            derived-mask instance that a detector at a permissive threshold (``--prob``) does not hit
            (``g<N>``, red) and every such detection that falls outside the derived instances
            (``c<N>``, yellow); agreed instances are outlined in green, ignored fragments in grey.
            Writes ``sheet_<k>.png`` and ``review.json`` (the numbered items' coordinates) to ``--out``.
``apply``   turns a reviewer's decisions (``{"field name": {"drop": ["g3"], "add": ["c1"], "ignore":
            ["c2"]}}``) and the ``review.json`` into the reference file
            ``benchmarks/references/four-class-val-adjudicated.json`` (coordinates, not ids: it does not
            depend on the detector that proposed the items).

A new candidate's own disagreements: ``sheets --model CARD --prob P --against REFERENCE`` (items where it and the
reviewed labels disagree), then ``apply REVIEW DECISIONS --merge`` adds the decisions to the reference.

``drop``: a derived instance that is not a white cell (red cell, platelet, debris, stain) becomes *ignore*;
``add``: a white cell the derived masks missed becomes an instance (a disc of the proposing detection's area);
``ignore``: a region the reviewer cannot call either way is not counted.  An entry may also be ``[y, x, r]``: a cell
that no item marks, read off the sheet (sheet pixels / 3).  :func:`adjudicated_pairs` applies the
reference to the fields (``bench_detect_cross_source.py --reference adjudicated``).

Caveats (say them with every figure): one reviewer, not a haematologist; the items reviewed are those on
which the derived masks and a detector (``wbc-stardist`` v6 at prob 0.3) disagree, so a cell that both
miss is not added and a fragment that both mark is dropped only if the reviewer saw it on the sheet.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "benchmarks" / "references" / "four-class-val-adjudicated.json"


def val_items(data, limit: int):
    """The first ``limit`` four-class validation fields as the detection benchmark lays them out."""
    from leukcore.detect.tuning import fourclass_val_items

    return fourclass_val_items(data, 0.5)[:limit]


def _disc(shape, y: float, x: float, r: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - y) ** 2 + (xx - x) ** 2 <= r * r


def adjudicate(labels: np.ndarray, decision: dict) -> np.ndarray:
    """``labels`` (derived instances, -1 ignore) with one field's reference decision applied.

    ``decision``: ``drop`` points (the instance under each becomes ignore), ``add`` and ``ignore`` discs
    ``[y, x, r]`` (an added disc takes the background and ignored pixels under it and becomes a new instance; the ignored
    fragments of a cell the derived masks missed are part of that cell).
    """
    lab = labels.copy()
    for y, x in decision.get("drop", []):
        v = int(lab[int(round(y)), int(round(x))])
        if v > 0:
            lab[lab == v] = -1
    top = int(max(lab.max(), 0))
    for y, x, r in decision.get("add", []):
        top += 1
        lab[_disc(lab.shape, y, x, r) & (lab <= 0)] = top
    for y, x, r in decision.get("ignore", []):
        lab[_disc(lab.shape, y, x, r) & (lab == 0)] = -1
    return lab


def adjudicated_pairs(data, limit: int, reference: Path = REFERENCE) -> list:
    """``[(field RGB, ("labels", adjudicated labels))]`` of the first ``limit`` validation fields.

    Raises ``ValueError`` when the reference has no decision for one of the fields (a figure on a partly
    adjudicated set would read as adjudicated); a reviewed field with nothing to change has an empty decision.
    """
    ref = json.loads(Path(reference).read_text())
    items = val_items(data, limit)
    missing = [it.name for it in items if it.name not in ref["fields"]]
    if missing:
        raise ValueError(f"{reference}: no decision for {len(missing)} of {len(items)} fields (first: {missing[0]})")
    return [(it.image, ("labels", adjudicate(it.labels, ref["fields"][it.name]))) for it in items]


def _review_items(it, pts: np.ndarray, area: np.ndarray) -> tuple[list, list]:
    """Derived instances no detection hits (``g``) and detections outside every derived instance (``c``)."""
    lab = it.labels
    h, w = lab.shape
    hit, cands = set(), []
    for (y, x), a in zip(pts, area, strict=True):
        v = int(lab[min(int(y), h - 1), min(int(x), w - 1)])
        if v > 0:
            hit.add(v)
        elif v == 0:
            cands.append([round(float(y), 1), round(float(x), 1), round(float(np.sqrt(a / np.pi)), 1)])
    gts = []
    for v in np.unique(lab[lab > 0]):
        if int(v) not in hit:
            yy, xx = np.nonzero(lab == v)
            k = int(np.argmin((yy - yy.mean()) ** 2 + (xx - xx.mean()) ** 2))  # a point inside the instance
            gts.append([int(yy[k]), int(xx[k]), int(len(yy))])
    return gts, cands


def _draw(it, gts: list, cands: list, zoom: int = 3):
    from PIL import Image, ImageDraw, ImageFont
    from skimage.segmentation import find_boundaries

    img = it.image.copy()
    img[find_boundaries(it.labels > 0)] = (0, 170, 0)
    img[find_boundaries(it.labels < 0)] = (150, 150, 150)
    for y, x, _ in gts:
        img[find_boundaries(it.labels == it.labels[y, x])] = (255, 0, 0)
    im = Image.fromarray(img).resize((img.shape[1] * zoom, img.shape[0] * zoom), Image.Resampling.LANCZOS)
    d = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=18)

    def tag(x, y, text, colour):
        box = d.textbbox((x, y), text, font=font)
        d.rectangle(box, fill=(255, 255, 255))
        d.text((x, y), text, fill=colour, font=font)

    for y, x, r in cands:
        d.ellipse([(x - r) * zoom, (y - r) * zoom, (x + r) * zoom, (y + r) * zoom], outline=(255, 160, 0), width=2)
    for g, (y, x, _) in enumerate(gts):
        tag(x * zoom + 8, y * zoom - 10, f"g{g}", (220, 0, 0))
    for c, (y, x, r) in enumerate(cands):
        tag(x * zoom + r * zoom * 0.7, y * zoom - r * zoom * 0.7 - 10, f"c{c}", (200, 100, 0))
    tag(4, 4, it.name, (0, 0, 0))
    return np.asarray(im)


def sheets(
    data, out: Path, limit: int, prob: float, model: str, per_sheet: int = 2, against: Optional[Path] = None
) -> None:
    """Detect the benchmark's mosaic at ``prob`` and render the disagreements, ``per_sheet`` fields a sheet.

    ``against``: a reference file; the disagreements are then with the reviewed labels (a new candidate's own,
    for ``apply --merge``), not with the derived masks.
    """
    from bench_detect_cross_source import mosaic
    from PIL import Image

    from leukcore.detect import Detector, detect_cells
    from leukcore.io import Slide

    items = val_items(data, limit)
    if against is not None:
        from dataclasses import replace

        ref = json.loads(Path(against).read_text())["fields"]
        items = [replace(it, labels=adjudicate(it.labels, ref.get(it.name, {}))) for it in items]
    canvas, offs = mosaic([(it.image, None) for it in items])
    table = detect_cells(Slide.from_array(canvas), Detector.load(model), progress=None, prob_thresh=prob)
    pts = table.df[["centroid_y", "centroid_x"]].to_numpy(np.float64)
    area = table.df["area_px"].to_numpy(np.float64)
    out.mkdir(parents=True, exist_ok=True)
    review, tiles = {"model": model, "prob": prob, "mpp": table.meta.get("mpp"), "fields": {}}, []
    for it, (y0, x0) in zip(items, offs, strict=True):
        h, w = it.image.shape[:2]
        m = (pts[:, 0] >= y0) & (pts[:, 0] < y0 + h) & (pts[:, 1] >= x0) & (pts[:, 1] < x0 + w)
        gts, cands = _review_items(it, pts[m] - [y0, x0], area[m])
        review["fields"][it.name] = {"g": gts, "c": cands}
        if gts or cands:
            tiles.append(_draw(it, gts, cands))
    for s in range(0, len(tiles), per_sheet):
        part = tiles[s : s + per_sheet]
        hh, ww = max(t.shape[0] for t in part), max(t.shape[1] for t in part)
        sheet = np.full((hh, per_sheet * (ww + 8), 3), 255, np.uint8)
        for k, t in enumerate(part):
            sheet[: t.shape[0], k * (ww + 8) : k * (ww + 8) + t.shape[1]] = t
        Image.fromarray(sheet).save(out / f"sheet_{s // per_sheet:02d}.png")
    (out / "review.json").write_text(json.dumps(review, indent=1))
    n_g = sum(len(v["g"]) for v in review["fields"].values())
    n_c = sum(len(v["c"]) for v in review["fields"].values())
    what = "reference" if against is not None else "derived"
    print(f"{len(items)} fields, {len(tiles)} with disagreements: {n_g} {what} instances unhit, {n_c} candidates")


def apply(review_path: Path, decisions_path: Path, reference: Path, note: str, merge: bool = False) -> dict:
    """The reference file from the numbered review and the reviewer's decisions (ids -> coordinates).

    ``merge``: add the decisions to the existing ``reference`` (a review made with ``sheets --against`` it) and
    record the review's model among its proposers.
    """
    review = json.loads(Path(review_path).read_text())
    decisions = json.loads(Path(decisions_path).read_text())
    unknown = sorted(set(decisions) - set(review["fields"]))
    if unknown:
        raise ValueError(f"{decisions_path}: fields not in the review: {unknown[:3]}")
    fields, counts = {}, {"drop": 0, "add": 0, "ignore": 0}
    for name, items in review["fields"].items():
        dec = decisions.get(name, {})
        out = {"drop": [], "add": [], "ignore": []}
        for key in out:
            for ident in dec.get(key, []):
                if isinstance(ident, list):  # a cell no item marks, read off the sheet: [y, x, r]
                    out[key].append([float(v) for v in ident])
                else:
                    kind, k = ident[0], int(ident[1:])
                    y, x, third = items[kind][k]
                    out[key].append(
                        [y, x] if key == "drop" else [y, x, third if kind == "c" else np.sqrt(third / np.pi)]
                    )
                counts[key] += 1
        fields[name] = out
    ref = {
        "about": note,
        "proposed_by": [{"model": review["model"], "prob": review["prob"]}],
        "counts": counts,
        "fields": fields,
    }
    if merge:
        ref = _merged(json.loads(Path(reference).read_text()), ref)
    reference.parent.mkdir(parents=True, exist_ok=True)
    reference.write_text(json.dumps(ref, indent=1, default=float))
    return counts


def _merged(old: dict, new: dict) -> dict:
    """``old`` reference with ``new``'s decisions and proposer added (counts summed)."""
    fields = {k: {key: list(v.get(key, [])) for key in ("drop", "add", "ignore")} for k, v in old["fields"].items()}
    for name, dec in new["fields"].items():
        f = fields.setdefault(name, {"drop": [], "add": [], "ignore": []})
        for key in f:
            f[key] += dec[key]
    proposers = old["proposed_by"] if isinstance(old["proposed_by"], list) else [old["proposed_by"]]
    counts = {k: old["counts"].get(k, 0) + new["counts"][k] for k in new["counts"]}
    about = old["about"] + (f" Then: {new['about']}" if new["about"] else "")
    return {"about": about, "proposed_by": proposers + new["proposed_by"], "counts": counts, "fields": fields}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sheets")
    s.add_argument("--data", default=None)
    s.add_argument("--limit", type=int, default=60)
    s.add_argument("--prob", type=float, default=0.3)
    s.add_argument("--model", default="wbc-stardist")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--against", type=Path, default=None, help="disagreements with this reference's labels")
    a_ = sub.add_parser("apply")
    a_.add_argument("review", type=Path)
    a_.add_argument("decisions", type=Path)
    a_.add_argument("--reference", type=Path, default=REFERENCE)
    a_.add_argument("--note", default="")
    a_.add_argument("--merge", action="store_true", help="add to the existing --reference")
    a = ap.parse_args(argv)
    if a.cmd == "sheets":
        from leukcore.train.datasets import data_root

        sheets(Path(a.data) if a.data else data_root(), a.out, a.limit, a.prob, a.model, against=a.against)
    else:
        print(apply(a.review, a.decisions, a.reference, a.note, merge=a.merge))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
