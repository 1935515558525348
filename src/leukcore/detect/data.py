"""Training data for the WBC detector, derived honestly from the public sets.

No public set here gives instance masks of whole fields, so masks are derived:

four-class ``Segmented`` (CC BY 4.0)
    The dataset authors' colour-threshold segmentation of the nucleated cells
    (cells on black).  Non-black pixels -> binary mask -> instances by a
    distance-transform watershed; tiny bits dropped; empty images skipped
    (``Segmented/Pro`` is mostly empty).  The input is the matching ``Original``.
BCCD ``train`` split (MIT)
    Inside each WBC box: the inscribed ellipse (the box is the cell's loose
    bounding box) united with the convex hull of the purple nucleus pixels.
    ``val`` is kept for threshold tuning and ``test`` for evaluation.
PBC single cells (CC BY 4.0)
    Centred cell: purple nucleus near the centre plus the surrounding
    non-background pixels within a disc scaled to the nucleus.  ``erythroblast``
    (nucleated red cells, not white cells, yet present in the four-class masks)
    is left out; ``platelet`` images are used as negatives (no target).

``wbc_masks_zheng2018`` (GPL) is never used here (evaluation only).

Every image is brought to the working pixel size with a per-folder pixel size
estimated by :func:`leukcore.mpp.estimate_mpp` (median over the folder).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["default_data_dir", "TrainItem", "load_training_items", "folder_mpp", "background_color",
           "normalize_image", "field_input", "bccd_boxes", "bccd_split", "resize_to_mpp", "purple_measure",
           "pbc_heldout_items"]

PBC_WBC = ["basophil", "eosinophil", "ig", "lymphocyte", "monocyte", "neutrophil"]
FOUR_CLASSES = ["Benign", "Early", "Pre", "Pro"]


def default_data_dir() -> Path:
    """:func:`leukcore.paths.data_dir`: ``$LEUK_DATA`` or ``<repo>/../shared/data``."""
    from ..paths import data_dir

    return data_dir()


def read_rgb(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def background_color(img: np.ndarray) -> np.ndarray:
    """RGB of the bright background (median of the brightest 10 % of pixels), float32 (3,)."""
    a = np.asarray(img)
    sub = a[:: max(1, a.shape[0] // 256), :: max(1, a.shape[1] // 256)].reshape(-1, 3).astype(np.float32)
    g = sub.mean(axis=1)
    sel = sub[g >= np.percentile(g, 90)]
    bg = np.median(sel, axis=0) if len(sel) else np.full(3, 255.0, np.float32)
    return np.clip(bg, 96.0, 255.0).astype(np.float32)


def normalize_image(img: np.ndarray, bg: Optional[np.ndarray] = None, stain=None) -> np.ndarray:
    """The detector's input: white-balanced to the background colour, float32 (H, W, 3) in about [0, 1.2].

    With ``stain`` (a :class:`leukcore.detect.stain.StainNormalizer`, the slide's colour map) the
    white-balanced stained pixels are also moved to the model's colour template (in [0, 1]).
    """
    if stain is not None:
        return stain(img)
    if bg is None:
        bg = background_color(img)
    return np.clip(img.astype(np.float32) / np.asarray(bg, np.float32).reshape(1, 1, 3), 0.0, 1.25)


def field_input(img: np.ndarray, template: Optional[np.ndarray] = None, bg: Optional[np.ndarray] = None) -> np.ndarray:
    """The detector's input for one in-memory field or training patch: its own glass colour and, with a
    stain ``template`` (a card's, :attr:`Detector.stain_template`), its own stain statistics.
    """
    bg = background_color(img) if bg is None else bg
    if template is None:
        return normalize_image(img, bg)
    from .stain import StainNormalizer

    return StainNormalizer.for_image(img, bg, template, use_lut=False)(img)


def purple_measure(img: np.ndarray) -> np.ndarray:
    """Nucleated-cell (Romanowsky purple) measure: high blue-minus-green on a dark pixel, float32."""
    a = img.astype(np.float32)
    bg = background_color(img)
    a = a / bg.reshape(1, 1, 3) * 255.0
    bmg = a[..., 2] - a[..., 1]
    dark = 255.0 - a[..., 1]
    return np.minimum(bmg, dark)


def resize_to_mpp(img: np.ndarray, src_mpp: float, dst_mpp: float, order: int = 1) -> np.ndarray:
    """Resample ``img`` (H, W[, C]) from ``src_mpp`` to ``dst_mpp``."""
    from skimage.transform import resize

    f = src_mpp / dst_mpp
    shape = (max(1, int(round(img.shape[0] * f))), max(1, int(round(img.shape[1] * f))))
    if order == 0:
        return resize(img, shape + img.shape[2:], order=0, preserve_range=True, anti_aliasing=False).astype(img.dtype)
    out = resize(img, shape + img.shape[2:], order=order, preserve_range=True, anti_aliasing=f < 1)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def folder_mpp(files, n: int = 40) -> float:
    """Median pixel size of a folder of fields, from red cells (``method="rbc"``).

    Training and tuning data are scaled with this; it stays the red-cell ruler (a folder median of
    many fields is accurate) so the detector's training data never depend on a learned model.
    """
    from ..mpp import MppError, estimate_mpp

    vals = []
    for f in list(files)[:n]:
        try:
            vals.append(estimate_mpp(read_rgb(f), method="rbc").mpp)
        except MppError:
            pass
    if not vals:
        raise ValueError(f"cannot estimate the pixel size of {Path(list(files)[0]).parent}")
    return float(np.median(vals))


def _instances_from_binary(mask: np.ndarray, min_area: int, min_dist: int) -> np.ndarray:
    """Binary mask -> instance labels (distance-transform watershed), small bits dropped."""
    from scipy import ndimage as ndi
    from skimage import measure, morphology, segmentation
    from skimage.feature import peak_local_max

    mask = ndi.binary_fill_holes(ndi.binary_opening(mask, iterations=1))
    mask = morphology.remove_small_objects(mask, max_size=min_area)
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    edt = ndi.distance_transform_edt(mask)
    edt = ndi.gaussian_filter(edt, 1.0)
    cc = measure.label(mask)
    pk = peak_local_max(edt, min_distance=min_dist, labels=cc, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(pk.T)] = np.arange(1, len(pk) + 1)
    lab = segmentation.watershed(-edt, markers, mask=mask)
    # components without a marker keep their connected-component label
    missing = (lab == 0) & mask
    if missing.any():
        extra = measure.label(missing)
        lab[missing] = extra[missing] + lab.max()
    lab = morphology.remove_small_objects(lab, max_size=min_area) if lab.max() > 1 else lab * (lab.sum() > min_area)
    lab, _, _ = segmentation.relabel_sequential(lab)
    return lab.astype(np.int32)


@dataclass
class TrainItem:
    """One image at the working pixel size with its instance labels."""

    image: np.ndarray      # (H, W, 3) uint8
    labels: np.ndarray     # (H, W) int32, 0 = background
    source: str            # "four-class", "bccd", "pbc", "pbc-platelet"
    name: str


def bccd_split(data_dir, split: str) -> list[str]:
    """Image ids of a BCCD split (``train``, ``val``, ``test``: ``ImageSets/Main/<split>.txt``)."""
    p = Path(data_dir) / "bccd" / "BCCD" / "ImageSets" / "Main" / f"{split}.txt"
    return [s.strip() for s in p.read_text().split() if s.strip()]


def bccd_boxes(data_dir, image_id: str, kind: str = "WBC") -> np.ndarray:
    """(N, 4) int boxes (y0, x0, y1, x1) of ``kind`` in one BCCD image (zero-area boxes dropped)."""
    import xml.etree.ElementTree as ET

    root = ET.parse(Path(data_dir) / "bccd" / "BCCD" / "Annotations" / f"{image_id}.xml").getroot()
    out = []
    for obj in root.iter("object"):
        if obj.findtext("name", "").strip() != kind:
            continue
        bb = obj.find("bndbox")
        x0, y0, x1, y1 = (int(float(bb.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax"))
        if x1 > x0 and y1 > y0:
            out.append((y0, x0, y1, x1))
    return np.asarray(out, dtype=np.int64).reshape(-1, 4)


def bccd_class_errors(data_dir, image_ids) -> dict:
    """``Platelets`` boxes of white-cell size in the given BCCD images: white cells boxed under the wrong class.

    A platelet box counts as a white cell when its area reaches the 1st percentile of the training
    split's WBC boxes (10,252 px2; the largest other platelet box in the dataset is 5,530 px2).  The
    rule reads the annotations only.  Returns ``{image_id: (N, 4) boxes (y0, x0, y1, x1)}`` for the
    images that have any (in the public set: BloodImage_00133, train, and 00135, test).
    """
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for i in bccd_split(data_dir, "train") for b in bccd_boxes(data_dir, i)]
    if not areas:
        return {}
    wbc_sized = float(np.percentile(areas, 1))
    out = {}
    for i in image_ids:
        pl = bccd_boxes(data_dir, i, "Platelets")
        big = pl[(pl[:, 2] - pl[:, 0]) * (pl[:, 3] - pl[:, 1]) >= wbc_sized]
        if len(big):
            out[i] = big
    return out


def _bccd_item(data_dir, image_id: str, mpp_src: float, mpp: float) -> Optional[TrainItem]:
    from skimage.draw import ellipse
    from skimage.morphology import convex_hull_image

    img = read_rgb(Path(data_dir) / "bccd" / "BCCD" / "JPEGImages" / f"{image_id}.jpg")
    boxes = bccd_boxes(data_dir, image_id)
    lab = np.zeros(img.shape[:2], np.int32)
    pm = purple_measure(img)
    for i, (y0, x0, y1, x1) in enumerate(boxes, 1):
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        ry, rx = 0.45 * (y1 - y0), 0.45 * (x1 - x0)
        m = np.zeros(img.shape[:2], bool)
        rr, cc = ellipse(cy, cx, ry, rx, shape=m.shape)
        m[rr, cc] = True
        nuc = np.zeros_like(m)
        nuc[y0:y1, x0:x1] = pm[y0:y1, x0:x1] > 40
        if nuc.sum() > 50:
            m |= convex_hull_image(nuc)
        lab[m & (lab == 0)] = i
    img_w = resize_to_mpp(img, mpp_src, mpp)
    lab_w = resize_to_mpp(lab, mpp_src, mpp, order=0)
    return TrainItem(img_w, lab_w, "bccd", image_id)


def _pbc_item(path, mpp_src: float, mpp: float, negative: bool) -> Optional[TrainItem]:
    from scipy import ndimage as ndi
    from skimage import measure

    img = read_rgb(path)
    H, W = img.shape[:2]
    lab = np.zeros((H, W), np.int32)
    if not negative:
        pm = purple_measure(img)
        nuc = ndi.binary_opening(pm > 40, iterations=2)
        cc = measure.label(nuc)
        props = measure.regionprops(cc)
        if not props:
            return None
        cy, cx = H / 2, W / 2
        central = [p for p in props if np.hypot(p.centroid[0] - cy, p.centroid[1] - cx) < 0.25 * min(H, W)
                   and p.area > 200]
        if not central:
            return None
        others = [p for p in props if p not in central and p.area > 0.3 * max(c.area for c in central)]
        if others:
            return None  # another nucleated cell in view: its mask would be missing
        nmask = np.isin(cc, [p.label for p in central])
        ys, xs = np.nonzero(nmask)
        ncy, ncx = ys.mean(), xs.mean()
        r_nuc = np.sqrt(nmask.sum() / np.pi)
        yy, xx = np.mgrid[:H, :W]
        disc = (yy - ncy) ** 2 + (xx - ncx) ** 2 < (1.45 * r_nuc + 1.5 / mpp_src) ** 2
        rgb = img.astype(np.float32)
        bg = background_color(img)
        diff = np.sqrt(((rgb - bg) ** 2).sum(axis=2))
        fg = diff > 35
        cell = (fg & disc) | nmask
        cell = ndi.binary_fill_holes(ndi.binary_opening(cell, iterations=2))
        cc2 = measure.label(cell)
        keep = np.unique(cc2[nmask])
        cell = np.isin(cc2, keep[keep > 0])
        lab[cell] = 1
    img_w = resize_to_mpp(img, mpp_src, mpp)
    lab_w = resize_to_mpp(lab, mpp_src, mpp, order=0)
    return TrainItem(img_w, lab_w, "pbc-platelet" if negative else "pbc", Path(path).name)


def _ignore_irregular(lab: np.ndarray, min_solidity: float = 0.8) -> np.ndarray:
    """Mark ragged (low-solidity) instances as ignore (-1): fragmentary threshold masks."""
    from skimage import measure

    out = lab.copy()
    for r in measure.regionprops(lab):
        if r.solidity < min_solidity:
            out[lab == r.label] = -1
    return out


def fourclass_item(orig, seg, mpp_src: float, mpp: float, use_colour: bool = False,
                    ignore_below_um: Optional[float] = None) -> Optional[TrainItem]:
    """One four-class field: authors' ``Segmented`` mask, or (``use_colour``) a purple/magenta colour mask.

    The colour mask (``min(B - G, R - G) > 20`` after white balance) is used for ``Pro``,
    whose ``Segmented`` images are mostly empty or miss the pale cells.
    The burned-in scale bar (lower-right corner) is marked ignore (-1), and with
    ``ignore_below_um`` so are instances smaller than a disc that many microns across
    (:func:`ignore_fragments`).
    """
    img = read_rgb(orig)
    if use_colour:
        a = img.astype(np.float32) / background_color(img).reshape(1, 1, 3) * 255.0
        mask = np.minimum(a[..., 2] - a[..., 1], a[..., 0] - a[..., 1]) > 20
    else:
        s = read_rgb(seg)
        if s.shape[:2] != img.shape[:2]:
            return None
        mask = s.astype(np.int32).sum(axis=2) > 60
    H, W = mask.shape
    mask[int(0.88 * H):, int(0.78 * W):] = False
    if mask.mean() < 0.005:
        return None  # empty segmentation (most of Segmented/Pro)
    img_w = resize_to_mpp(img, mpp_src, mpp)
    m_w = resize_to_mpp(mask.astype(np.uint8), mpp_src, mpp, order=0) > 0
    min_area = int(np.pi * (2.0 / mpp) ** 2)          # < 4 um across: debris, platelets
    lab = _instances_from_binary(m_w, min_area=min_area, min_dist=max(3, int(3.0 / mpp)))
    if lab.max() == 0:
        return None
    lab = _ignore_irregular(lab)
    h, w = lab.shape
    lab[int(0.86 * h):, int(0.74 * w):] = -1
    if ignore_below_um:
        from .model import disc_area_px

        lab = ignore_fragments(lab, disc_area_px(ignore_below_um, mpp))
    return TrainItem(img_w, lab, "four-class", Path(orig).name)


def ignore_fragments(labels: np.ndarray, min_area_px: float) -> np.ndarray:
    """Mark instances smaller than ``min_area_px`` as *ignore* (-1): neither a cell to find nor a
    false positive when detected.  Existing ignore pixels stay ignore; a copy is returned.
    """
    lab = np.array(labels, copy=True)
    ids, counts = np.unique(lab[lab > 0], return_counts=True)
    small = ids[counts < min_area_px]
    if len(small):
        lab[np.isin(lab, small)] = -1
    return lab


def dedup(files) -> list:
    """Drop byte-identical files (keep the first by name)."""
    seen, out = set(), []
    for f in sorted(files):
        h = hashlib.sha1(Path(f).read_bytes()).hexdigest()
        if h not in seen:
            seen.add(h)
            out.append(f)
    return out


def _fourclass_folders(data_dir: Path, rng):
    """Per four-class folder: ``(cls, files, pixel-size sample, order)``, drawing from ``rng``.

    The one place the training run's four-class draws are made, so that
    :func:`pbc_heldout_items` can replay them exactly.
    """
    for cls in FOUR_CLASSES:
        files = dedup((data_dir / "all4class" / "Original" / cls).glob("*.jpg"))
        if files:
            yield cls, files, rng.permutation(files)[:40], rng.permutation(len(files))


def _pbc_folders(data_dir: Path, rng):
    """Per PBC folder: ``(cls, files, negative, pixel size, order)``, drawing the order from ``rng``."""
    for cls in PBC_WBC + ["platelet"]:
        files = dedup((data_dir / "pbc" / cls).glob("*.jpg"))
        if files:
            yield cls, files, cls == "platelet", folder_mpp(files[:30]), rng.permutation(len(files))


def _pbc_walk(files, order, n: int, m_src: float, mpp: float, negative: bool, start: int = 0):
    """Items from ``files`` taken in ``order`` from ``start`` until ``n`` are usable.

    Returns the items and the position in ``order`` after the last file examined, so that a
    caller can tell which files the training run never looked at (:func:`pbc_heldout_items`).
    """
    out, k = [], start
    while k < len(order) and len(out) < n:
        it = _pbc_item(files[order[k]], m_src, mpp, negative=negative)
        k += 1
        if it is not None:
            out.append(it)
    return out, k


def pbc_heldout_items(data_dir, mpp: float = 0.5, *, per_class: int = 60, n_pbc: int = 60,
                      n_platelet: int = 40, seed: int = 0, log=None) -> list[TrainItem]:
    """PBC images a detector trained by :func:`load_training_items` (same caps, same seed) never saw.

    The training run draws its PBC images in a seeded random order and stops once it has enough;
    this replays exactly those draws (every four-class and PBC draw, in order) and takes the next
    ``per_class`` usable images of each class after the training run's stopping point.  White-cell
    images keep their one centred-cell mask (images with a second nucleated cell in view are
    skipped, as in training); ``platelet`` images are negatives (all background), so every
    detection on them counts as a false positive.  Validation of split cells (two detections
    on one cell) and of platelets / debris, the two error kinds the BCCD boxes cannot measure
    (their validation split has one false positive at the shipped thresholds).
    """
    data_dir = Path(data_dir)
    rng = np.random.default_rng(seed)
    say = log or (lambda *a: None)
    for _ in _fourclass_folders(data_dir, rng):     # advance the generator exactly as training did
        pass
    out: list[TrainItem] = []
    for cls, files, neg, m_src, order in _pbc_folders(data_dir, rng):
        _, stop = _pbc_walk(files, order, n_platelet if neg else n_pbc, m_src, mpp, neg, start=0)
        held, _ = _pbc_walk(files, order, per_class, m_src, mpp, neg, start=stop)
        out += held
        say(f"pbc {cls}: {len(held)} held-out images (training stopped at {stop} of {len(files)})")
    return out


#: the BCCD splits a detector trains on (``val`` tunes the thresholds, ``test`` evaluates)
BCCD_TRAIN_SPLITS = ("train",)


def load_training_items(data_dir, mpp: float = 0.5, *, n_fourclass: int = 300, n_pbc: int = 60,
                        n_platelet: int = 40, seed: int = 0, log=None,
                        fourclass_ignore_below_um: Optional[float] = None) -> tuple[list[TrainItem], dict]:
    """Build the training items (per-class caps keep it quick on CPU).

    ``fourclass_ignore_below_um``: four-class derived-mask instances smaller than a disc this many
    microns across become *ignore* (:func:`ignore_fragments`) rather than cells to learn; the
    draws are the same either way.

    Returns the items and a dict describing sources and their estimated pixel sizes.
    """
    data_dir = Path(data_dir)
    rng = np.random.default_rng(seed)
    items: list[TrainItem] = []
    info: dict = {"mpp": mpp, "sources": {}}
    say = log or (lambda *a: None)

    for cls, files, mpp_files, order in _fourclass_folders(data_dir, rng):
        m_src = folder_mpp(mpp_files)
        picked = [files[i] for i in order]
        n_ok = 0
        for f in picked:
            if n_ok >= n_fourclass:
                break
            it = fourclass_item(f, data_dir / "all4class" / "Segmented" / cls / Path(f).name, m_src, mpp,
                                 use_colour=(cls == "Pro"), ignore_below_um=fourclass_ignore_below_um)
            if it is not None:
                items.append(it)
                n_ok += 1
        info["sources"][f"four-class/{cls}"] = {"mpp_estimated": round(m_src, 4), "images": n_ok,
                                                "mask": "colour" if cls == "Pro" else "Segmented"}
        say(f"four-class {cls}: {n_ok} images at estimated {m_src:.3f} um/px")

    bccd_splits = BCCD_TRAIN_SPLITS
    bccd_ids = [i for s in bccd_splits for i in bccd_split(data_dir, s)]
    if bccd_ids:
        jpgs = [data_dir / "bccd" / "BCCD" / "JPEGImages" / f"{i}.jpg" for i in bccd_ids]
        m_src = folder_mpp(jpgs[:40])
        n_ok = 0
        for i in bccd_ids:
            if len(bccd_boxes(data_dir, i)) == 0:
                continue
            it = _bccd_item(data_dir, i, m_src, mpp)
            if it is not None:
                items.append(it)
                n_ok += 1
        info["sources"]["bccd"] = {"mpp_estimated": round(m_src, 4), "images": n_ok, "splits": list(bccd_splits)}
        say(f"bccd: {n_ok} images at estimated {m_src:.3f} um/px")

    for cls, files, neg, m_src, order in _pbc_folders(data_dir, rng):
        got, _ = _pbc_walk(files, order, n_platelet if neg else n_pbc, m_src, mpp, neg)
        items += got
        n_ok = len(got)
        info["sources"][f"pbc/{cls}"] = {"mpp_estimated": round(m_src, 4), "images": n_ok, "negative": neg}
        say(f"pbc {cls}: {n_ok} images at estimated {m_src:.3f} um/px")
    return items, info
