"""One image at a time (a field or a single-cell crop), detected and classified: the rule behind
``leuk classify``, ``leuk explain`` and the web demo.  Like :mod:`leukcore.pipeline` (whole slides),
this is where detection and classification meet.

Rule for an image (kind ``auto``, the default):

1. the pixel size is the one given (``mpp``), else estimated (``leukcore.mpp.estimate_mpp``; the
   record's ``mpp_reliable`` is false, with ``mpp_reason``, when the estimate should not be trusted);
2. with a pixel size, the detector finds the white cells and each is classified from its crop;
   the image's label comes from **all** its cells by the model card's field rule (``inference``:
   test-time augmentation and ``mean_prob`` / ``mean_log_prob`` aggregation, chosen on the
   validation split; default: mean probability without TTA); ``n_cells`` is reported;
3. when no pixel size can be found or no cell is detected, the image is taken as one cell crop
   (C-NMC / PBC style) and classified whole, resized to the model's input (``rule: whole-image``).

Kind ``cell`` forces rule 3 (centre crop of the model's crop size when a pixel size is given);
kind ``field`` forces rule 2 (an image with no detected cell gets no label: ``null`` in JSON).

Before any of this, an image is refused (a ``SlideError`` naming the file, before decoding) when a side
is 0, its aspect ratio exceeds 20:1 or it has more than 5e7 pixels (a whole slide: use ``leuk analyze``),
and it gets **no label** (``label: null`` with a ``reason`` in the JSON, ``rule: "refused"``) when it
is blank, black, white or grey (near-uniform: fewer than 0.2 % of its pixels differ from the median
colour by more than 16) or pixel noise: such an image is not a blood smear and
holds no cell, and no class is claimed for it.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = [
    "classify_image",
    "find_cells",
    "load_field",
    "check_field_geometry",
    "image_problem",
    "MAX_FIELD_PIXELS",
    "MAX_FIELD_ASPECT",
    "letterbox",
]

#: largest image (pixels) classified as one field / crop; bigger ones are slides (``leuk analyze``)
MAX_FIELD_PIXELS = 5e7
#: longest / shortest side beyond which an image cannot be a microscope field or a cell crop
MAX_FIELD_ASPECT = 20.0
#: an image where fewer than UNIFORM_FRACTION of the pixels differ from the median colour by more than
#: UNIFORM_RANGE (any channel) is near-uniform (a small cell on black, 0.5 % of a segmented crop, is not)
UNIFORM_RANGE = 16.0
UNIFORM_FRACTION = 0.002
#: mean |neighbour difference| / standard deviation above which an image is pixel noise
NOISE_RATIO = 0.9


def check_field_geometry(path, height: int, width: int) -> None:
    """Refuse sizes that cannot be a field or a cell crop (from the header, before decoding)."""
    from .io.errors import DegenerateImageError, EmptySlideError, SlideTooLargeError

    H, W = int(height), int(width)
    if H <= 0 or W <= 0:
        raise EmptySlideError(path, f"zero-sized image ({W} x {H})")
    if H * W > MAX_FIELD_PIXELS:
        raise SlideTooLargeError(
            path,
            f"{W} x {H} = {H * W:.3g} px is larger than a field or cell crop "
            f"({MAX_FIELD_PIXELS:.3g} px); analyse whole slides with `leuk analyze`",
        )
    r = max(H, W) / min(H, W)
    if r > MAX_FIELD_ASPECT:
        raise DegenerateImageError(
            path,
            f"{W} x {H} px: aspect ratio {r:.0f}:1 exceeds "
            f"{MAX_FIELD_ASPECT:.0f}:1, not a microscope field or cell crop",
        )


def load_field(path) -> tuple:
    """``(rgb uint8 image, warnings)`` of an image file, through :func:`leukcore.io.open_slide` (header
    checks, special files, missing tiles, conversion rules) and :func:`check_field_geometry`.
    """
    from .io import open_slide

    with open_slide(path) as s:
        H, W = s.shape
        check_field_geometry(path, H, W)
        s.check_missing()
        img = s.read_region(0, 0, 0, H, W)
        return img, list(s.warnings)


def image_problem(img: np.ndarray) -> Optional[str]:
    """Why an image cannot be a blood-smear field or cell crop (near-uniform, pixel noise), else ``None``."""
    a = np.asarray(img)
    if a.size == 0:
        return "empty image"
    step = max(1, int(max(a.shape[:2]) // 1024))
    sub = a[::step, ::step].reshape(-1, a.shape[2] if a.ndim == 3 else 1).astype(np.float32)
    med = np.median(sub, axis=0)
    off = float((np.abs(sub - med).max(axis=1) > UNIFORM_RANGE).mean())
    if off < UNIFORM_FRACTION:
        what = (
            "black"
            if med.max() < 40
            else "white"
            if med.min() > 215
            else "grey"
            if float(med.max() - med.min()) < 12
            else "one colour"
        )
        return (
            f"near-uniform {what} image ({100 * off:.2f} % of pixels differ from the median colour by more "
            f"than {UNIFORM_RANGE:.0f}): no cell found, not a blood smear"
        )
    H, W = a.shape[:2]
    c = a[max(0, H // 2 - 256) : H // 2 + 256, max(0, W // 2 - 256) : W // 2 + 256].astype(np.float32)
    g = c.mean(axis=2) if c.ndim == 3 else c
    sd = float(g.std())
    if g.shape[0] > 8 and g.shape[1] > 8 and sd > 0:
        d = 0.5 * (float(np.abs(np.diff(g, axis=0)).mean()) + float(np.abs(np.diff(g, axis=1)).mean()))
        if d / sd > NOISE_RATIO:
            return (
                f"pixel noise (neighbouring pixels as different as any two: ratio {d / sd:.2f}): "
                "no cell found, not a blood smear"
            )
    return None


def find_cells(
    image: np.ndarray, mpp: Optional[float], detector="wbc-stardist", device="auto", info: Optional[dict] = None
):
    """``(table, mpp, mpp_source)`` of the white cells of an in-memory image (empty table if no mpp).

    ``info`` (a dict, optional) receives ``reliable`` and ``reason`` of an estimated pixel size.
    """
    from .detect import detect_cells
    from .io.slide import Slide
    from .loader import load_detector
    from .results import CellTable

    det = detector if not isinstance(detector, str) else load_detector(detector, device=device)
    source = "user" if mpp else None
    if not mpp:
        from .detect.scale import estimate_slide_mpp
        from .mpp import MppError

        try:
            est = estimate_slide_mpp(image, det)  # a ruler disagreement settled by the detector
        except MppError:  # nothing to measure: the image is classified whole (a bug still raises)
            return CellTable(), None, None
        mpp, source = float(est.mpp), "estimated"
        if info is not None:
            info.update(reliable=bool(est.reliable), reason=est.reason)
    slide = Slide.from_array(np.ascontiguousarray(image), mpp=mpp)
    return detect_cells(slide, det, device=device), mpp, source


def _why(mpp_info: dict) -> dict:
    return {"mpp_reason": mpp_info["reason"]} if mpp_info.get("reason") else {}


def classify_image(
    path, clf, *, kind: str = "auto", mpp: Optional[float] = None, detector="wbc-stardist", device: str = "auto"
) -> dict:
    """Classify one image by the rule in this module's doc; returns the JSON record.

    ``path``: an image file, or an already decoded ``(Y, X, 3)`` uint8 array (the web demo's
    upload; its record then has no ``path``).
    """
    if mpp is not None:
        from .io.mppcheck import check_user_mpp

        mpp = check_user_mpp(mpp)
    if isinstance(path, np.ndarray):
        img, rec = path, {}
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"expected a (Y, X, 3) uint8 image, got shape {img.shape} dtype {img.dtype}")
        check_field_geometry("image", img.shape[0], img.shape[1])
    else:
        img, warns = load_field(path)
        rec = {"path": str(path)}
        if warns:
            rec["warnings"] = warns
    why = image_problem(img)
    if why:
        rec.update(
            label=None,
            probabilities={c: None for c in clf.classes},
            rule="refused",
            reason=why,
            n_cells=0,
            mpp=mpp,
            mpp_source="user" if mpp else None,
        )
        return rec
    if kind in ("auto", "field"):
        mpp_info = {"reliable": True} if mpp else {}
        table, m, src = find_cells(img, mpp, detector, device, info=mpp_info)
        if len(table):
            rec.update(
                _cells_record(img, table, clf, m),
                mpp_source=src,
                mpp_reliable=mpp_info.get("reliable"),
                **_why(mpp_info),
            )
            return _review(rec, clf)
        if kind == "field":
            rec.update(
                label=None,
                probabilities={c: None for c in clf.classes},
                rule="no-cells",
                n_cells=0,
                reason="no white cell detected",
                mpp=m,
                mpp_source=src,
                mpp_reliable=mpp_info.get("reliable"),
                **_why(mpp_info),
            )
            return rec
    rec.update(_one_cell_record(img, clf, mpp))
    return _review(rec, clf)


def _cells_record(img: np.ndarray, table, clf, mpp: float) -> dict:
    """The field's call from its detected cells (the card's field rule: TTA and aggregation)."""
    from .classify.crops import extract_crops
    from .classify.fields import aggregate_cells, field_rule
    from .io.slide import Slide

    slide = Slide.from_array(np.ascontiguousarray(img), mpp=mpp)
    fr = field_rule(clf.card)
    probs, ood = _predict(clf, extract_crops(slide, table, clf), fr["tta"])
    # cells unlike the training cells (OOD) give no evidence; a field of only such cells goes to review
    familiar = np.ones(len(probs), bool) if ood is None or ood.all() else ~ood
    p = aggregate_cells(probs[familiar], fr["field_aggregation"])
    per_cell = [clf.classes[i] for i in probs.argmax(1)]
    rule = "mean-over-cells" if fr["field_aggregation"] == "mean_prob" else "mean-log-prob-over-cells"
    return dict(
        label=clf.classes[int(p.argmax())],
        probabilities={c: round(float(v), 6) for c, v in zip(clf.classes, p, strict=False)},
        rule=rule + (f"+tta-{fr['tta']}" if fr["tta"] else ""),
        n_cells=int(len(table)),
        cell_counts={c: per_cell.count(c) for c in clf.classes},
        mpp=mpp,
        **({} if ood is None else {"n_cells_ood": int(ood.sum()), "ood": bool(ood.all())}),
    )


def _predict(clf, crops, tta):
    """``(probabilities, OOD flags or None)``: flags for a model card with OOD statistics."""
    t = getattr(clf, "ood_threshold", None)
    if t is None:
        return clf.predict_crops(crops, tta=tta), None
    probs, scores = clf.predict_crops_ood(crops, tta=tta)
    return probs, np.asarray(scores > t, bool)


def _one_cell_record(img: np.ndarray, clf, mpp: Optional[float]) -> dict:
    """The image as one cell: its centre crop at ``mpp``, else the whole image letterboxed."""
    from .classify.crops import resize_rgb
    from .io.slide import Slide

    if mpp:
        side = int(round(clf.spec.side_px(mpp)))
        H, W = img.shape[:2]
        region = Slide.from_array(np.ascontiguousarray(img), mpp=mpp).read_region(
            0, H // 2 - side // 2, W // 2 - side // 2, side, side
        )
        crop, rule = resize_rgb(region, clf.spec.size), "centre-crop"
    else:
        crop, rule = letterbox(img, clf.spec.size), "whole-image"
    p, ood = _predict(clf, crop[None], None)
    p = p[0]
    return dict(
        label=clf.classes[int(p.argmax())],
        probabilities={c: round(float(v), 6) for c, v in zip(clf.classes, p, strict=False)},
        rule=rule,
        n_cells=1,
        mpp=mpp,
        mpp_source="user" if mpp else None,
        mpp_reliable=True if mpp else None,
        **({} if ood is None else {"ood": bool(ood[0])}),
    )


#: the label of an image the model is not sure about (CellaVision's "unidentified")
REVIEW_LABEL = "review"


def _review(rec: dict, clf) -> dict:
    """Below the card's calibrated confidence, or (a card with OOD statistics) when every cell of the image
    is unlike the model's training cells, the image goes to ``review``, never silently to a class.

    ``model_label`` keeps the model's own call and ``review`` says whether it was held back; the
    threshold is :attr:`Classifier.review_threshold` (chosen on validation data).
    """
    from .classify.infer import review_rule
    from .results import held_for_review

    probs = [v for v in (rec.get("probabilities") or {}).values() if v is not None]
    if rec.get("label") is None or not probs:
        return rec
    t, tb = review_rule(clf)
    rec["model_label"] = rec["label"]
    one_cell = int(rec.get("n_cells") or 0) <= 1
    rec["review"] = bool(held_for_review([max(probs)], [rec["label"]], t, tb, one_cell)[0])
    if "ood" in rec:  # a model with OOD statistics: say why (an image of only unfamiliar cells: "ood")
        rec["review_reason"] = "ood" if rec["ood"] else ("low_confidence" if rec["review"] else None)
        rec["review"] = bool(rec["review"] or rec["ood"])
    rec["review_threshold"] = round(float(t), 4)
    if tb is not None:
        rec["blast_threshold"] = round(float(tb), 4)
    if rec["review"]:
        rec["label"] = REVIEW_LABEL
    return rec


def letterbox(img, size: int) -> np.ndarray:
    """``(size, size, 3)``: the image scaled so its longer side is ``size``, centred on its corner colour
    (never allocates more than the output: no ``max(H, W)``-sided square).
    """
    from PIL import Image

    H, W = img.shape[:2]
    f = size / max(H, W)
    h, w = max(1, min(size, int(round(H * f)))), max(1, min(size, int(round(W * f))))
    small = np.asarray(
        Image.fromarray(np.ascontiguousarray(img)).resize((w, h), Image.BOX if f < 1 else Image.BILINEAR)
    )
    out = np.empty((size, size, 3), np.uint8)
    out[...] = img[0, 0]
    out[(size - h) // 2 : (size - h) // 2 + h, (size - w) // 2 : (size - w) // 2 + w] = small
    return out
