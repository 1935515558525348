"""A reviewer's corrections of a slide's results: data beside the results, undo / redo, reviewed tables.

A person verifies the model's calls (the napari gallery, or any code) and moves wrong cells to their class,
or to ``review`` (*unidentified*: a cell nobody can call).  The corrections are data, saved beside the
results as ``corrections.parquet`` (atomically, on every change), one row per corrected cell:

=====================  ========  ====================================================================
column                 type      meaning
=====================  ========  ====================================================================
``cell_id``            int64     the cell (``cells.parquet`` ``cell_id``)
``centroid_y/_x``      float64   its centroid, level-0 px (checks the id still names the same cell)
``model_label``        str       the model's call when the correction was made
``reviewer_label``     str       the reviewer's class, or ``review`` (unidentified)
``reviewer``           str       who
``time``               str       when (ISO 8601, UTC)
``slide``              str       slide file name
``slide_path``         str       slide path as analysed (training re-reads crops from it)
``slide_fingerprint``  str       sha256 of the slide's content fingerprint (size + content hashes)
``model``              str       classifier name
``model_sha256``       str       classifier weights sha256 (as read by the run)
``results_digest``     str       the run's ``provenance.digest`` (input + settings + models)
=====================  ========  ====================================================================

so a correction is tied to what it corrects: a folder re-analysed with other classifier weights or from
another slide content, or whose cell ids no longer name the same cells (centroid, model's call), refuses its old
corrections (:class:`CorrectionsError`) rather than applying them to other cells.  A re-run of the same slide
content with the same weights (the cells are deterministic) keeps its review, wherever the slide now lies.

Python use::

    from leukcore.corrections import Corrections, apply_corrections

    rev = Corrections.open("out/", reviewer="jdoe")      # restores corrections.parquet when present
    rev.set([12, 40], "ALL")                            # one undoable step; saved at once
    rev.set([7], "review")                              # unidentified
    rev.undo(); rev.redo()
    reviewed = rev.reviewed()                           # CellTable: label/review = the reviewed call
    reviewed.summary()["blast_percent"]                 # over confidently classified (not review) cells

The reviewed table (:func:`apply_corrections`) keeps both calls for every cell: ``model_label`` /
``model_review`` (the model's label and its low-confidence flag), ``reviewer_label`` (the reviewer's class
or ``review``; None where the reviewer left the model's call), and ``label`` / ``review`` set to the reviewed
result: the reviewer's class where given (``review`` False), else the model's call.  A cell the reviewer
marked ``review`` keeps the model's label in ``label`` with ``review`` True, so counts and the blast
percentage come from :class:`~leukcore.results.CellTable` exactly as for the model's calls (review cells are
out of the blast percentage's numerator and denominator).

The package: :mod:`.files` (the file format, reading, writing, what a correction is tied to, the reviewed
table), :mod:`.state` (:class:`Corrections`, the editable state with undo / redo), :mod:`.folders` (results
folders, corrections as training data).
"""

from __future__ import annotations

from .files import (
    COLUMNS,
    CORRECTIONS_NAME,
    REVIEW_LABEL,
    Correction,
    CorrectionsError,
    apply_corrections,
    corrections_context,
    corrections_digest,
    empty_corrections_frame,
    now_iso,
    read_corrections,
    slide_key,
    write_corrections,
)
from .folders import SLIDE_CELL_KIND, correction_crops, find_corrections_folders, load_reviewed, training_rows
from .state import Corrections, review_groups

__all__ = [
    "CORRECTIONS_NAME",
    "REVIEW_LABEL",
    "COLUMNS",
    "Correction",
    "Corrections",
    "CorrectionsError",
    "apply_corrections",
    "read_corrections",
    "write_corrections",
    "corrections_digest",
    "slide_key",
    "now_iso",
    "find_corrections_folders",
    "load_reviewed",
    "training_rows",
    "correction_crops",
    "review_groups",
    "SLIDE_CELL_KIND",
    "empty_corrections_frame",
    "corrections_context",
]
