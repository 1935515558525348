"""The N-cell differential: the manual-smear convention (100 or 200 white cells) beside the whole slide.

A technologist counting a smear by hand classifies the first 100 (or 200) white cells met while moving the
stage, and reports the percentage of each class.  :func:`differential` does the same on a results table:
it picks the first ``n`` cells in ``"random"`` order (a seeded permutation: an unbiased sample) or
``"raster"`` order (strips ``strip_um`` microns high, top to bottom, each read left to right, as a stage is
moved field by field) and counts them with the reviewed labels when the table carries a review
(:func:`leukcore.corrections.apply_corrections`), else the model's.

Counts and the blast percentage come from :class:`~leukcore.results.CellTable` (one owner):
``counts`` are the confidently classified cells per class (``confident_counts``), ``review`` the cells
left for review (unidentified), ``percent`` each of those over all cells counted (they sum to 100), and
``blast_percent`` the summary's rule (blast classes over the confidently classified cells).

A differential made during review is recorded beside the results as ``differential.json``
(:func:`record_differential`); ``leuk report`` shows it beside the whole-slide numbers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .results import CellTable, atomic_path

__all__ = [
    "DIFFERENTIAL_NAME",
    "ORDERS",
    "breakdown",
    "pick_cells",
    "differential",
    "record_differential",
    "read_differential",
]

DIFFERENTIAL_NAME = "differential.json"
ORDERS = ("random", "raster")
#: strip height of the raster order: about the field of view of a 100x oil objective
DEFAULT_STRIP_UM = 150.0
#: strip height (level-0 px) when the pixel size is unknown
_STRIP_PX = 600.0


def breakdown(table: CellTable) -> dict[str, Any]:
    """Counts of a table as a differential: ``cells``, ``counts`` (confident cells per class), ``review``,
    ``percent`` (per class and ``review``, over all cells; None for an empty table), ``blast_percent``.
    """
    from .corrections import REVIEW_LABEL

    n = len(table)
    if not table.is_classified:
        return {"cells": n, "counts": {}, "review": 0, "percent": {}, "blast_percent": None}
    counts = table.confident_counts()
    s = table.summary()
    review = int(s.get("review") or 0)
    pct = {k: (round(100.0 * v / n, 3) if n else None) for k, v in counts.items()}
    pct[REVIEW_LABEL] = round(100.0 * review / n, 3) if n else None
    return {"cells": n, "counts": counts, "review": review, "percent": pct, "blast_percent": s.get("blast_percent")}


def pick_cells(
    table: CellTable, n: int = 100, order: str = "random", seed: int = 0, *, strip_um: float = DEFAULT_STRIP_UM
) -> np.ndarray:
    """Row positions of the first ``n`` cells in ``order`` (all cells when the table has fewer)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    df = table.df
    N = len(df)
    if order == "random":
        idx = np.random.default_rng(int(seed)).permutation(N)
    else:
        mpp = table.meta.get("mpp")
        h = float(strip_um) / float(mpp) if mpp else _STRIP_PX
        y = df["centroid_y"].to_numpy(np.float64)
        x = df["centroid_x"].to_numpy(np.float64)
        strip = np.floor(y / h)
        idx = np.lexsort((df["cell_id"].to_numpy(), x, strip))
    return idx[: int(n)]


def differential(
    table: CellTable, n: int = 100, order: str = "random", seed: int = 0, *, strip_um: float = DEFAULT_STRIP_UM
) -> dict[str, Any]:
    """The ``n``-cell differential of ``table`` beside the whole slide's numbers.

    Parameters
    ----------
    table : CellTable
        Classified results; a reviewed table (:func:`leukcore.corrections.apply_corrections`) is counted with
        the reviewer's labels.
    n : int
        Cells to count (100 or 200 by the manual convention; any positive number).
    order : ``"random"`` or ``"raster"``
        Which cells come first (see the module doc).
    seed : int
        Seed of the random order.

    Returns
    -------
    dict
        ``n``, ``order``, ``seed``, ``strip_um``, ``counted`` (cells counted: ``min(n, cells)``), ``cell_ids``
        (in counting order), ``reviewed`` (labels are the reviewer's where given), ``reviewed_in_sample``
        (counted cells carrying a reviewer's label), ``sample`` and ``whole_slide``: each a :func:`breakdown`.
    """
    rows = pick_cells(table, n, order, seed, strip_um=strip_um)
    sub = CellTable(table.df.iloc[np.sort(rows)], table.meta)
    reviewed = "reviewer_label" in table.df.columns
    in_sample = int(table.df["reviewer_label"].iloc[rows].notna().sum()) if reviewed else 0
    return {
        "n": int(n),
        "order": order,
        "seed": int(seed),
        "strip_um": float(strip_um),
        "counted": int(len(rows)),
        "cell_ids": [int(c) for c in table.df["cell_id"].to_numpy()[rows]],
        "reviewed": reviewed,
        "reviewed_in_sample": in_sample,
        "sample": breakdown(sub),
        "whole_slide": breakdown(table),
    }


def record_differential(
    results: str | os.PathLike, diff: dict[str, Any], *, reviewer: Optional[str] = None, time: Optional[str] = None
) -> Path:
    """Write a :func:`differential` into the results folder as ``differential.json`` (atomically)."""
    from .corrections import now_iso

    folder = Path(results)
    if not folder.is_dir():
        folder = folder.parent
    rec = dict(diff)
    rec["reviewer"] = reviewer or rec.get("reviewer")
    rec["time"] = time or rec.get("time") or now_iso()
    path = folder / DIFFERENTIAL_NAME
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_differential(results: str | os.PathLike) -> Optional[dict[str, Any]]:
    """The recorded differential of a results folder, or None."""
    p = Path(results)
    p = p / DIFFERENTIAL_NAME if p.is_dir() else p
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{p}: cannot read differential: {e}") from None
