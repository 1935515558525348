"""Slide files named by a batch source: a folder (searched recursively), a list file, one slide or a list;
and unique output folder names for them (:mod:`leukcore.batch` uses both).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["SLIDE_SUFFIXES", "slide_suffix", "find_slides", "slide_names"]

#: suffixes recognised as slides when a folder is searched (longest first)
SLIDE_SUFFIXES = (
    ".ome.tiff",
    ".ome.tif",
    ".ome.zarr",
    ".tiff",
    ".tif",
    ".svs",
    ".ndpi",
    ".scn",
    ".zarr",
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
)


def slide_suffix(name: str) -> Optional[str]:
    """The slide suffix ``name`` ends with (:data:`SLIDE_SUFFIXES`, case-insensitive), or None."""
    low = name.lower()
    for s in SLIDE_SUFFIXES:
        if low.endswith(s):
            return s
    return None


def find_slides(source: str | os.PathLike | Sequence, *, exclude: Optional[os.PathLike] = None) -> list[Path]:
    """Slides named by ``source``: a folder (recursive), a list file, one slide, or a list of paths.

    Raises
    ------
    FileNotFoundError
        ``source`` (or a path in a list file) does not exist.
    ValueError
        A folder holds no slide.
    """
    if isinstance(source, (list, tuple)):
        return [Path(p) for p in source]
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"{src}: batch source does not exist (give a folder, a list file or a slide)")
    ex = Path(exclude).resolve() if exclude else None
    if src.is_dir() and not slide_suffix(src.name):
        found = []
        for root, dirs, files in os.walk(src):
            rp = Path(root)
            if ex is not None and (rp.resolve() == ex or ex in rp.resolve().parents):
                dirs[:] = []
                continue
            keep = []
            for d in sorted(dirs):
                if d.startswith("."):
                    continue
                if slide_suffix(d) in (".zarr", ".ome.zarr"):
                    found.append(rp / d)
                else:
                    keep.append(d)
            dirs[:] = keep
            for f in sorted(files):
                if not f.startswith(".") and slide_suffix(f):
                    found.append(rp / f)
        if not found:
            raise ValueError(f"{src}: no slides found (looked for {', '.join(SLIDE_SUFFIXES)})")
        return sorted(found)
    if slide_suffix(src.name):
        return [src]
    # a list file
    out = []
    for line in src.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line)
        if not p.is_absolute():
            p = src.parent / p
        out.append(p)
    if not out:
        raise ValueError(f"{src}: list file names no slides")
    return out


def slide_names(sources: Sequence[Path]) -> list[str]:
    """Unique, deterministic output folder names for ``sources`` (stem, + hash when stems collide)."""
    stems = []
    for p in sources:
        s = slide_suffix(p.name)
        stems.append(p.name[: -len(s)] if s else p.stem)
    counts: dict[str, int] = {}
    for s in stems:
        counts[s.lower()] = counts.get(s.lower(), 0) + 1
    names = []
    for p, s in zip(sources, stems, strict=False):
        if counts[s.lower()] > 1:
            h = hashlib.sha1(str(Path(p).resolve()).encode()).hexdigest()[:8]
            s = f"{s}-{h}"
        names.append(s)
    return names
