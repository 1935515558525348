"""The record of a detector training run: the card's ``training`` section and the ``leuk train-detector`` command
that reproduces it (:func:`leukcore.detect.train.train_detector` writes both).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["AUGMENTATION_NOTES", "train_command", "training_record"]


#: the card's ``training.augmentation`` per recipe
AUGMENTATION_NOTES = {
    "mild": "scale +-20%, crop/pad, flips, 90-degree rotations, HED + HSV stain jitter, blur, noise",
    "strong": "strong: scale 0.6-1.67x (log-uniform), crop/pad, flips, 90-degree rotations, "
    "region-wise Romanowsky re-colouring in optical density (red cells and debris to "
    "pale pink / pink-red / deep red / orange / brown / grey-blue / violet-grey, white "
    "cells blue to magenta, pale to dark), glass tints (green, yellow, blue, warm), "
    "uneven illumination, HED / hue / saturation / gamma jitter, defocus blur, noise, "
    "JPEG q25-90",
    "mixed": "mixed: each patch gets the strong recipe with probability 0.5, else the mild one",
}


def training_record(o, info: dict, hist: list, run: dict, init_card: Optional[dict]) -> dict:
    """The card's ``training`` section: data, recipe, run facts and the command that reproduces the run.

    ``run``: the run's ``minutes``, ``device``, ``params`` (network size) and ``command``.
    """
    import platform

    import torch

    c0 = init_card
    notes = {
        "mosaic": f"{o.mosaic:g} of the patches laid out as 2x2 or 3x3 mosaics of fields of one source",
        "wide_scale": f"{o.wide_scale:g} of the mild patches drawn at 0.6-1.67x scale (colour kept)",
        "ignore_found_by": f"four-class cells that {o.ignore_found_by} finds and the masks lack: ignore",
        "map_cell_share": f"colour map statistics take at most 2-{100 * o.map_cell_share:g} % of stained pixels "
        "from labelled cells, as a slide's thumbnail",
        "std_ratio_bounds": f"colour map std-ratio bounds per Lab channel {o.std_ratio_bounds}",
    }
    return {
        "data": info["sources"],
        "excluded": {
            "wbc_masks_zheng2018": "GPL-3.0, evaluation only",
            "pbc/erythroblast": "nucleated red cells: not white cells",
            "bccd test split": "kept for evaluation",
            "bccd val split": "threshold tuning",
        },
        "masks": "derived: four-class Segmented (authors' colour threshold) -> watershed instances "
        "(Pro: own purple/magenta colour mask); BCCD WBC box ellipse + nucleus hull; "
        "PBC centred-cell colour mask; platelet images as negatives",
        "augmentation": AUGMENTATION_NOTES[o.augmentation],
        **{k: v for k, v in notes.items() if getattr(o, k)},
        "steps": len(hist),
        "batch": o.batch,
        "patch": o.size,
        "minutes": run["minutes"],
        "final_loss": float(np.mean([h["loss"] for h in hist[-50:]])) if hist else None,
        "device": run["device"],
        "torch": str(torch.__version__),
        "machine": platform.machine(),
        "params": run["params"],
        "seed": o.seed,
        "lr": o.lr,
        "source_weights": o.source_weights,
        **({"fourclass_ignore_below_um": float(o.train_ignore_below_um)} if o.train_ignore_below_um else {}),
        **(
            {
                "init_from": f"{c0['name']} v{c0.get('version', 1)} (weights sha256 "
                f"{c0.get('weights', {}).get('sha256', '?')[:12]})"
            }
            if c0
            else {}
        ),
        "command": run["command"],
    }


def train_command(data_dir, out_dir, options) -> str:
    """The ``leuk train-detector`` command line that reproduces a run (non-default options only)."""
    from .train import DEFAULT_ARCH, DEFAULT_LR, DEFAULT_SOURCE_WEIGHTS
    from .tuning import VAL_IGNORE_BELOW_UM

    o = options
    cmd = f"leuk train-detector --data {data_dir} -o {out_dir} --minutes {o.minutes} --seed {o.seed}"
    if o.lr != DEFAULT_LR:
        cmd += f" --lr {o.lr:g}"
    for k, v in {**DEFAULT_SOURCE_WEIGHTS, **(o.source_weights or {})}.items():
        if v != DEFAULT_SOURCE_WEIGHTS[k]:
            cmd += f" --source-weight {k}={v:g}"
    if o.channels and list(o.channels) != list(DEFAULT_ARCH["channels"]):
        cmd += " --channels " + " ".join(str(c) for c in o.channels)
    if o.init_from:
        cmd += f" --init-from {o.init_from}"
    if o.train_ignore_below_um:
        cmd += f" --train-ignore-below {float(o.train_ignore_below_um):g}"
    if (o.val_ignore_below_um or 0) != VAL_IGNORE_BELOW_UM:
        cmd += f" --val-ignore-below {float(o.val_ignore_below_um or 0):g}"
    if o.augmentation != "mild":
        cmd += f" --augment {o.augmentation}"
    if o.normalize != "white-balance":
        cmd += f" --normalize {o.normalize}"
    if o.mosaic:
        cmd += f" --mosaic {o.mosaic:g}"
    if o.wide_scale:
        cmd += f" --wide-scale {o.wide_scale:g}"
    if o.ignore_found_by:
        cmd += f" --ignore-found-by {o.ignore_found_by}"
    if o.map_cell_share:
        cmd += f" --map-cell-share {o.map_cell_share:g}"
    if o.std_ratio_bounds is not None:
        from .stain import ratio_bounds

        low = ratio_bounds(o.std_ratio_bounds)[0]  # the upper bounds are 1 (DetectorTrainOptions.checked)
        cmd += " --std-ratio-low " + " ".join(f"{v:g}" for v in low)
    return cmd
