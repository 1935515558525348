"""The training and test sources of the pixel-size network (:mod:`leukcore.mpp_train`): each source's
folder pixel size, its files split by content hash, its images decoded and pre-reduced.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Optional

import numpy as np

from .hashing import sha256_file

__all__ = ["SOURCE_MPP", "SOURCES", "BASE_MPP_MIN", "WIDE_RANGE", "source_files", "read_source_image", "load_source"]

#: folder pixel sizes (um/px): medians of the red-cell estimate over each folder
#: (four-class and PBC: leukcore.train.datasets.ALL4CLASS_MPP / PBC_MPP; BCCD: the training split's)
SOURCE_MPP = {"four-class": 0.535, "bccd": 0.092, "pbc": 0.108}
SOURCES = tuple(SOURCE_MPP)
#: finest pixel size kept in memory for the fine sources (BCCD, PBC are pre-reduced to it)
BASE_MPP_MIN = 0.11
WIDE_RANGE = (0.1, 1.2)


def _is_test(sha: str) -> bool:
    return int(sha[:8], 16) % 5 == 0


def _sample_names() -> set:
    from . import sample as _s

    root = Path(_s.__file__).parent / "data" / "sample"
    return {p.name for p in root.rglob("*.jpg")}


def source_files(data, source: str, split: str) -> list:
    """Deduplicated image paths of one source and split (``train`` or ``test``)."""
    data = Path(data)
    if source == "bccd":
        from .detect.public_sets import bccd_split

        ids = bccd_split(data, "test") if split == "test" else bccd_split(data, "train") + bccd_split(data, "val")
        files = [data / "bccd" / "BCCD" / "JPEGImages" / f"{i}.jpg" for i in ids]
        return [f for f in files if f.exists()]
    if source == "four-class":
        files = sorted((data / "all4class" / "Original").glob("*/*.jpg"))
    elif source == "pbc":
        files = sorted((data / "pbc").glob("*/*.jpg"))
    elif source == "zheng":
        if split != "test":
            raise ValueError("zheng2018 is evaluation only")
        return sorted((data / "wbc_masks_zheng2018" / "Dataset 1").glob("*.bmp"))
    else:
        raise ValueError(f"unknown source {source!r}; known: {SOURCES}")
    sample = _sample_names()
    seen, out = set(), []
    for f in files:
        h = sha256_file(f)
        if h in seen:
            continue
        seen.add(h)
        test = _is_test(h) or f.name in sample
        if test == (split == "test"):
            out.append(f)
    return out


def read_source_image(path, source: str) -> np.ndarray:
    """Decoded RGB field; four-class fields get their scale bar painted over."""
    if source == "four-class":
        from PIL import Image

        from .sample import render_field

        with Image.open(path) as im:
            h, w = im.size[1], im.size[0]
        return render_field(str(path), h, w, True)
    from .detect.images import read_rgb

    return read_rgb(path)


def load_source(
    data,
    source: str,
    split: str = "train",
    limit: Optional[int] = None,
    cache_dir: Optional[Path] = None,
    seed: int = 0,
):
    """``(images, mpp)``: decoded images of a source at its base pixel size (fine sources reduced to 0.11)."""
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"{source}-{split}-{limit}.pkl"
        if cache.exists():
            with open(cache, "rb") as f:
                return pickle.load(f)
    files = source_files(data, source, split)
    if limit and len(files) > limit:
        rng = np.random.default_rng(seed)
        files = [files[i] for i in sorted(rng.choice(len(files), limit, replace=False))]
    m = SOURCE_MPP[source]
    base = max(m, BASE_MPP_MIN)
    from .mpp_net import resize_image

    imgs = [resize_image(read_source_image(f, source), m / base) for f in files]
    out = (imgs, base)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(cache, "wb") as f:
            pickle.dump(out, f)
    return out
