"""The public sets on disk, read as they are: where they live, the class folders, BCCD's splits and boxes,
duplicate files, and a folder's pixel size.

Nothing here derives masks (:mod:`leukcore.detect.masks`) or draws a training set (:mod:`leukcore.detect.corpus`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .images import read_rgb

__all__ = [
    "PBC_WBC",
    "FOUR_CLASSES",
    "default_data_dir",
    "bccd_split",
    "bccd_boxes",
    "bccd_class_errors",
    "dedup",
    "folder_mpp",
]

PBC_WBC = ["basophil", "eosinophil", "ig", "lymphocyte", "monocyte", "neutrophil"]
FOUR_CLASSES = ["Benign", "Early", "Pre", "Pro"]


def default_data_dir() -> Path:
    """:func:`leukcore.paths.data_dir`: ``$LEUK_DATA`` or ``<repo>/../shared/data``."""
    from ..paths import data_dir

    return data_dir()


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


def dedup(files) -> list:
    """Drop byte-identical files (keep the first by name)."""
    seen, out = set(), []
    for f in sorted(files):
        h = hashlib.sha1(Path(f).read_bytes()).hexdigest()
        if h not in seen:
            seen.add(h)
            out.append(f)
    return out


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
