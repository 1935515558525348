"""One image at a time (a field or a single-cell crop), detected and classified: the rule behind
``leuk classify``, ``leuk explain`` and the web demo.  Like :mod:`leukcore.pipeline` (whole slides),
this is where detection and classification meet.

Rule for an image (kind ``auto``, the default):

1. the pixel size is the one given (``mpp``), else estimated from the red cells
   (``leukcore.mpp.estimate_mpp``);
2. with a pixel size, the detector finds the white cells and each is classified from its crop;
   the image's label comes from **all** its cells by the model card's field rule (``inference``:
   test-time augmentation and ``mean_prob`` / ``mean_log_prob`` aggregation, chosen on the
   validation split; default: mean probability without TTA); ``n_cells`` is reported;
3. when no pixel size can be found or no cell is detected, the image is taken as one cell crop
   (C-NMC / PBC style) and classified whole, resized to the model's input (``rule: whole-image``).

Kind ``cell`` forces rule 3 (centre crop of the model's crop size when a pixel size is given);
kind ``field`` forces rule 2 (an image with no detected cell gets no label: ``null`` in JSON).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["classify_image", "find_cells"]


def find_cells(image: np.ndarray, mpp: Optional[float], detector="wbc-stardist", device="auto"):
    """``(table, mpp, mpp_source)`` of the white cells of an in-memory image (empty table if no mpp)."""
    from .io.slide import Slide
    from .results import CellTable

    source = "user" if mpp else None
    if not mpp:
        try:
            from .mpp import estimate_mpp
            mpp = float(estimate_mpp(image).mpp)
            source = "estimated"
        except Exception:
            return CellTable(), None, None
    from .detect import detect_cells
    det = detector if not isinstance(detector, str) else _detector(detector, device)
    slide = Slide.from_array(np.ascontiguousarray(image), mpp=mpp)
    return detect_cells(slide, det, device=device), mpp, source


_DETECTORS: dict = {}


def _detector(name, device):
    from .detect import Detector
    key = (name, device)
    if key not in _DETECTORS:
        _DETECTORS[key] = Detector.load(name, device=device)
    return _DETECTORS[key]


def classify_image(path, clf, *, kind: str = "auto", mpp: Optional[float] = None,
                   detector="wbc-stardist", device: str = "auto") -> dict:
    """Classify one image by the rule in this module's doc; returns the JSON record.

    ``path``: an image file, or an already decoded ``(Y, X, 3)`` uint8 array (the web demo's
    upload; its record then has no ``path``).
    """
    from .classify.crops import extract_crops, resize_rgb
    from .io.slide import Slide
    from .train.cells import load_image

    if isinstance(path, np.ndarray):
        img, rec = path, {}
    else:
        img, rec = load_image(path), {"path": str(path)}
    if kind in ("auto", "field"):
        table, m, src = find_cells(img, mpp, detector, device)
        if len(table):
            slide = Slide.from_array(np.ascontiguousarray(img), mpp=m)
            from .classify.fields import aggregate_cells, field_rule
            fr = field_rule(clf.card)
            probs = clf.predict_crops(extract_crops(slide, table, clf), tta=fr["tta"])
            p = aggregate_cells(probs, fr["field_aggregation"])
            per_cell = [clf.classes[i] for i in probs.argmax(1)]
            rule = "mean-over-cells" if fr["field_aggregation"] == "mean_prob" else "mean-log-prob-over-cells"
            rec.update(label=clf.classes[int(p.argmax())],
                       probabilities={c: round(float(v), 6) for c, v in zip(clf.classes, p)},
                       rule=rule + (f"+tta-{fr['tta']}" if fr["tta"] else ""), n_cells=int(len(table)),
                       cell_counts={c: per_cell.count(c) for c in clf.classes}, mpp=m, mpp_source=src)
            return rec
        if kind == "field":
            rec.update(label=None, probabilities={c: None for c in clf.classes}, rule="no-cells", n_cells=0,
                       mpp=m, mpp_source=src)
            return rec
    if mpp:
        side = int(round(clf.spec.side_px(mpp)))
        H, W = img.shape[:2]
        region = Slide.from_array(np.ascontiguousarray(img), mpp=mpp).read_region(
            0, H // 2 - side // 2, W // 2 - side // 2, side, side)
        crop, rule = resize_rgb(region, clf.spec.size), "centre-crop"
    else:
        crop, rule = resize_rgb(_square(img), clf.spec.size), "whole-image"
    p = clf.predict_crops(crop[None])[0]
    rec.update(label=clf.classes[int(p.argmax())], probabilities={c: round(float(v), 6) for c, v in zip(clf.classes, p)},
               rule=rule, n_cells=1, mpp=mpp, mpp_source="user" if mpp else None)
    return rec


def _square(img):
    H, W = img.shape[:2]
    s = max(H, W)
    out = np.zeros((s, s, 3), np.uint8)
    out[...] = img[0, 0]
    out[(s - H) // 2:(s - H) // 2 + H, (s - W) // 2:(s - W) // 2 + W] = img
    return out
