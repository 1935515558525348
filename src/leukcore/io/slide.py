"""The lazy multiscale :class:`Slide`.

A slide is a list of pyramid levels, each a dask array of shape ``(Y, X, 3)``
and dtype ``uint8`` (RGB), plus the downsample factor of each level relative
to level 0 and the pixel size of level 0 in microns (``mpp``) when known.
Nothing here reads pixels until asked to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

import numpy as np

__all__ = ["Slide", "PAD_VALUE"]

#: value used for pixels of a region that lie outside the slide (bright background)
PAD_VALUE = 255


def local_scheduler():
    """The dask scheduler for reads inside a process: local threads, as a callable.

    A dask.distributed Client, once created, becomes the default scheduler, and region reads must not be
    shipped to its workers.  The callable, not the name ``"threads"``: dask resolves a scheduler *name* by
    importing ``distributed`` to look for a client (~0.25 s of every run's first read, issue 17).
    """
    from dask.threaded import get

    return get


@dataclass
class Slide:
    """A lazy multiscale RGB slide.

    Attributes
    ----------
    levels : list of dask.array.Array
        Pyramid levels, level 0 first, each ``(Y, X, 3)`` uint8.
    downsamples : list of float
        Downsample of each level relative to level 0 (``downsamples[0] == 1``).
    mpp : float or None
        Microns per pixel at level 0; ``None`` when unknown (see ``mpp_source``).
    mpp_source : str or None
        ``"metadata"``, ``"user"``, ``"estimated"`` or ``None``.
    path : str or None
        File the slide came from.
    format : str
        Reader that opened it (``"ome-tiff"``, ``"svs"``, ``"ndpi"``, ``"tiff"``,
        ``"ome-zarr"``, ``"image"``, ``"array"``...).
    vendor : str or None
        Scanner vendor when known.
    metadata : dict
        Extra format metadata (free form, JSON-serialisable).
    warnings : list of str
        Integrity warnings found at open (or at the first decode of a plain image): missing tiles,
        tifffile warnings, ignored implausible pixel sizes, 12-bit / float-range rescaling...
        Shown by ``leuk info`` and copied into the analysis summary.
    missing : list of dict
        Stored tiles / chunks known at open to hold no pixel data: ``{"level", "tile": [row, col],
        "box": [y0, x0, y1, x1] (level-0 px), "reason"}``.  Reading them raises
        :class:`~leukcore.io.errors.MissingTileError` (see :meth:`with_missing_policy`).
    """

    levels: list
    downsamples: list
    mpp: Optional[float] = None
    mpp_source: Optional[str] = None
    path: Optional[str] = None
    format: str = "array"
    vendor: Optional[str] = None
    metadata: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    _closer: Optional[Callable[[], Any]] = field(default=None, repr=False)
    #: per level, an array-like reading the stored level directly (``None`` for computed levels);
    #: lets :meth:`read_region` fetch exactly the native tiles under a window, bypassing dask
    _readers: Optional[list] = field(default=None, repr=False)
    #: boxes recorded by the readers of a :meth:`with_missing_policy` copy
    _skip_record: Optional[list] = field(default=None, repr=False)

    # ----------------------------------------------------------------- basics
    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of level 0."""
        return tuple(int(s) for s in self.levels[0].shape[:2])

    @property
    def n_levels(self) -> int:
        """Number of pyramid levels."""
        return len(self.levels)

    def level_shape(self, level: int) -> tuple[int, int]:
        """``(height, width)`` of pyramid level ``level``."""
        return tuple(int(s) for s in self.levels[level].shape[:2])

    def level_mpp(self, level: int) -> Optional[float]:
        """Microns per pixel of level ``level`` (None when the slide's pixel size is unknown)."""
        return None if self.mpp is None else self.mpp * self.downsamples[level]

    def best_level_for_downsample(self, downsample: float) -> int:
        """Index of the coarsest level whose downsample is <= ``downsample`` (+1 % tolerance)."""
        best = 0
        for i, d in enumerate(self.downsamples):
            if d <= downsample * 1.01:
                best = i
        return best

    def with_mpp(self, mpp: Optional[float], source: str = "user") -> "Slide":
        """A copy with the level-0 pixel size overridden."""
        if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
            raise ValueError(f"mpp must be a positive number, got {mpp!r}")
        if mpp is not None and source == "user":
            from .mppcheck import check_user_mpp

            check_user_mpp(mpp)
        return replace(self, mpp=None if mpp is None else float(mpp), mpp_source=None if mpp is None else source)

    # -------------------------------------------------------------- integrity
    @property
    def damaged(self) -> bool:
        """True when some stored tiles / chunks are known to hold no pixel data."""
        return bool(self.missing)

    def missing_in(self, region=None) -> list:
        """The :attr:`missing` entries whose level-0 box meets ``region`` (``(y0, x0, y1, x1)``, default all)."""
        if region is None:
            return list(self.missing)
        y0, x0, y1, x1 = (float(v) for v in region)
        return [
            m for m in self.missing if m["box"][0] < y1 and m["box"][2] > y0 and m["box"][1] < x1 and m["box"][3] > x0
        ]

    def check_missing(self, region=None) -> None:
        """Raise :class:`~leukcore.io.errors.MissingTileError` for the first missing tile in ``region``."""
        from .errors import MissingTileError

        miss = self.missing_in(region)
        if miss:
            m = miss[0]
            b = m["box"]
            raise MissingTileError(
                self.path,
                f"{len(miss)} stored tile(s) have no pixel data, first: level {m['level']} tile "
                f"(row {m['tile'][0]}, col {m['tile'][1]}) = level-0 box y {b[0]}:{b[2]}, x {b[1]}:{b[3]} "
                f"({m['reason']}); pass skip_missing=True / --skip-missing to analyse the rest",
                level=m["level"],
                box=b,
            )

    def with_missing_policy(self, policy: str = "skip") -> "Slide":
        """A copy whose reads treat missing tiles and NaN / infinite pixels by ``policy``.

        ``"raise"`` (the default of every opened slide): reading them raises
        :class:`~leukcore.io.errors.MissingTileError`.  ``"skip"``: they read as background (255) and
        each skipped box is recorded (:meth:`skipped_regions`).
        """
        import copy

        if policy not in ("raise", "skip"):
            raise ValueError(f"policy must be 'raise' or 'skip', got {policy!r}")
        if not self._readers:
            return replace(self)
        record: list = []
        readers, levels = [], []
        for i, lv in enumerate(self.levels):
            r = self._readers[i] if i < len(self._readers) else None
            if r is not None:
                r = copy.copy(r)
                r.policy, r.skipped = policy, record
                from .lazy import as_dask

                levels.append(as_dask(r, lv.chunksize[:2], f"{lv.name}-{policy}-{id(record):x}"))
            elif i == 0:  # pragma: no cover - a stored level 0 always has a reader
                levels.append(lv)
            else:
                levels.append(downsample2(levels[-1]))
            readers.append(r)
        return replace(self, levels=levels, _readers=readers, _skip_record=record)

    def skipped_regions(self) -> list:
        """Level-0 boxes read as background under the ``"skip"`` policy (deduplicated), plus every
        tile known missing at open: ``[{"level", "box", "reason"}]``.
        """
        seen, out = set(), []
        rec = self._skip_record or []
        items = [(m["level"], *m["box"], m["reason"]) for m in self.missing] + list(rec)
        for lv, y0, x0, y1, x1, reason in items:
            k = (lv, y0, x0, y1, x1)
            if k not in seen:
                seen.add(k)
                out.append({"level": int(lv), "box": [int(y0), int(x0), int(y1), int(x1)], "reason": reason})
        return out

    # ----------------------------------------------------------------- pixels
    def read_region(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Read a ``(h, w, 3)`` uint8 region of ``level`` with top-left ``(y, x)`` in that level's pixels.

        Parts outside the level are filled with :data:`PAD_VALUE` (white background).
        """
        if not 0 <= level < self.n_levels:
            raise IndexError(f"level {level} out of range 0..{self.n_levels - 1} for {self.path or 'slide'}")
        arr = self.levels[level]
        H, W = int(arr.shape[0]), int(arr.shape[1])
        y, x, h, w = int(y), int(x), int(h), int(w)
        out = np.full((h, w, 3), PAD_VALUE, dtype=np.uint8)
        y0, x0 = max(y, 0), max(x, 0)
        y1, x1 = min(y + h, H), min(x + w, W)
        if y1 > y0 and x1 > x0:
            reader = self._readers[level] if self._readers and level < len(self._readers) else None
            if reader is not None:
                block = reader[y0:y1, x0:x1]
            else:
                block = arr[y0:y1, x0:x1]
                # local threads, never a dask.distributed Client that may be the default
                block = block.compute(scheduler=local_scheduler()) if hasattr(block, "compute") else block
            out[y0 - y : y1 - y, x0 - x : x1 - x] = np.asarray(block)
        return out

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """An RGB thumbnail whose longer side is at most ``max_size`` (from the best level)."""
        H, W = self.shape
        ds = max(H, W) / max_size
        lvl = self.best_level_for_downsample(max(ds, 1.0))
        a = self.levels[lvl]
        step = max(1, int(math.ceil(max(a.shape[0], a.shape[1]) / max_size)))
        sub = a[::step, ::step]
        return np.asarray(sub.compute(scheduler=local_scheduler()) if hasattr(sub, "compute") else sub)

    # --------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Release the file handles (idempotent); the slide cannot read afterwards."""
        if self._closer is not None:
            try:
                self._closer()
            finally:
                self._closer = None

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def info(self) -> dict:
        """JSON-serialisable description (used by ``leuk info``).

        Keys: ``path``, ``format``, ``vendor``, ``file_size`` (bytes; summed over an
        OME-Zarr directory), ``shape`` (level-0 height, width), ``mpp``, ``mpp_source``,
        ``levels`` (``level``, ``shape``, ``downsample``, ``mpp``, ``chunks`` = dask chunk,
        ``native_chunks`` = stored tile/strip/chunk when known, ``computed`` = made lazily
        from the level above rather than stored), ``metadata`` (format details), ``warnings``
        (:attr:`warnings`) and ``integrity`` (``ok``, ``missing_tiles`` count, first 20 ``missing``).
        """
        native = self.metadata.get("native_chunks") or []
        n_stored = len(native) if native else self.n_levels
        levels = []
        for i, (a, d) in enumerate(zip(self.levels, self.downsamples, strict=False)):
            levels.append(
                {
                    "level": i,
                    "shape": [int(s) for s in a.shape],
                    "downsample": float(d),
                    "mpp": self.level_mpp(i),
                    "chunks": [int(c[0]) for c in a.chunks] if hasattr(a, "chunks") else None,
                    "native_chunks": native[i] if i < len(native) else None,
                    "computed": i >= n_stored,
                }
            )
        meta = {k: v for k, v in self.metadata.items() if k != "native_chunks" and _jsonable(v)}
        miss = self.missing
        return {
            "path": self.path,
            "format": self.format,
            "vendor": self.vendor,
            "file_size": _file_size(self.path),
            "shape": list(self.shape),
            "mpp": self.mpp,
            "mpp_source": self.mpp_source,
            "levels": levels,
            "metadata": meta,
            "warnings": [str(w) for w in self.warnings],
            "integrity": {
                "ok": not miss,
                "missing_tiles": len(miss),
                "missing": [{k: m[k] for k in ("level", "tile", "box", "reason")} for m in miss[:20]],
            },
        }

    # ------------------------------------------------------------ construction
    @classmethod
    def from_array(
        cls,
        image,
        mpp: Optional[float] = None,
        *,
        chunk: int = 1024,
        min_size: int = 1024,
        path: Optional[str] = None,
        format: str = "array",
        **kw,
    ) -> "Slide":
        """Wrap an in-memory or dask ``(Y, X, 3)`` uint8 image; lower levels are computed lazily (2x means)."""
        import dask.array as da

        a = image if isinstance(image, da.Array) else da.from_array(np.asarray(image), chunks=(chunk, chunk, 3))
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise ValueError(f"expected a (Y, X, 3) uint8 image, got shape {a.shape} dtype {a.dtype}")
        levels, downs = [a], [1.0]
        while max(levels[-1].shape[:2]) > min_size and min(levels[-1].shape[:2]) >= 2:
            levels.append(downsample2(levels[-1]))
            downs.append(downs[-1] * 2)
        return cls(
            levels=levels,
            downsamples=downs,
            mpp=mpp,
            mpp_source="user" if mpp else None,
            path=path,
            format=format,
            **kw,
        )


def _jsonable(v) -> bool:
    import json

    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def _file_size(path) -> Optional[int]:
    """Size in bytes of a file, or the summed size of a directory (OME-Zarr)."""
    import os

    if not path:
        return None
    try:
        if os.path.isdir(path):
            total = 0
            for root, _, files in os.walk(path):
                for f in files:
                    try:
                        total += os.path.getsize(os.path.join(root, f))
                    except OSError:
                        pass
            return total
        return os.path.getsize(path)
    except OSError:
        return None


def downsample2(a):
    """Lazy 2x2 mean downsampling of a ``(Y, X, 3)`` uint8 dask array (odd edges dropped)."""
    import dask.array as da

    H, W = (int(a.shape[0]) // 2) * 2, (int(a.shape[1]) // 2) * 2
    a = a[:H, :W]
    # keep chunks even so coarsen works chunk-wise
    ch = max(2, (a.chunks[0][0] // 2) * 2)
    cw = max(2, (a.chunks[1][0] // 2) * 2)
    a = a.rechunk((ch, cw, 3))
    out = da.coarsen(np.mean, a.astype(np.float32), {0: 2, 1: 2}, trim_excess=True)
    return (out + 0.5).astype(np.uint8)
