"""The detector's data helpers under their earlier address: every name here lives in a module named for it.

:mod:`leukcore.detect.colour`
    the glass colour and the nucleated-cell purple of a field (:func:`background_color`, :func:`purple_measure`)
:mod:`leukcore.detect.inputs`
    the detector's input, at inference and in training (:func:`normalize_image`, :func:`field_input`)
:mod:`leukcore.detect.images`
    image files and pixel sizes (:func:`read_rgb`, :func:`resize_to_mpp`)
:mod:`leukcore.detect.public_sets`
    the public sets on disk (:func:`default_data_dir`, :func:`bccd_split`, :func:`bccd_boxes`, :func:`folder_mpp`, ...)
:mod:`leukcore.detect.masks`
    the instance masks derived from them (:class:`TrainItem`, :func:`fourclass_item`, :func:`ignore_fragments`)
:mod:`leukcore.detect.corpus`
    the training run's draws and the images it never saw (:func:`load_training_items`, :func:`pbc_heldout_items`)

Inference code imports the first three directly, never this module (the import-linter contract
"detector inference never imports the training data" in ``pyproject.toml``); old imports of these names keep working.
"""

from __future__ import annotations

from .colour import background_color, purple_measure
from .corpus import BCCD_TRAIN_SPLITS, load_training_items, pbc_heldout_items
from .images import read_rgb, resize_to_mpp
from .inputs import field_input, normalize_image
from .masks import TrainItem, fourclass_item, ignore_fragments
from .public_sets import (
    FOUR_CLASSES,
    PBC_WBC,
    bccd_boxes,
    bccd_class_errors,
    bccd_split,
    dedup,
    default_data_dir,
    folder_mpp,
)

__all__ = [
    "default_data_dir",
    "TrainItem",
    "load_training_items",
    "folder_mpp",
    "background_color",
    "normalize_image",
    "field_input",
    "bccd_boxes",
    "bccd_split",
    "resize_to_mpp",
    "purple_measure",
    "pbc_heldout_items",
    "read_rgb",
    "bccd_class_errors",
    "fourclass_item",
    "ignore_fragments",
    "dedup",
    "PBC_WBC",
    "FOUR_CLASSES",
    "BCCD_TRAIN_SPLITS",
]
