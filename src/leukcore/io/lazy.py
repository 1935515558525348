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
from .errors import CorruptSlideError, SlideError

__all__ = ["LevelReader", "Source", "as_dask", "choose_chunks", "file_token", "level_downsample"]


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
        obj = self._obj
        if obj is None:
            with self._lock:
                if self._obj is None:
                    self._obj = self.opener(*self.args)
                obj = self._obj
        return obj

    def close(self) -> None:
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

    def __init__(self, path, source: Source, getter: Callable, axes: str, shape_yx, level: int = 0,
                 convert: Optional[dict] = None):
        self.path = str(path)
        self.source = source
        self.getter = getter
        self.axes = axes
        self.shape = (int(shape_yx[0]), int(shape_yx[1]), 3)
        self.level = level
        self.convert = convert or {}
        #: number of native reads (used by laziness tests)
        self.n_reads = 0

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
            key = key[:i] + (slice(None),) * (3 - len(key) + 1) + key[i + 1:]
        key = key + (slice(None),) * (3 - len(key))
        (ys, ydrop), (xs, xdrop) = self._norm(key[0], self.shape[0]), self._norm(key[1], self.shape[1])
        cs = key[2]
        if ys.stop <= ys.start or xs.stop <= xs.start:
            out = np.empty((max(0, len(range(ys.start, ys.stop, ys.step))),
                            max(0, len(range(xs.start, xs.stop, xs.step))), 3), np.uint8)
        else:
            out = self._read(ys, xs)
        out = out[:, :, cs]
        if xdrop:
            out = out[:, 0]
        if ydrop:
            out = out[0]
        return out

    def _read(self, ys: slice, xs: slice) -> np.ndarray:
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
        try:
            arr = self.getter(self.source.get())
            block = np.asarray(arr[tuple(idx)])
            self.n_reads += 1
            if "C" in order:
                block = np.moveaxis(block, [order.index("Y"), order.index("X"), order.index("C")], [0, 1, 2])
            else:
                block = np.moveaxis(block, [order.index("Y"), order.index("X")], [0, 1])
            return to_rgb8(block, **self.convert)
        except SlideError:
            raise
        except MemoryError:
            raise
        except Exception as e:  # decoder / IO failures of any library
            raise CorruptSlideError(
                self.path, f"cannot read pixels of level {self.level} "
                f"(rows {ys.start}:{ys.stop}, cols {xs.start}:{xs.stop}): {type(e).__name__}: {e}") from e


def choose_chunks(native, shape_yx, target: int = 1024):
    """Dask chunk sizes that are whole multiples of the native chunk, close to ``target``."""
    out = []
    for n, size in zip(native, shape_yx):
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

    return da.from_array(reader, chunks=(int(chunks[0]), int(chunks[1]), 3), name=name, lock=False,
                         asarray=False, fancy=False, meta=np.empty((0, 0, 3), np.uint8))


def level_downsample(shape0, shape) -> float:
    """Downsample of a level from its shape: the mean y/x ratio, snapped to the nearest
    integer when within 1 % (pyramids halve with floor, so 1700 -> 212 is 8, not 8.02)."""
    r = 0.5 * (shape0[0] / max(1, shape[0]) + shape0[1] / max(1, shape[1]))
    n = round(r)
    return float(n) if n >= 1 and abs(r - n) <= 0.01 * r else float(r)
