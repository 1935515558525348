"""The level pyramid of :func:`leukcore.io.write.write_slide`, streamed: level 0 computed one band of tile rows
at a time, each band 2x2-mean-downsampled into the next level's buffer in the same pass (in memory when
small, else a temporary memory-mapped file), so every level costs one pass over the level above it.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Iterator, Optional

import numpy as np

from .slide import local_scheduler

__all__ = ["Pyramid", "pyramid_shapes", "tiles_of"]

#: next-level buffers larger than this go to a temporary raw file (read/written by row bands)
_MEM_BUFFER_BYTES = 64 * 2**20


class _DiskBuffer:
    """A ``(H, W, 3)`` uint8 image in a raw temporary file, written and read in full-width row bands.

    Uses ``pread`` / ``pwrite`` rather than a memory map, so the pages of a level
    being built do not accumulate in the process's resident memory.
    """

    ndim = 3
    dtype = np.dtype(np.uint8)

    def __init__(self, path: str, shape):
        self.shape = (int(shape[0]), int(shape[1]), 3)
        self.row_bytes = self.shape[1] * 3
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self.fd, self.shape[0] * self.row_bytes)

    def __setitem__(self, rows: slice, value: np.ndarray) -> None:
        r0 = rows.start or 0
        v = np.ascontiguousarray(value, dtype=np.uint8)
        assert v.shape[1:] == self.shape[1:], (v.shape, self.shape)
        os.pwrite(self.fd, v.tobytes(), r0 * self.row_bytes)

    def __getitem__(self, key) -> np.ndarray:
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        r0, r1, _ = rows.indices(self.shape[0])
        n = max(0, r1 - r0)
        buf = os.pread(self.fd, n * self.row_bytes, r0 * self.row_bytes)
        return np.frombuffer(buf, np.uint8).reshape(n, self.shape[1], 3)[:, cols]

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:  # pragma: no cover
            pass


def pyramid_shapes(shape_yx, min_size: int = 512) -> list[tuple[int, int]]:
    """Level shapes: halve (floor) until the longer side is <= ``min_size``."""
    h, w = int(shape_yx[0]), int(shape_yx[1])
    out = [(h, w)]
    while max(h, w) > min_size and min(h, w) >= 2:
        h, w = h // 2, w // 2
        out.append((h, w))
    return out


def _band_rows(src, tile: int, width: int) -> int:
    """Rows per computed band: a multiple of ``tile`` matching the source chunking when cheap."""
    ch = getattr(src, "chunks", None)
    if ch is not None and isinstance(ch, tuple) and ch and isinstance(ch[0], tuple):
        c0 = int(ch[0][0])
        if c0 > tile and c0 % tile == 0 and c0 * width * 3 <= 256 * 2**20:
            return c0
    return tile


def _compute(block):
    """Materialise a band; dask chunks are stored straight into one preallocated array
    (no concatenation copy, so the peak is about one band).
    """
    if hasattr(block, "dask") and hasattr(block, "chunks"):
        import dask.array as da

        out = np.empty(block.shape, block.dtype)
        # local threads: under a dask.distributed Client (the default scheduler once one exists) the
        # store would run in worker processes and leave ``out`` unwritten
        da.store(block, out, lock=False, scheduler=local_scheduler())
        return out
    if hasattr(block, "compute"):
        return np.asarray(block.compute(scheduler=local_scheduler()))
    return np.asarray(block)


def _ds2_block(b: np.ndarray, step: int = 4096) -> np.ndarray:
    """2x2 mean (rounded) of a band, in column slabs so temporaries stay small."""
    h, w = (b.shape[0] // 2) * 2, (b.shape[1] // 2) * 2
    out = np.empty((h // 2, w // 2, 3), np.uint8)
    for c0 in range(0, w, step):
        c1 = min(w, c0 + step)
        s = b[0:h:2, c0:c1:2].astype(np.uint16)
        s += b[1:h:2, c0:c1:2]
        s += b[0:h:2, c0 + 1 : c1 : 2]
        s += b[1:h:2, c0 + 1 : c1 : 2]
        s += 2
        s //= 4
        out[:, c0 // 2 : c1 // 2] = s
    return out


class Pyramid:
    """Streams bands of each level; downsampling into the next level happens during the pass."""

    def __init__(self, level0, shapes, tile: int, tmpdir: str, progress: Optional[Callable[[int, int], None]] = None):
        self.srcs = {0: level0}
        self.shapes = shapes
        self.tile = tile
        self.tmpdir = tmpdir
        self.progress = progress
        self.total = sum(math.ceil(h / tile) for h, _ in shapes)
        self.done = 0
        self._open: list = []

    def _buffer(self, i, shape):
        h, w = shape
        if h * w * 3 <= _MEM_BUFFER_BYTES:
            return np.full((h, w, 3), 255, np.uint8)
        buf = _DiskBuffer(os.path.join(self.tmpdir, f"level{i}.raw"), (h, w))
        self._open.append(buf)
        return buf

    def close(self) -> None:
        """Close the temporary level buffers."""
        for b in self._open:
            b.close()
        self._open.clear()

    def bands(self, i) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(row0, band)`` of level ``i`` (must be consumed in level order)."""
        src = self.srcs.pop(i)  # level 0: the input; others: the buffer filled by the pass above
        h, w = self.shapes[i]
        nxt = self._buffer(i + 1, self.shapes[i + 1]) if i + 1 < len(self.shapes) else None
        if nxt is not None:
            self.srcs[i + 1] = nxt  # filled during this pass, read by the next (tifffile may not
            # exhaust this generator, so nothing may depend on code after the last yield)
        band = _band_rows(src, self.tile, w) if i == 0 else self.tile
        for r0 in range(0, h, band):
            r1 = min(h, r0 + band)
            blk = _compute(src[r0:r1, :w])
            if nxt is not None:
                d = _ds2_block(blk)
                nh = min(d.shape[0], nxt.shape[0] - r0 // 2)
                if nh > 0:
                    nxt[r0 // 2 : r0 // 2 + nh] = d[:nh, : nxt.shape[1]]
            for k in range(0, r1 - r0, self.tile):
                yield r0 + k, blk[k : k + self.tile]
                self.done += 1
                if self.progress is not None:
                    self.progress(self.done, self.total)


def tiles_of(bands: Iterator[tuple[int, np.ndarray]], tile: int, width: int) -> Iterator[np.ndarray]:
    """The ``tile`` x ``tile`` tiles of each band, row by row (edge tiles padded with white)."""
    for _, b in bands:
        for c0 in range(0, width, tile):
            t = b[:, c0 : c0 + tile]
            if t.shape[0] != tile or t.shape[1] != tile:
                pad = np.full((tile, tile, 3), 255, np.uint8)
                pad[: t.shape[0], : t.shape[1]] = t
                t = pad
            yield np.ascontiguousarray(t)
