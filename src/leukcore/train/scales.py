"""The pixel size each training field's crops are cut at: the folder's, or the one the tool estimates.

A dataset folder states one pixel size for all its fields (``leukcore.train.datasets``: the four-class set
0.535 um/px), but its classes were imaged in separate sessions (the data README: Pro at a lower
magnification).  A classifier trained on crops cut at the folder's value learns each session's
magnification as a class cue, and at inference without ``--mpp`` the estimated pixel size
(:func:`leukcore.mpp.estimate_mpp`) cuts the crops at the *field's* scale instead: every cell of a field
moves together and the call can flip.

With ``data.crop_mpp: estimated`` each field's crops are cut at the pixel size :func:`estimate_mpp` reads
from that field (label-free, the same reading as ``leuk classify`` without ``--mpp``), so training and
inference cut crops the same way; the cells are still *found* at the folder's value (the detector's cache
is shared).  Single-cell rows (``kind == "cell"``) and fields whose estimate fails keep the folder's value.
Estimates are cached per image hash and ScaleNet weights (:func:`estimated_crop_mpp`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["CROP_MPP_MODES", "check_crop_mpp", "estimated_crop_mpp", "with_crop_mpp"]

#: ``data.crop_mpp`` values: the folder's pixel size, or each field's estimate
CROP_MPP_MODES = ("folder", "estimated")


def check_crop_mpp(mode) -> None:
    """Raise ``ValueError`` naming ``data.crop_mpp`` and its values when ``mode`` is not one of them."""
    if mode not in CROP_MPP_MODES:
        raise ValueError(f"config: data.crop_mpp must be {' | '.join(CROP_MPP_MODES)}, got {mode!r}")


def _cache_file(cache_root: Optional[Path]) -> Optional[Path]:
    if cache_root is None:
        return None
    from ..models.registry import load_card

    card = load_card("mpp-scalenet")
    sha = str((card.get("weights") or {}).get("sha256") or "unknown")[:16]
    return Path(cache_root) / f"crop-mpp-scalenet-{sha}.json"


def estimated_crop_mpp(df, cache_root: Optional[Path] = None, progress: bool = True) -> np.ndarray:
    """Per row of ``df``: the estimated pixel size of a field row, the folder's ``mpp`` otherwise.

    Parameters
    ----------
    df : DataFrame
        Rows with ``path``, ``kind``, ``mpp`` and (for caching) ``sha256``.
    cache_root : Path, optional
        Folder of the JSON cache ``{sha256: mpp}`` (keyed by the ScaleNet weights); ``None``: no cache.
    progress : bool
        Show a progress bar.
    """
    from ..mpp import MppError, estimate_mpp
    from .cells import load_image

    f = _cache_file(cache_root)
    cache = json.loads(f.read_text()) if f is not None and f.exists() else {}
    out = df["mpp"].to_numpy(np.float64).copy()
    rows = [i for i, k in enumerate(df["kind"].to_numpy()) if k == "field"]
    it = rows
    if progress:
        from tqdm import tqdm

        it = tqdm(rows, desc="pixel size", unit="img", mininterval=5)
    paths, shas = df["path"].to_numpy(), df["sha256"].to_numpy() if "sha256" in df else [None] * len(df)
    for i in it:
        key = str(shas[i]) if shas[i] else None
        if key is None or key not in cache:
            try:
                m = float(estimate_mpp(load_image(paths[i])).mpp)
            except MppError:
                m = None
            if key is not None:
                cache[key] = m
        else:
            m = cache[key]
        if m is not None and np.isfinite(m):
            out[i] = m
    if f is not None:
        from ..results import atomic_path

        f.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(f) as tmp:
            Path(tmp).write_text(json.dumps(cache))
    return out


def with_crop_mpp(df, mode: str, cache_root: Optional[Path] = None):
    """``df`` with a ``crop_mpp`` column for ``mode == "estimated"`` (:func:`estimated_crop_mpp`); as is for
    ``"folder"``.  Raises ``ValueError`` for another mode.
    """
    check_crop_mpp(mode)
    if mode == "folder":
        return df
    return df.assign(crop_mpp=estimated_crop_mpp(df, cache_root))
