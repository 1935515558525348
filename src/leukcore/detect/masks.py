"""Instance masks for training the WBC detector, derived honestly from the public sets.

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

Every image is brought to the working pixel size from its folder's pixel size
(:func:`leukcore.detect.public_sets.folder_mpp`); which images are drawn is
:mod:`leukcore.detect.corpus`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .colour import background_color, purple_measure
from .images import read_rgb, resize_to_mpp
from .public_sets import bccd_boxes

__all__ = [
    "TrainItem",
    "bccd_item",
    "pbc_item",
    "fourclass_item",
    "fourclass_field_item",
    "ignore_fragments",
    "ignore_found",
    "ignore_unlabelled",
]


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

    image: np.ndarray  # (H, W, 3) uint8
    labels: np.ndarray  # (H, W) int32, 0 = background
    source: str  # "four-class", "bccd", "pbc", "pbc-platelet"
    name: str


def bccd_item(data_dir, image_id: str, mpp_src: float, mpp: float) -> Optional[TrainItem]:
    """One BCCD image at ``mpp``: each WBC box's inscribed ellipse united with its nucleus's convex hull."""
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


def pbc_item(path, mpp_src: float, mpp: float, negative: bool) -> Optional[TrainItem]:
    """One PBC image at ``mpp``: the centred cell's mask (``None`` when unusable); ``negative``: all background."""
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
        central = [
            p for p in props if np.hypot(p.centroid[0] - cy, p.centroid[1] - cx) < 0.25 * min(H, W) and p.area > 200
        ]
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


def fourclass_field_item(
    data_dir, cls: str, orig, mpp_src: float, mpp: float, ignore_below_um: Optional[float] = None
) -> Optional[TrainItem]:
    """:func:`fourclass_item` of a field of class folder ``cls``: its ``Segmented`` twin, the colour mask for Pro."""
    seg = Path(data_dir) / "all4class" / "Segmented" / cls / Path(orig).name
    return fourclass_item(orig, seg, mpp_src, mpp, use_colour=(cls == "Pro"), ignore_below_um=ignore_below_um)


def fourclass_item(
    orig, seg, mpp_src: float, mpp: float, use_colour: bool = False, ignore_below_um: Optional[float] = None
) -> Optional[TrainItem]:
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
    mask[int(0.88 * H) :, int(0.78 * W) :] = False
    if mask.mean() < 0.005:
        return None  # empty segmentation (most of Segmented/Pro)
    img_w = resize_to_mpp(img, mpp_src, mpp)
    m_w = resize_to_mpp(mask.astype(np.uint8), mpp_src, mpp, order=0) > 0
    min_area = int(np.pi * (2.0 / mpp) ** 2)  # < 4 um across: debris, platelets
    lab = _instances_from_binary(m_w, min_area=min_area, min_dist=max(3, int(3.0 / mpp)))
    if lab.max() == 0:
        return None
    lab = _ignore_irregular(lab)
    h, w = lab.shape
    lab[int(0.86 * h) :, int(0.74 * w) :] = -1
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


def ignore_unlabelled(labels: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Mark *ignore* (-1) the background pixels of every object in ``found`` (a label image of a detector's cells)
    that does not overlap a labelled instance: a copy.

    The four-class masks are a colour threshold that misses pale-pink and magenta white cells; trained as they are,
    those cells are background to learn.  Where a detector finds a cell the masks lack, the patch says nothing
    there instead (an object touching a labelled instance is left alone: it is that cell, or its neighbour).
    """
    lab = np.array(labels, copy=True)
    for v in np.unique(found[found > 0]):
        obj = found == v
        if not (lab[obj] > 0).any():
            lab[obj & (lab == 0)] = -1
    return lab


def ignore_found(item: TrainItem, detector, mpp: float) -> TrainItem:
    """``item`` with the cells ``detector`` finds on it (at ``mpp``, its working pixel size) and its labels lack
    marked *ignore* (:func:`ignore_unlabelled`).
    """
    from dataclasses import replace

    from ..io import Slide
    from .postprocess import polygons_to_labels
    from .predict import detect_cells

    table = detect_cells(Slide.from_array(item.image, mpp=mpp), detector, progress=None)
    if not len(table):
        return item
    polys = np.stack([np.asarray(p, np.float64) for p in table.df["polygon"]])
    return replace(item, labels=ignore_unlabelled(item.labels, polygons_to_labels(polys, item.labels.shape)))
