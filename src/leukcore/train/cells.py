"""Images -> per-cell crops, with the same crop code as inference.

Field images (several cells, e.g. the four-class set) are turned into per-cell crops with the
project's own detector (:func:`leukcore.detect.detect_cells` on ``Slide.from_array(field, mpp)``);
every crop takes its field's label.  Single-cell images (PBC, C-NMC) use the detection nearest the
image centre (within ``centre_um``), else the image centre.

Finders are callables ``finder(image, mpp, row) -> (centroids (K, 2), polygons list)``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..classify.crops import crops_from_array
from ..classify.geometry import CropSpec

__all__ = [
    "detector_finder",
    "segmented_finder",
    "centre_finder",
    "build_cell_set",
    "load_image",
    "cell_cache_dir",
    "cell_set_key",
]


def load_image(path: str) -> np.ndarray:
    """RGB uint8 array of an image file (clear error naming the file)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:
        raise ValueError(f"{path}: cannot read image: {e}") from None


def _box(y, x, r=2.0):
    return np.array([[y - r, x - r], [y - r, x + r], [y + r, x + r], [y + r, x - r]], np.float32)


def centre_finder(image, mpp, row=None):
    """The image centre (single-cell images whose cell is centred by construction)."""
    H, W = image.shape[:2]
    return np.array([[H / 2.0, W / 2.0]]), [_box(H / 2.0, W / 2.0, min(H, W) / 4)]


def detector_finder(
    detector="wbc-stardist", device="cpu", single_cell: Optional[bool] = None, centre_um: float = 6.0, **detect_kw
) -> Callable:
    """A finder running the project's detector; ``single_cell`` rows keep the detection nearest the centre.

    ``single_cell=None`` decides per row from ``row['kind'] == 'cell'``.
    """
    from ..detect import Detector, detect_cells
    from ..io.slide import Slide

    det = Detector.load(detector, device=device) if isinstance(detector, str) else detector
    detect_kw.setdefault("tile_size", 256)  # fields are small: one small tile, no padding to 1024

    def find(image, mpp, row=None):
        slide = Slide.from_array(np.ascontiguousarray(image), mpp=mpp)
        t = detect_cells(slide, det, device=device, **detect_kw)
        c = t.df[["centroid_y", "centroid_x"]].to_numpy(np.float64)
        polys = list(t.df["polygon"])
        single = single_cell if single_cell is not None else (row is not None and row.get("kind") == "cell")
        if single:
            H, W = image.shape[:2]
            ctr = np.array([H / 2.0, W / 2.0])
            if len(c):
                d = np.hypot(*(c - ctr).T)
                j = int(np.argmin(d))
                if d[j] * mpp <= centre_um:
                    return c[j : j + 1], [polys[j]]
            return centre_finder(image, mpp)
        return c, polys

    card = getattr(det, "card", {}) or {}
    t, i = card.get("thresholds", {}) or {}, card.get("input", {}) or {}
    # everything that changes the cells found: thresholds, pixel size, sizes, and the input normalisation
    # (wbc-stardist v4 reads the v3 weights through a stain normalisation: same weights, other cells)
    thr = hashlib.sha256(
        json.dumps(
            [t.get("prob"), t.get("nms"), i.get("mpp"), i.get("min_cell_um"), i.get("max_cell_um"), detect_kw]
            + ([i["normalization"]] if "reinhard" in str(i.get("normalization")) else []),
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:8]
    find.name = f"detector:{card.get('name', 'custom')}:{card.get('weights', {}).get('sha256', '')[:12]}:{thr}"
    return find


def segmented_finder(original_root: str, segmented_root: str, min_um2: float = 20.0) -> Callable:
    """Development finder: connected components of the dataset authors' ``Segmented`` images."""
    from scipy import ndimage as ndi

    def find(image, mpp, row):
        if row.get("kind") == "cell" or str(original_root) not in str(row["path"]):
            return centre_finder(image, mpp)  # single-cell images (PBC): the centred cell
        seg_path = str(row["path"]).replace(str(original_root), str(segmented_root))
        seg = load_image(seg_path)
        fg = ndi.binary_opening(seg.max(-1) > 30, iterations=1)
        lab, n = ndi.label(fg)
        if n == 0:
            return np.zeros((0, 2)), []
        idx = np.arange(1, n + 1)
        area = ndi.sum(fg, lab, idx)
        keep = idx[area * mpp * mpp >= min_um2]
        cents = np.array(ndi.center_of_mass(fg, lab, keep)).reshape(-1, 2)
        return cents, [_box(y, x, 3) for y, x in cents]

    find.name = "segmented-cc"
    return find


def cell_cache_dir() -> Path:
    """Folder of the cached cell crops of training runs (under the user cache dir)."""
    from ..classify.onnx_backend import cache_dir

    return cache_dir() / "cells"


def _find_file(finder, mpp, row, cache_root) -> Optional[Path]:
    name = getattr(finder, "name", None)
    if cache_root is None or not name or not row.get("sha256"):
        return None
    safe = hashlib.sha256(f"{name}|{mpp}|{row.get('kind')}".encode()).hexdigest()[:16]
    return Path(cache_root) / f"finds-{safe}" / f"{row['sha256'][:32]}.npz"


def _find_cached(finder, img, mpp, row, cache_root, only_cached: bool = False):
    """Run ``finder`` on one image, caching its cells per image hash (shared between configs).

    With ``only_cached`` an image without cached cells returns ``None`` (not run).
    """
    f = _find_file(finder, mpp, row, cache_root)
    if f is None:
        return finder(img, mpp, row)
    if f.exists():
        z = np.load(f)
        polys = np.split(z["pts"], z["offsets"][1:-1]) if len(z["offsets"]) > 1 else []
        return z["centroids"], polys
    if only_cached:
        return None
    c, polys = finder(img, mpp, row)
    c = np.asarray(c, np.float64).reshape(-1, 2)
    polys = [np.asarray(p, np.float32).reshape(-1, 2) for p in polys]
    offsets = np.cumsum([0] + [len(p) for p in polys])
    f.parent.mkdir(parents=True, exist_ok=True)
    from ..results import atomic_path

    with atomic_path(f) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh, centroids=c, pts=np.concatenate(polys) if polys else np.zeros((0, 2), np.float32), offsets=offsets
            )
    return c, polys


def precompute_cells(df, finder: Callable, *, order=("test", "val", "train"), cache=None, progress=True) -> int:
    """Run ``finder`` over the images of ``df`` (split order: held-out first), filling the per-image cache.

    Lets a slow detector run ahead of training; returns the number of images processed.
    """
    d = cell_cache_dir() if cache in (None, "auto") else Path(cache)
    rows = df.to_dict("records")
    if "split" in df:
        rank = {s: i for i, s in enumerate(order)}
        rows = sorted(rows, key=lambda r: rank.get(r["split"], len(order)))
    it = rows
    if progress:
        from tqdm import tqdm

        it = tqdm(rows, desc="detect", unit="img", mininterval=10)
    n = 0
    for r in it:
        f = _find_file(finder, float(r["mpp"]), r, d)
        if f is not None and f.exists():
            continue
        _find_cached(finder, load_image(r["path"]), float(r["mpp"]), r, d)
        n += 1
    return n


def build_cell_set(
    df,
    spec: CropSpec,
    finder: Callable,
    *,
    cache: Optional[str | os.PathLike] = "auto",
    max_cells_per_image: int = 30,
    progress: bool = True,
    only_cached: bool = False,
) -> dict:
    """Per-cell crops of every image in ``df`` (rows need ``path`` and ``mpp``; cut at ``crop_mpp`` where given).

    Returns
    -------
    dict
        ``crops`` uint8 (N, S, S, 3), ``row`` int (N,) row position in ``df``, ``centroid`` (N, 2) in image
        pixels, ``n_cells`` int (len(df),) cells found per image.  Cached as ``.npz`` keyed by the images'
        hashes, the crop spec and the finder's name.
    """
    key = cell_set_key(df, spec, finder, max_cells_per_image, only_cached)
    path = None
    if cache:
        d = cell_cache_dir() if cache == "auto" else Path(cache)
        path = d / f"cells-{key}.npz"
        if path.exists():
            z = np.load(path)
            return {k: z[k] for k in z.files}
    crops, rows, cents, ncell = [], [], [], np.zeros(len(df), int)
    ncached = np.ones(len(df), bool)
    it = range(len(df))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="cells", unit="img", mininterval=5)
    records = df.to_dict("records")
    for i in it:
        r = records[i]
        img = load_image(r["path"])
        mpp = float(r["mpp"]) if r.get("mpp") == r.get("mpp") and r.get("mpp") else spec.default_mpp
        if not mpp:
            raise ValueError(f"{r['path']}: no pixel size (mpp) for this image")
        found = _find_cached(
            finder,
            img,
            mpp,
            r,
            path.parent if path is not None else (cell_cache_dir() if only_cached else None),
            only_cached=only_cached,
        )
        if found is None:
            ncached[i] = False
            continue
        c, polys = found
        c = np.asarray(c, np.float64).reshape(-1, 2)[:max_cells_per_image]
        polys = list(polys)[:max_cells_per_image]
        ncell[i] = len(c)
        if not len(c):
            continue
        cut = r.get("crop_mpp")  # data.crop_mpp: estimated (leukcore.train.scales): cells found at mpp, cut at this
        cut = float(cut) if cut is not None and cut == cut and cut > 0 else mpp
        crops.append(crops_from_array(img, c, spec, cut, polygons=polys))
        rows.append(np.full(len(c), i))
        cents.append(c)
    S = spec.size
    out = {
        "crops": np.concatenate(crops) if crops else np.zeros((0, S, S, 3), np.uint8),
        "row": np.concatenate(rows) if rows else np.zeros(0, int),
        "centroid": np.concatenate(cents) if cents else np.zeros((0, 2)),
        "n_cells": ncell,
        "found": ncached,
    }
    if path is not None and ncached.all():
        _save_cell_set(path, out)
    return out


def cell_set_key(df, spec: CropSpec, finder, max_cells_per_image: int, only_cached: bool) -> str:
    """The cache key of a cell set: the images' hashes and pixel sizes, the crop geometry, the finder."""
    geom = {k: v for k, v in spec.to_card().items() if k in ("size", "crop_um", "mask")}  # not the input mode
    return hashlib.sha256(
        json.dumps(
            {
                "h": list(df["sha256"]),
                "spec": geom,
                "only_cached": only_cached,
                "mpp": [float(m) if m == m else None for m in df["mpp"]],
                "finder": getattr(finder, "name", repr(finder)),
                **({"crop_mpp": [float(m) for m in df["crop_mpp"]]} if "crop_mpp" in df else {}),
                "max": max_cells_per_image,
            }
        ).encode()
    ).hexdigest()[:20]


def _save_cell_set(path: Path, out: dict) -> None:
    """Write a cell set's ``.npz`` atomically."""
    from ..results import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **out)
