"""Fingerprints that make a result folder say exactly what it was computed from.

``summary.json`` carries a ``provenance`` block (built by :func:`fingerprint`)::

    {"version": 1, "leukcore_version": "0.1.0",
     "input":    {"path", "kind": "file"|"directory", "size", "mtime_ns", "meta_sha256", "sample_sha256", ...},
     "settings": {"mpp", "region", "review_threshold", "tile_size", "batch_size", "detect_batch_size",
                  "device", "skip_missing"},          # as requested (None = the default)
     "models":   {"detector": {...}, "classifier": {...}},   # card path + card sha256 + weights sha256
     "digest":   sha256 of the canonical JSON of the rest}

and ``leuk batch`` resumes a slide only when the recorded block equals the one the new run would write
(:func:`compare` lists what differs, e.g. ``settings changed: model``).

The input fingerprint reads a bounded amount of the file, however large the slide:

* a **file**: size and mtime; ``meta_sha256`` over its first and last MiB (where TIFF, SVS, NDPI and
  plain images keep their header) plus, for a TIFF, every page's structure (shape, compression,
  description, tile offsets and byte counts; up to 256 pages); ``sample_sha256`` over 16 blocks of
  64 KiB spread evenly over the file.  A file under 4 MiB is hashed whole.
* a **directory** (OME-Zarr): every metadata file (``.zattrs``, ``.zgroup``, ``.zarray``,
  ``.zmetadata``, ``zarr.json``) hashed whole, the number and total size of the files, and the first
  64 KiB of 16 data chunks spread evenly over the sorted listing (listing capped at 200,000 entries).

A model's record (:func:`model_record`) is its card's path, the sha256 of the card file's bytes (a card
with its classes swapped is a different card) and the sha256 of the weights file as read.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

from .hashing import sha256_bytes, sha256_file

__all__ = [
    "sha256_file",
    "sha256_bytes",
    "input_fingerprint",
    "model_record",
    "model_fingerprint",
    "analysis_settings",
    "fingerprint",
    "compare",
    "describe",
    "invalidate",
    "FINGERPRINT_VERSION",
]

FINGERPRINT_VERSION = 1

_BLOCK = 64 * 1024
_HEADTAIL = 1 << 20
_N_SAMPLES = 16
_WHOLE_BELOW = 4 << 20
_MAX_ENTRIES = 200_000
_MAX_TIFF_PAGES = 256
_ZARR_META = {".zattrs", ".zgroup", ".zarray", ".zmetadata", "zarr.json"}


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, allow_nan=True).encode()


# ------------------------------------------------------------------ input
def _tiff_structure(path: Path, h) -> bool:
    """Feed every page's structure into ``h``; False when the file is not a TIFF tifffile reads."""
    try:
        import tifffile
    except ImportError:  # pragma: no cover - a dependency
        return False
    try:
        with tifffile.TiffFile(str(path)) as tif:
            for i, page in enumerate(tif.pages):
                if i >= _MAX_TIFF_PAGES:
                    h.update(b"...more pages")
                    break
                h.update(
                    _canonical(
                        [
                            i,
                            list(getattr(page, "shape", ())),
                            str(getattr(page, "dtype", "")),
                            int(getattr(page, "compression", 0) or 0),
                            getattr(page, "description", "") or "",
                        ]
                    )
                )
                for name in ("dataoffsets", "databytecounts"):
                    v = getattr(page, name, None)
                    if v is not None:  # one entry per tile: hashed as raw uint64, not as JSON
                        import numpy as np

                        h.update(np.asarray(v, dtype=np.uint64).tobytes())
        return True
    except Exception:
        return False


def _file_fingerprint(p: Path, st: os.stat_result) -> dict:
    size = int(st.st_size)
    fp: dict[str, Any] = {"kind": "file", "size": size, "mtime_ns": int(st.st_mtime_ns)}
    with open(p, "rb") as f:
        if size <= _WHOLE_BELOW:
            data = f.read()
            digest = sha256_bytes(data)
            fp.update(meta_sha256=digest, sample_sha256=digest, method="whole file")
            return fp
        meta = hashlib.sha256()
        meta.update(f.read(_HEADTAIL))
        f.seek(size - _HEADTAIL)
        meta.update(f.read(_HEADTAIL))
        sample = hashlib.sha256()
        step = (size - _BLOCK) / max(1, _N_SAMPLES - 1)
        for i in range(_N_SAMPLES):
            off = int(round(i * step))
            f.seek(off)
            sample.update(off.to_bytes(8, "little"))
            sample.update(f.read(_BLOCK))
    is_tiff = _tiff_structure(p, meta)
    fp.update(
        meta_sha256=meta.hexdigest(),
        sample_sha256=sample.hexdigest(),
        method=f"head+tail 1 MiB{' + TIFF pages' if is_tiff else ''}; {_N_SAMPLES} x 64 KiB blocks",
    )
    return fp


def _dir_fingerprint(p: Path) -> dict:
    meta = hashlib.sha256()
    files: list[tuple[str, int]] = []
    mtime = int(p.stat().st_mtime_ns)
    n_entries = 0
    truncated = False
    for root, dirs, names in os.walk(p):
        dirs.sort()
        for name in sorted(names):
            n_entries += 1
            if n_entries > _MAX_ENTRIES:
                truncated = True
                break
            fp = Path(root) / name
            rel = fp.relative_to(p).as_posix()
            try:
                st = fp.stat()
            except OSError:
                continue
            if name in _ZARR_META:
                meta.update(rel.encode() + b"\0")
                with open(fp, "rb") as f:
                    meta.update(f.read(_HEADTAIL))
                mtime = max(mtime, int(st.st_mtime_ns))
            else:
                files.append((rel, int(st.st_size)))
        if truncated:
            break
    sample = hashlib.sha256()
    if files:
        idx = sorted({int(round(i * (len(files) - 1) / max(1, _N_SAMPLES - 1))) for i in range(_N_SAMPLES)})
        for i in idx:
            rel, sz = files[i]
            sample.update(_canonical([rel, sz]))
            with open(p / rel, "rb") as f:
                sample.update(f.read(_BLOCK))
    return {
        "kind": "directory",
        "size": sum(s for _, s in files),
        "n_files": len(files),
        "mtime_ns": mtime,
        "meta_sha256": meta.hexdigest(),
        "sample_sha256": sample.hexdigest(),
        "truncated": truncated,
        "method": f"metadata files whole; {_N_SAMPLES} data files x first 64 KiB",
    }


def input_fingerprint(path: Optional[str | os.PathLike]) -> Optional[dict]:
    """Bounded-read fingerprint of a slide file or OME-Zarr folder (None for an in-memory slide)."""
    if path is None:
        return None
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return {"path": str(p), "kind": "missing"}
    fp = _dir_fingerprint(p) if p.is_dir() else _file_fingerprint(p, st)
    return {"path": str(p.resolve()), **fp}


# ------------------------------------------------------------------ models
def _origin(card_path: Optional[str]) -> Optional[str]:
    if not card_path:
        return None
    from .models.registry import WEIGHTS_DIR

    try:
        Path(card_path).resolve().relative_to(WEIGHTS_DIR.resolve())
        return "shipped"
    except ValueError:
        return "user"


def model_record(card: Optional[Mapping[str, Any]]) -> Optional[dict]:
    """What a summary records about a loaded model's card (see :func:`leukcore.models.load_card`)."""
    if card is None:
        return None
    w = card.get("weights") or {}
    cp = card.get("_card_path")
    rec = {
        "name": card.get("name"),
        "version": card.get("version"),
        "task": card.get("task"),
        "sha256": card.get("_weights_sha256") or w.get("sha256"),
        "card": Path(str(cp)).name if cp else None,
        "card_path": str(Path(str(cp)).resolve()) if cp else None,
        "card_sha256": card.get("_card_sha256"),
        "origin": _origin(cp),
        "weights_verified": bool(w.get("sha256")) if cp else None,
    }
    if card.get("classes") is not None:
        rec["classes"] = list(card["classes"])
    return rec


def model_fingerprint(model) -> Optional[dict]:
    """:func:`model_record` of a model given as a loaded object, a card dict, a name or a card path.

    A name / path is resolved and hashed without loading the network (what ``leuk batch`` compares
    with the recorded block before deciding to skip a slide).
    """
    if model is None:
        return None
    if isinstance(model, Mapping):
        return model_record(model)
    if not isinstance(model, (str, os.PathLike)):
        return model_record(getattr(model, "card", None) or {})
    from .models.registry import load_card

    card = load_card(model)
    wfile = Path(card["_card_path"]).parent / str((card.get("weights") or {}).get("file", ""))
    if wfile.is_file():
        card["_weights_sha256"] = sha256_file(wfile)
    return model_record(card)


# ------------------------------------------------------------------ settings + block
def analysis_settings(
    *,
    mpp=None,
    region=None,
    review_threshold=None,
    tile_size=1024,
    batch_size=None,
    detect_batch_size=None,
    device="auto",
    skip_missing=False,
) -> dict:
    """Every analysis setting besides the models, as requested, JSON-ready
    (:meth:`leukcore.settings.AnalysisSettings.record`, the one owner of what is recorded).
    """
    from .settings import AnalysisSettings

    return AnalysisSettings(
        mpp=mpp,
        region=region,
        review_threshold=review_threshold,
        tile_size=tile_size,
        batch_size=batch_size,
        detect_batch_size=detect_batch_size,
        device=device,
        skip_missing=skip_missing,
    ).record()


def fingerprint(input_fp: Optional[dict], settings: dict, detector: Optional[dict], classifier: Optional[dict]) -> dict:
    """The ``provenance`` block of ``summary.json``."""
    from ._version import __version__

    block = {
        "version": FINGERPRINT_VERSION,
        "leukcore_version": __version__,
        "input": input_fp,
        "settings": dict(settings),
        "models": {"detector": detector, "classifier": classifier},
    }
    block["digest"] = sha256_bytes(_canonical(block))
    return block


_INPUT_KEYS = ("path", "kind", "size", "mtime_ns", "meta_sha256", "sample_sha256", "n_files")
#: the setting name a model's role is reported under when another model is asked for
_ROLE_SETTING = {"detector": "detector", "classifier": "model"}


def _model_diff(a: Optional[dict], b: Optional[dict]) -> tuple[bool, list[str]]:
    """(another model asked for, what differs in the same model's files)."""
    if (a is None) != (b is None) or (a is not None and a.get("name") != b.get("name")):
        return True, []
    if a is None:
        return False, []
    out = []
    if a.get("version") != b.get("version"):
        out.append("version")
    if a.get("card_sha256") != b.get("card_sha256"):
        out.append("card sha256")
    if a.get("sha256") != b.get("sha256"):
        out.append("weights sha256")
    # a shipped card is the same card wherever the package is installed; a user card is also its path
    if a.get("origin") != b.get("origin") or (
        a.get("origin") != "shipped" and a.get("card_path") != b.get("card_path")
    ):
        out.append(f"card path {a.get('card_path')} -> {b.get('card_path')}")
    return False, out


def compare(recorded: Optional[Mapping], current: Mapping) -> list[str]:
    """Why a result with the ``recorded`` provenance block is not the one ``current`` would give.

    Returns an empty list when they match; else reasons such as ``"settings changed: model, mpp"``
    (``model`` = another classifier, ``detector`` = another detector), ``"input changed: size,
    mtime_ns"``, ``"classifier changed: card sha256, card path A -> B"`` (the same model name, other files).
    """
    if not recorded:
        return ["no fingerprint (written by an older leukcore)"]
    if recorded.get("version") != current.get("version"):
        return [f"fingerprint version {recorded.get('version')} != {current.get('version')}"]
    reasons = []
    ri, ci = recorded.get("input") or {}, current.get("input") or {}
    d = [k for k in _INPUT_KEYS if ri.get(k) != ci.get(k)]
    if d:
        reasons.append("input changed: " + ", ".join(d))
    rs, cs = recorded.get("settings") or {}, current.get("settings") or {}
    changed = [k for k in sorted(set(rs) | set(cs)) if rs.get(k) != cs.get(k)]
    files = []
    for role in ("classifier", "detector"):
        other, d = _model_diff((recorded.get("models") or {}).get(role), (current.get("models") or {}).get(role))
        if other:
            changed.insert(0, _ROLE_SETTING[role])
        if d:
            files.append(f"{role} changed: " + ", ".join(d))
    if changed:
        reasons.append("settings changed: " + ", ".join(changed))
    reasons += files
    if recorded.get("leukcore_version") != current.get("leukcore_version"):
        reasons.append(
            f"leukcore version changed: {recorded.get('leukcore_version')} -> {current.get('leukcore_version')}"
        )
    return reasons


def describe(reasons: list[str]) -> str:
    """One line of a resume decision's reasons."""
    return "; ".join(reasons)


# ------------------------------------------------------------------ output folders
def invalidate(out_dir: str | os.PathLike) -> bool:
    """Remove a folder's completion marker before a run writes into it; True when one was there.

    Called before any work, so a run that then fails, is cancelled or is killed never leaves the
    previous run's ``summary.json`` (``complete: true``) beside its own half-written files.
    """
    from .export.summary import SUMMARY_NAME

    p = Path(out_dir) / SUMMARY_NAME
    try:
        p.unlink()
        return True
    except FileNotFoundError:
        return False
