"""``summary.json`` (the per-slide completion marker) and flat summary rows.

``summary.json`` is written LAST in a slide's output folder, atomically; its
presence with ``"complete": true`` is what marks the folder as finished
(:func:`is_complete`), which is what ``leuk batch`` resumes on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from ..results import atomic_path
from .kinds import OUTPUT_FILES, SUMMARY_NAME  # noqa: F401  (the names live in the table of output kinds)

__all__ = ["write_summary", "read_summary", "is_complete", "summary_row", "SUMMARY_NAME", "OUTPUT_FILES"]


def _default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    return str(o)


def write_summary(summary: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``summary`` as indented, key-sorted JSON, atomically."""
    path = Path(path)
    text = json.dumps(summary, default=_default, indent=2, sort_keys=True, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path


def _clean_nan(o):
    if isinstance(o, float) and o != o:
        return None
    if isinstance(o, dict):
        return {k: _clean_nan(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean_nan(v) for v in o]
    return o


def read_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``summary.json`` (or the one inside a slide output folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / SUMMARY_NAME
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{p}: cannot read summary: {e}") from None


def is_complete(out_dir: str | os.PathLike, source: Optional[str] = None) -> bool:
    """True when ``out_dir`` holds a finished, non-partial run (of ``source`` when given)."""
    d = Path(out_dir)
    p = d / SUMMARY_NAME
    if not p.is_file():
        return False
    try:
        s = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not s.get("complete") or s.get("partial"):
        return False
    done_path = (s.get("slide") or {}).get("path")
    if source is not None and done_path is not None and not _same_file(done_path, source):
        return False
    return all((d / f).exists() for f in s.get("outputs", {}).values())


def _same_file(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return str(a) == str(b)


def summary_row(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten a summary to one CSV row (counts as ``n_<class>``)."""
    s = summary
    slide = s.get("slide", {}) or {}
    mpp = s.get("mpp", {}) or {}
    row: dict[str, Any] = {
        "slide": slide.get("name"),
        "source": slide.get("path"),
        "cells": s.get("cells"),
        "blast_percent": s.get("blast_percent"),
        "review": s.get("review"),
        "mpp": mpp.get("value"),
        "mpp_source": mpp.get("source"),
        "caveats": "; ".join(s.get("caveats") or []),
        "classifier": (s.get("models", {}).get("classifier") or {}).get("name"),
        "detector": (s.get("models", {}).get("detector") or {}).get("name"),
        "seconds": (s.get("timings", {}) or {}).get("total_s"),
        "partial": s.get("partial"),
    }
    for k, v in (s.get("counts") or {}).items():
        row[f"n_{k}"] = v
    return row
