"""The detector's training corpus: which public images a training run draws (seeded, capped per class),
and the PBC images such a run never saw (:func:`pbc_heldout_items`, for validation).

The masks are :mod:`leukcore.detect.masks`; the sets on disk are :mod:`leukcore.detect.public_sets`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .masks import TrainItem, bccd_item, fourclass_field_item, pbc_item
from .public_sets import FOUR_CLASSES, PBC_WBC, bccd_boxes, bccd_split, dedup, folder_mpp

__all__ = ["BCCD_TRAIN_SPLITS", "load_training_items", "pbc_heldout_items"]


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
        it = pbc_item(files[order[k]], m_src, mpp, negative=negative)
        k += 1
        if it is not None:
            out.append(it)
    return out, k


def pbc_heldout_items(
    data_dir, mpp: float = 0.5, *, per_class: int = 60, n_pbc: int = 60, n_platelet: int = 40, seed: int = 0, log=None
) -> list[TrainItem]:
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
    for _ in _fourclass_folders(data_dir, rng):  # advance the generator exactly as training did
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


def load_training_items(
    data_dir,
    mpp: float = 0.5,
    *,
    n_fourclass: int = 300,
    n_pbc: int = 60,
    n_platelet: int = 40,
    seed: int = 0,
    log=None,
    fourclass_ignore_below_um: Optional[float] = None,
) -> tuple[list[TrainItem], dict]:
    """Build the training items (per-class caps keep it quick on CPU).

    ``fourclass_ignore_below_um``: four-class derived-mask instances smaller than a disc this many
    microns across become *ignore* (:func:`~leukcore.detect.masks.ignore_fragments`) rather than cells to learn; the
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
            it = fourclass_field_item(data_dir, cls, f, m_src, mpp, ignore_below_um=fourclass_ignore_below_um)
            if it is not None:
                items.append(it)
                n_ok += 1
        info["sources"][f"four-class/{cls}"] = {
            "mpp_estimated": round(m_src, 4),
            "images": n_ok,
            "mask": "colour" if cls == "Pro" else "Segmented",
        }
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
            it = bccd_item(data_dir, i, m_src, mpp)
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
