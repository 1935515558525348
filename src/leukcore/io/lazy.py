"""Array-like adapters that turn a format's native pixel store into lazy RGB levels.

A :class:`LevelReader` looks like a read-only ``(Y, X, 3)`` uint8 numpy array:
indexing it reads only the native chunks under the requested window, converts
them with :func:`leukcore.io.convert.to_rgb8` and wraps any failure of the
underlying decoder in :class:`~leukcore.io.errors.CorruptSlideError` (so a
truncated tile never escapes as a bare third-party traceback).  Readers pickle
to their source description and reopen the file on first use, so slides can be
shipped to ``dask.distributed`` workers.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any, Callable, Optional

import numpy as np

from .convert import to_rgb8
from .errors import CorruptSlideError, MissingTileError, NonFinitePixelsError, SlideError

__all__ = [
    "LevelReader",
    "Source",
    "as_dask",
    "choose_chunks",
    "file_token",
    "level_downsample",
    "integrity_of_readers",
]


class Source:
    """A picklable handle on an opened file: ``get()`` returns the (re)opened native object.

    Parameters
    ----------
    opener : callable
        Module-level function (picklable) returning the native object.
    args : tuple
        Arguments for ``opener``.
    closer : callable, optional
        Called with the native object on :meth:`close`.
    """

    def __init__(self, opener: Callable, args: tuple, closer: Optional[Callable] = None, obj: Any = None):
        self.opener, self.args, self.closer = opener, args, closer
        self._obj = obj
        self._lock = threading.Lock()

    def get(self):
        """The native object, opened on first use (once per process, thread-safe)."""
        obj = self._obj
        if obj is None:
            with self._lock:
                if self._obj is None:
                    self._obj = self.opener(*self.args)
                obj = self._obj
        return obj

    def close(self) -> None:
        """Close the native object if it is open (it is reopened by the next :meth:`get`)."""
        with self._lock:
            obj, self._obj = self._obj, None
        if obj is not None and self.closer is not None:
            try:
                self.closer(obj)
            except Exception:  # pragma: no cover - closing is best effort
                pass

    def __getstate__(self):
        return {"opener": self.opener, "args": self.args, "closer": self.closer}

    def __setstate__(self, state):
        self.__init__(state["opener"], state["args"], state["closer"])


class LevelReader:
    """Read-only ``(Y, X, 3)`` uint8 view on one level of a native array.

    Parameters
    ----------
    path : str
        File name used in error messages.
    source : Source
        Handle whose ``get()`` returns the native container.
    getter : callable
        ``getter(native) -> array`` returning this level's native array (numpy-style
        basic indexing, e.g. a zarr array or an ndarray).
    axes : str
        One letter per native dimension: ``Y``, ``X``, ``C`` (channels); any other
        letter is a length-1 axis that is indexed at 0.
    shape_yx : (int, int)
        Level height and width.
    level : int
        Level index (for messages).
    convert : dict
        Keyword arguments for :func:`to_rgb8`.
    """

    ndim = 3
    dtype = np.dtype(np.uint8)

    def __init__(
        self,
        path,
        source: Source,
        getter: Callable,
        axes: str,
        shape_yx,
        level: int = 0,
        convert: Optional[dict] = None,
    ):
        self.path = str(path)
        self.source = source
        self.getter = getter
        self.axes = axes
        self.shape = (int(shape_yx[0]), int(shape_yx[1]), 3)
        self.level = level
        self.convert = convert or {}
        #: number of native reads (used by laziness tests)
        self.n_reads = 0
        #: level-0 px per px of this level (for level-0 boxes in errors and records)
        self.downsample = 1.0
        #: stored tile / chunk edge (y, x) and the tiles known at open to hold no pixel data:
        #: ``{(tile_row, tile_col): reason}``
        self.tile: Optional[tuple] = None
        self.missing: dict = {}
        #: tiles stored empty *by design* (Philips TIFF: byte count 0 = blank background): read as 255,
        #: never an error, not recorded
        self.sparse: frozenset = frozenset()
        #: ``"raise"`` (default): reading a missing tile or non-finite pixels raises
        #: :class:`MissingTileError`; ``"skip"``: they read as background (255) and are recorded
        self.policy = "raise"
        #: shared list of ``(level, y0, x0, y1, x1, reason)`` level-0 boxes skipped under ``"skip"``
        self.skipped: Optional[list] = None

    def __getstate__(self):
        d = dict(self.__dict__)
        d["n_reads"] = 0
        return d

    @staticmethod
    def _norm(s, n):
        if isinstance(s, (int, np.integer)):
            s = int(s)
            if s < 0:
                s += n
            return slice(s, s + 1), True
        if not isinstance(s, slice):
            raise TypeError(f"only basic slicing is supported, got {s!r}")
        start, stop, step = s.indices(n)
        return slice(start, max(start, stop), step), False

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (3 - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (3 - len(key))
        (ys, ydrop), (xs, xdrop) = self._norm(key[0], self.shape[0]), self._norm(key[1], self.shape[1])
        cs = key[2]
        if ys.stop <= ys.start or xs.stop <= xs.start:
            out = np.empty(
                (max(0, len(range(ys.start, ys.stop, ys.step))), max(0, len(range(xs.start, xs.stop, xs.step))), 3),
                np.uint8,
            )
        else:
            out = self._read(ys, xs)
        out = out[:, :, cs]
        if xdrop:
            out = out[:, 0]
        if ydrop:
            out = out[0]
        return out

    # ------------------------------------------------------------ integrity
    def level0_box(self, y0, x0, y1, x1) -> list:
        """A box of this level's pixels in level-0 pixels ``[y0, x0, y1, x1]`` (rounded)."""
        d = float(self.downsample or 1.0)
        return [int(round(y0 * d)), int(round(x0 * d)), int(round(y1 * d)), int(round(x1 * d))]

    def tile_box(self, ty: int, tx: int) -> tuple:
        """Level pixels ``(y0, x0, y1, x1)`` of stored tile ``(ty, tx)``."""
        th, tw = self.tile
        return (ty * th, tx * tw, min(self.shape[0], (ty + 1) * th), min(self.shape[1], (tx + 1) * tw))

    def _missing_in(self, y0, y1, x0, x1) -> list:
        if not (self.missing or self.sparse) or not self.tile:
            return []
        th, tw = self.tile
        return [
            (ty, tx)
            for ty in range(y0 // th, (y1 - 1) // th + 1)
            for tx in range(x0 // tw, (x1 - 1) // tw + 1)
            if (ty, tx) in self.missing or (ty, tx) in self.sparse
        ]

    def _missing_error(self, tiles) -> MissingTileError:
        ty, tx = tiles[0]
        y0, x0, y1, x1 = self.tile_box(ty, tx)
        box = self.level0_box(y0, x0, y1, x1)
        return MissingTileError(
            self.path,
            f"level {self.level} tile (row {ty}, col {tx}) = level-0 box y {box[0]}:{box[2]}, "
            f"x {box[1]}:{box[3]} has no pixel data ({self.missing[(ty, tx)]}); {len(self.missing)} tile(s) of "
            f"level {self.level} are missing (skip_missing=True / --skip-missing analyses the rest)",
            level=self.level,
            box=box,
        )

    def _record(self, y0, x0, y1, x1, reason):
        if self.skipped is not None:
            self.skipped.append((self.level, *self.level0_box(y0, x0, y1, x1), reason))

    # ------------------------------------------------------------ reading
    def raw(self, ys: slice, xs: slice) -> np.ndarray:
        """Stored values of a window as ``(Y, X[, C])`` (no conversion, no integrity checks)."""
        idx, order = [], []
        for ax in self.axes:
            if ax == "Y":
                idx.append(ys)
                order.append("Y")
            elif ax == "X":
                idx.append(xs)
                order.append("X")
            elif ax == "C":
                idx.append(slice(None))
                order.append("C")
            else:
                idx.append(0)
        arr = self.getter(self.source.get())
        block = np.asarray(arr[tuple(idx)])
        if "C" in order:
            return np.moveaxis(block, [order.index("Y"), order.index("X"), order.index("C")], [0, 1, 2])
        return np.moveaxis(block, [order.index("Y"), order.index("X")], [0, 1])

    def _read(self, ys: slice, xs: slice) -> np.ndarray:
        tiles = self._missing_in(ys.start, ys.stop, xs.start, xs.stop)
        if tiles:
            hard = [t for t in tiles if t in self.missing]
            if hard and self.policy != "skip":
                raise self._missing_error(hard)
            return self._read_skipping(ys, xs, tiles)
        try:
            block = self.raw(ys, xs)
            self.n_reads += 1
            bad = self._nonfinite(block)
            out = to_rgb8(block, **self.convert)
        except SlideError:
            raise
        except MemoryError:
            raise
        except Exception as e:  # decoder / IO failures of any library
            raise CorruptSlideError(
                self.path,
                f"cannot read pixels of level {self.level} "
                f"(rows {ys.start}:{ys.stop}, cols {xs.start}:{xs.stop}): {type(e).__name__}: {e}",
            ) from e
        if bad is not None:
            out = self._handle_nonfinite(out, bad, ys, xs)
        return out

    @staticmethod
    def _nonfinite(block) -> Optional[np.ndarray]:
        if block.dtype.kind != "f":
            return None
        fin = np.isfinite(block)
        if fin.all():
            return None
        return ~fin.all(axis=2) if fin.ndim == 3 else ~fin

    def _handle_nonfinite(self, out, bad, ys, xs):
        rows, cols = np.nonzero(bad)
        # window pixel -> level pixel (steps included)
        ly0, ly1 = ys.start + rows.min() * ys.step, ys.start + rows.max() * ys.step + 1
        lx0, lx1 = xs.start + cols.min() * xs.step, xs.start + cols.max() * xs.step + 1
        if self.policy != "skip":
            box = self.level0_box(ly0, lx0, ly1, lx1)
            raise NonFinitePixelsError(
                self.path,
                f"{int(bad.sum())} NaN / infinite pixel(s) in level {self.level}, level-0 box "
                f"y {box[0]}:{box[2]}, x {box[1]}:{box[3]} (not real pixel values; skip_missing=True / "
                "--skip-missing analyses the rest)",
                level=self.level,
                box=box,
            )
        out = out.copy()
        out[bad] = 255
        self._record(ly0, lx0, ly1, lx1, "NaN / infinite pixels")
        return out

    def _read_skipping(self, ys: slice, xs: slice, tiles) -> np.ndarray:
        """Read a window holding missing tiles: present tiles one by one, missing ones as background."""
        y0, y1, x0, x1 = ys.start, ys.stop, xs.start, xs.stop
        full = np.full((y1 - y0, x1 - x0, 3), 255, np.uint8)
        th, tw = self.tile
        miss = set(tiles)
        for ty in range(y0 // th, (y1 - 1) // th + 1):
            for tx in range(x0 // tw, (x1 - 1) // tw + 1):
                a0, b0, a1, b1 = self.tile_box(ty, tx)
                a0, b0, a1, b1 = max(a0, y0), max(b0, x0), min(a1, y1), min(b1, x1)
                if (ty, tx) in miss:
                    if (ty, tx) in self.missing:
                        self._record(*self.tile_box(ty, tx), self.missing[(ty, tx)])
                    continue
                full[a0 - y0 : a1 - y0, b0 - x0 : b1 - x0] = self._read(slice(a0, a1, 1), slice(b0, b1, 1))
        return full[:: ys.step, :: xs.step]

    def sample_max(self, max_pixels: int = 4_000_000) -> Optional[float]:
        """Largest finite stored value over the whole level when it is small, else over up to 16 stored
        tiles spread over it (used at open to decide 12-bit / float ranges; missing tiles are left out;
        not counted in ``n_reads``).
        """
        H, W = self.shape[:2]
        if H * W <= max_pixels or not self.tile:
            boxes = (
                [(0, 0, H, W)] if H * W <= max_pixels else [(H // 2 - 512, W // 2 - 512, H // 2 + 512, W // 2 + 512)]
            )
        else:
            th, tw = self.tile
            ny, nx = -(-H // th), -(-W // tw)
            rows = sorted(set(np.linspace(0, ny - 1, 4).round().astype(int)))
            cols = sorted(set(np.linspace(0, nx - 1, 4).round().astype(int)))
            boxes = [self.tile_box(r, c) for r in rows for c in cols if (r, c) not in self.missing]
        vmax = None
        for y0, x0, y1, x1 in boxes:
            y0, x0 = max(0, y0), max(0, x0)
            y1, x1 = min(H, y1), min(W, x1)
            if y1 <= y0 or x1 <= x0 or self._missing_in(y0, y1, x0, x1):
                continue
            if (y1 - y0) * (x1 - x0) > 4 * max_pixels:  # one huge strip: not decoded just to sample
                continue
            try:
                b = self.raw(slice(y0, y1, 1), slice(x0, x1, 1))
            except Exception:  # unreadable here: reported when read for real
                continue
            if b.ndim == 3 and b.shape[2] in (2, 4):
                b = b[..., :-1]  # alpha does not decide the range
            b = b[np.isfinite(b)] if b.dtype.kind == "f" else b
            if b.size:
                m = float(b.max())
                vmax = m if vmax is None else max(vmax, m)
        return vmax


def choose_chunks(native, shape_yx, target: int = 1024):
    """Dask chunk sizes that are whole multiples of the native chunk, close to ``target``."""
    out = []
    for n, size in zip(native, shape_yx, strict=False):
        n = max(1, int(n))
        if n >= target:
            out.append(min(n, size))
        else:
            out.append(min(size, n * max(1, int(round(target / n)))))
    return tuple(max(1, c) for c in out)


def file_token(path) -> str:
    """Stable token for a file (path, size, mtime) used to name dask graphs."""
    p = os.path.abspath(str(path))
    try:
        st = os.stat(p)
        s = f"{p}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        s = p
    return hashlib.sha1(s.encode()).hexdigest()[:16]


def as_dask(reader: LevelReader, chunks, name: str):
    """Wrap a :class:`LevelReader` as a dask array with the given ``(cy, cx)`` chunks."""
    import dask.array as da

    return da.from_array(
        reader,
        chunks=(int(chunks[0]), int(chunks[1]), 3),
        name=name,
        lock=False,
        asarray=False,
        fancy=False,
        meta=np.empty((0, 0, 3), np.uint8),
    )


def level_downsample(shape0, shape) -> float:
    """Downsample of a level from its shape: the mean y/x ratio, snapped to the nearest
    integer when within 1 % (pyramids halve with floor, so 1700 -> 212 is 8, not 8.02).
    """
    r = 0.5 * (shape0[0] / max(1, shape[0]) + shape0[1] / max(1, shape[1]))
    n = round(r)
    return float(n) if n >= 1 and abs(r - n) <= 0.01 * r else float(r)


def integrity_of_readers(readers, warnings: list) -> list:
    """The slide's ``missing`` list from its level readers' missing tiles (one warning line per level)."""
    out = []
    for r in readers:
        if r is None or not r.missing:
            continue
        for (ty, tx), why in sorted(r.missing.items()):
            out.append(
                {"level": r.level, "tile": [int(ty), int(tx)], "box": r.level0_box(*r.tile_box(ty, tx)), "reason": why}
            )
        first = next(iter(sorted(r.missing.items())))
        th, tw = r.tile
        n_all = -(-r.shape[0] // th) * -(-r.shape[1] // tw)
        warnings.append(
            f"level {r.level}: {len(r.missing)} of {n_all} stored tiles have no pixel data "
            f"(first: row {first[0][0]}, col {first[0][1]}: {first[1]}); reading them raises "
            "MissingTileError"
        )
    return out
