"""Grad-CAM of one cell, placed over the slide as an image layer (no Qt)."""

from __future__ import annotations

import numpy as np

from leukcore.results import CellTable

__all__ = ["cell_gradcam", "gradcam_layer_data"]


def cell_gradcam(classifier, slide, table: CellTable, row: int, target=None) -> np.ndarray:
    """Heat map ``(S, S)`` in [0, 1] for row ``row`` of ``table`` (for its predicted class by default)."""
    from leukcore.classify import extract_crops, gradcam

    one = CellTable(table.df.iloc[[int(row)]].copy(), table.meta)
    mpp = table.meta.get("mpp") or slide.mpp
    crops = extract_crops(slide, one, classifier, mpp=mpp)
    return gradcam(classifier, crops, target=target)[0]


def gradcam_layer_data(
    heat: np.ndarray,
    centroid_l0,
    crop_um: float,
    mpp: float,
    layer_scale=(1.0, 1.0),
    layer_translate=(0.0, 0.0),
    name: str = "Grad-CAM",
) -> tuple:
    """Image LayerDataTuple of a heat map covering the ``crop_um`` square centred on a cell.

    ``layer_scale`` / ``layer_translate`` are those of the slide's image layer (world per level-0 px).
    """
    s = np.asarray(layer_scale, dtype=np.float64)[-2:]
    t = np.asarray(layer_translate, dtype=np.float64)[-2:]
    side_l0 = float(crop_um) / float(mpp)
    S = heat.shape[0]
    c = np.asarray(centroid_l0, dtype=np.float64)
    top_left_world = (c - side_l0 / 2.0) * s + t
    px_world = side_l0 / S * s
    return (
        heat.astype(np.float32),
        {
            "name": name,
            "colormap": "turbo",
            "blending": "translucent",
            "opacity": 0.45,
            "contrast_limits": [0.0, 1.0],
            "scale": tuple(px_world),
            "translate": tuple(top_left_world),
            "metadata": {"leuk_gradcam": True},
        },
        "image",
    )
