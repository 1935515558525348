"""Signing a results folder's review (``signoff.json``) and whether a sign-off still holds.
See :mod:`leukcore.report`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from ..results import atomic_path

__all__ = ["SIGNOFF_NAME", "sign_off", "signoff_state", "signoff_hashes", "results_folder", "sha256_or_none"]

#: file name of the sign-off beside the results
SIGNOFF_NAME = "signoff.json"


def sha256_or_none(path: Path) -> Optional[str]:
    """sha256 of the file, None when it is not a file."""
    from ..hashing import sha256_file

    return sha256_file(path) if path.is_file() else None


def signoff_hashes(folder: Path, corrections_df=None) -> tuple[str, Optional[str]]:
    """``(corrections digest, summary.json sha256)``: what a sign-off is tied to."""
    from ..corrections import corrections_digest, read_corrections
    from ..export.kinds import SUMMARY_NAME

    df = read_corrections(folder) if corrections_df is None else corrections_df
    return corrections_digest(df), sha256_or_none(folder / SUMMARY_NAME)


def results_folder(results) -> Path:
    """The results folder of ``results`` (a folder, or a file in it); FileNotFoundError when missing."""
    p = Path(results)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such results folder")
    return p if p.is_dir() else p.parent


def sign_off(results: str | os.PathLike, reviewer: str, *, time: Optional[str] = None) -> dict:
    """Sign a results folder's review: ``signoff.json`` (atomic) with reviewer, time, the corrections' and the
    summary's sha256 and the reviewed numbers.  Returns the record.

    Raises
    ------
    ValueError
        Without a reviewer name, or when the corrections do not belong to these results.
    """
    from .._version import __version__
    from ..corrections import load_reviewed, now_iso
    from ..differential import breakdown

    if not reviewer or not str(reviewer).strip():
        raise ValueError("signing off needs the reviewer's name (--reviewer NAME)")
    folder = results_folder(results)
    table, reviewed, summary, df = load_reviewed(folder)
    corr_sha, sum_sha = signoff_hashes(folder, df)
    b = breakdown(reviewed)
    rec = {
        "reviewer": str(reviewer).strip(),
        "time": time or now_iso(),
        "corrections_sha256": corr_sha,
        "summary_sha256": sum_sha,
        "corrections": int(len(df)),
        "cells": b["cells"],
        "counts": b["counts"],
        "review": b["review"],
        "percent": b["percent"],
        "blast_percent": b["blast_percent"],
        "leukcore_version": __version__,
    }
    with atomic_path(folder / SIGNOFF_NAME) as tmp:
        Path(tmp).write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return rec


def signoff_state(results: str | os.PathLike, corrections_df=None) -> Optional[dict]:
    """The folder's sign-off with ``valid`` (its hashes match the corrections and summary now) and ``reason``;
    None when never signed.
    """
    folder = results_folder(results)
    p = folder / SIGNOFF_NAME
    if not p.is_file():
        return None
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return {"reviewer": None, "time": None, "valid": False, "reason": f"{p.name} unreadable: {e}"}
    corr_sha, sum_sha = signoff_hashes(folder, corrections_df)
    reasons = []
    if rec.get("corrections_sha256") != corr_sha:
        reasons.append("the corrections changed after the sign-off")
    if rec.get("summary_sha256") != sum_sha:
        reasons.append("summary.json changed after the sign-off (re-analysed?)")
    rec["valid"] = not reasons
    rec["reason"] = "; ".join(reasons)
    return rec
