"""Corrections found in folders: the reviewed results of a folder (:func:`load_reviewed`), folders holding
corrections, and corrections as training rows and crops.  See :mod:`leukcore.corrections`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from ..results import CellTable
from .files import (
    CORRECTIONS_NAME,
    REVIEW_LABEL,
    CorrectionsError,
    apply_corrections,
    check_tied,
    corrections_context,
    corrections_digest,
    read_corrections,
    slide_key,
)

__all__ = ["load_reviewed", "find_corrections_folders", "training_rows", "correction_crops", "SLIDE_CELL_KIND"]


# ------------------------------------------------------------------ folders
def load_reviewed(results: str | os.PathLike) -> tuple[CellTable, CellTable, dict, Any]:
    """``(model table, reviewed table, summary, corrections frame)`` of a results folder.

    The reviewed table is :func:`apply_corrections` of the folder's corrections (the model's calls when there
    are none); raises :class:`CorrectionsError` when the corrections belong to another run.
    """
    from ..export.kinds import read_results

    p = Path(results)
    folder = p if p.is_dir() else p.parent
    table, summary = read_results(p)
    df = read_corrections(folder)
    if table.is_classified:
        check_tied(df, table, corrections_context(table, summary), str(folder / CORRECTIONS_NAME))
        reviewed = apply_corrections(table, df)
    else:
        reviewed = table
    return table, reviewed, summary, df


def find_corrections_folders(root: str | os.PathLike, max_depth: int = 3) -> list[Path]:
    """Results folders holding ``corrections.parquet``: ``root`` itself, or below it (``leuk batch`` output,
    a lab's archive), up to ``max_depth`` levels down; sorted.
    """
    root = Path(root)
    if (root / CORRECTIONS_NAME).is_file():
        return [root]
    out = []
    base = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).parts) - base
        if CORRECTIONS_NAME in filenames:
            out.append(Path(dirpath))
        if depth >= max_depth:
            dirnames[:] = []
        dirnames[:] = [d for d in dirnames if not d.endswith(".zarr") and not d.startswith(".")]
    return sorted(out)


# ------------------------------------------------------------------ corrections as training data
#: ``kind`` of a training row that is one cell of a slide (crop re-read from the slide at its centroid)
SLIDE_CELL_KIND = "slide-cell"


def _resolve_slide(
    folder: Path, table: CellTable, summary: Mapping[str, Any], slides: Optional[str | os.PathLike]
) -> Optional[str]:
    from ..export.kinds import find_results_slide

    p = find_results_slide(folder, table, summary)
    if p is None and slides is not None:
        name = (summary.get("slide") or {}).get("name") or table.meta.get("slide")
        if name and (Path(slides) / name).exists():
            p = str(Path(slides) / name)
    return p


def training_rows(
    root: str | os.PathLike,
    *,
    slides: Optional[str | os.PathLike] = None,
    check_slide: bool = True,
    report: Optional[dict] = None,
):
    """Training rows of every reviewed results folder at or below ``root``: one per corrected cell.

    The label is the reviewer's class; cells the reviewer put in ``review`` are skipped.  Columns are the
    dataset readers' (``path`` = the slide, ``label``, ``source`` = ``corrections``, ``subject`` None,
    ``sha256`` = a key of slide content + cell centroid (byte-identical cells of two folders de-duplicate;
    two labels for one cell conflict), ``group`` = that key, ``kind`` = ``"slide-cell"``, ``mpp`` = the
    results' pixel size) plus ``centroid_y``, ``centroid_x``, ``cell_id``, ``model_label``,
    ``results`` (the folder).  The slide is the one the summary names (or found by name beside the folder or in
    ``slides``); with ``check_slide`` its content fingerprint must equal the one the corrections were made on.

    Raises
    ------
    CorrectionsError
        No corrections below ``root``, a slide not found or changed, corrections of another run.
    """
    import pandas as pd

    folders = find_corrections_folders(root)
    if not folders:
        raise CorrectionsError(f"{root}: no {CORRECTIONS_NAME} at or below this folder (review a results folder first)")
    frames, rep = [], {"folders": [], "cells": 0, "skipped_review": 0}
    for folder in folders:
        frame = _folder_rows(folder, slides, check_slide, rep)
        if frame is not None:
            frames.append(frame)
    if report is not None:
        report.update(rep)
    if not frames:
        raise CorrectionsError(f"{root}: every corrected cell is in {REVIEW_LABEL!r}: nothing to train on")
    return pd.concat(frames, ignore_index=True)


def _folder_rows(folder: Path, slides, check_slide: bool, rep: dict):
    """The training rows of one results folder (None when every correction is ``review``); ``rep`` updated."""
    import pandas as pd

    from ..export.kinds import read_results

    table, summary = read_results(folder)
    df = read_corrections(folder)
    ctx = corrections_context(table, summary)
    check_tied(df, table, ctx, str(folder / CORRECTIONS_NAME))
    keep = df[df["reviewer_label"] != REVIEW_LABEL]
    rep["skipped_review"] += int(len(df) - len(keep))
    if not len(keep):
        return None
    slide = _checked_slide(folder, table, summary, ctx, slides, check_slide)
    mpp = (summary.get("mpp") or {}).get("value") or table.meta.get("mpp")
    if not mpp:
        raise CorrectionsError(f"{folder}: pixel size unknown; crops need it")
    pos = {int(c): i for i, c in enumerate(table.df["cell_id"].to_numpy(np.int64))}
    rows = [pos[int(c)] for c in keep["cell_id"]]
    cy = table.df["centroid_y"].to_numpy(np.float64)[rows]
    cx = table.df["centroid_x"].to_numpy(np.float64)[rows]
    base = ctx.get("slide_fingerprint") or str(Path(slide).resolve())
    keys = [hashlib.sha256(f"{base}|{y:.2f}|{x:.2f}".encode()).hexdigest() for y, x in zip(cy, cx, strict=False)]
    frame = pd.DataFrame(
        {
            "path": str(slide),
            "label": keep["reviewer_label"].astype(str).to_numpy(),
            "source": "corrections",
            "subject": None,
            "sha256": keys,
            "group": keys,
            "kind": SLIDE_CELL_KIND,
            "mpp": float(mpp),
            "centroid_y": cy,
            "centroid_x": cx,
            "cell_id": keep["cell_id"].to_numpy(np.int64),
            "model_label": keep["model_label"].to_numpy(object),
            "results": str(folder),
        }
    )
    rep["folders"].append(
        {
            "results": str(folder),
            "slide": str(slide),
            "cells": int(len(keep)),
            "model": ctx.get("model"),
            "model_sha256": ctx.get("model_sha256"),
            "corrections_sha256": corrections_digest(df),
        }
    )
    rep["cells"] += int(len(keep))
    return frame


def _checked_slide(folder: Path, table, summary, ctx: dict, slides, check_slide: bool):
    """The slide of the results (found; with ``check_slide`` the content the corrections were made on)."""
    from ..provenance import input_fingerprint

    slide = _resolve_slide(folder, table, summary, slides)
    if slide is None:
        raise CorrectionsError(
            f"{folder}: slide {(summary.get('slide') or {}).get('path')} not found "
            "(moved? give its folder as `slides:` in the dataset entry)"
        )
    if check_slide and ctx.get("slide_fingerprint"):
        now = slide_key(input_fingerprint(slide))
        if now != ctx["slide_fingerprint"]:
            raise CorrectionsError(
                f"{folder}: slide {slide} is not the file these results were computed "
                "from (its content fingerprint differs)"
            )
    return slide


def correction_crops(rows, spec) -> tuple[np.ndarray, np.ndarray]:
    """``(crops uint8 (N, S, S, 3), centroids (N, 2))`` of :func:`training_rows` rows, read from their slides
    with the classifier's crop code (:func:`leukcore.classify.extract_crops`), in the rows' order.  A masking
    spec (``mask: true``) takes the cells' polygons from their results folders.
    """
    from ..classify.crops import extract_crops
    from ..export.kinds import read_results
    from ..io import open_slide

    S = spec.size
    out = np.zeros((len(rows), S, S, 3), np.uint8)
    cents = np.zeros((len(rows), 2), np.float64)
    if not len(rows):
        return out, cents
    rows = rows.reset_index(drop=True)
    for (path, mpp), g in rows.groupby(["path", "mpp"], sort=False):
        t = CellTable(g[["centroid_y", "centroid_x"]].reset_index(drop=True), {"mpp": float(mpp)})
        t.df["polygon"] = None
        if spec.mask:
            polys = {}
            for res in g["results"].unique():
                rt, _ = read_results(res)
                polys[res] = dict(zip(rt.df["cell_id"].astype(int), rt.df["polygon"], strict=False))
            t.df["polygon"] = [polys[r][int(c)] for r, c in zip(g["results"], g["cell_id"], strict=False)]
        with open_slide(path, mpp=float(mpp)) as slide:
            out[g.index.to_numpy()] = extract_crops(slide, t, spec, mpp=float(mpp))
        cents[g.index.to_numpy()] = g[["centroid_y", "centroid_x"]].to_numpy(np.float64)
    return out, cents
