"""The one tiling object: a grid of tiles with halo and an ownership rule.

A :class:`TileGrid` covers an image of ``shape`` (the *working* level: the
resolution the network sees) with square **cores** of ``tile`` pixels that
partition the image exactly (every pixel lies in one core).  Each tile is read
with a **halo** of ``halo`` pixels on every side (the *read region*; parts
outside the image are padded by the reader), so that an object whose centre
lies in the core is seen whole and with context.

Ownership rule: the tile whose core holds an object's centre owns the object;
objects found in a tile's halo are dropped there (their owner tile reports
them).  :func:`dedupe_points` is the global safety net for the rare case where
two neighbouring tiles each place a slightly different centre of the same
object inside their own cores.

``halo`` must exceed the largest object (``max_object``), else a seam object
could be cut in its owner tile: the constructor refuses that.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np

__all__ = ["Tile", "TileGrid", "dedupe_points"]


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid` (all boxes ``(y0, x0, y1, x1)``, half-open, grid pixels).

    Attributes
    ----------
    index : int
        Position in row-major order.
    row, col : int
        Grid position.
    core : tuple
        The pixels this tile owns (clipped to the image).
    read : tuple
        Core grown by the halo; may extend outside the image (padded when read).
    """

    index: int
    row: int
    col: int
    core: tuple
    read: tuple

    @property
    def read_shape(self) -> tuple[int, int]:
        return (self.read[2] - self.read[0], self.read[3] - self.read[1])

    def owns(self, points: np.ndarray) -> np.ndarray:
        """Boolean mask of ``(N, 2)`` grid-pixel points (y, x) whose centre lies in this core."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        y0, x0, y1, x1 = self.core
        return (p[:, 0] >= y0) & (p[:, 0] < y1) & (p[:, 1] >= x0) & (p[:, 1] < x1)


class TileGrid:
    """Tiles with halo over an image of ``shape`` at the working level.

    Parameters
    ----------
    shape : (H, W)
        Image size in grid pixels.
    tile : int
        Core edge (pixels); rounded up to a multiple of ``multiple``.
    halo : int
        Margin read around each core; rounded up to a multiple of ``multiple``.
    multiple : int
        Read-region sizes and origins are multiples of this (the network's total
        downsampling), so tiles of any size see the same pixel grid and give the
        same predictions for the same pixels.
    max_object : float, optional
        Largest object diameter (pixels).  ``halo`` smaller than this raises.
    trim_edges : bool
        Shrink the read region of the last row / column to what the image needs
        (still a multiple of ``multiple``), saving compute on edge tiles.

    Raises
    ------
    ValueError
        Empty shape, non-positive tile, negative halo, or halo <= max_object.

    Examples
    --------
    >>> g = TileGrid((1000, 700), tile=512, halo=64)
    >>> len(g), g.n_rows, g.n_cols
    (4, 2, 2)
    >>> g.owner(600, 10)
    2
    """

    def __init__(self, shape: Sequence[int], tile: int = 1024, halo: int = 64, *, multiple: int = 1,
                 max_object: Optional[float] = None, trim_edges: bool = True):
        H, W = (int(shape[0]), int(shape[1]))
        if H <= 0 or W <= 0:
            raise ValueError(f"TileGrid: empty image shape {tuple(shape)!r}")
        if tile <= 0:
            raise ValueError(f"TileGrid: tile size must be positive, got {tile}")
        if halo < 0:
            raise ValueError(f"TileGrid: halo must be >= 0, got {halo}")
        m = max(1, int(multiple))
        self.multiple = m
        self.tile = int(math.ceil(tile / m) * m)
        self.halo = int(math.ceil(halo / m) * m)
        if max_object is not None and not self.halo > max_object:
            raise ValueError(f"TileGrid: halo {self.halo} px must exceed the largest object ({max_object:.0f} px); "
                             "objects at tile seams would be cut")
        self.shape = (H, W)
        self.n_rows = int(math.ceil(H / self.tile))
        self.n_cols = int(math.ceil(W / self.tile))
        self.trim_edges = trim_edges

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    def __repr__(self) -> str:
        return f"TileGrid(shape={self.shape}, tile={self.tile}, halo={self.halo}, tiles={len(self)})"

    def __iter__(self) -> Iterator[Tile]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, index: int) -> Tile:
        if not 0 <= index < len(self):
            raise IndexError(f"tile index {index} out of range 0..{len(self) - 1}")
        r, c = divmod(int(index), self.n_cols)
        return self.tile_at(r, c)

    def tile_at(self, row: int, col: int) -> Tile:
        H, W = self.shape
        t, h, m = self.tile, self.halo, self.multiple
        y0, x0 = row * t, col * t
        y1, x1 = min(y0 + t, H), min(x0 + t, W)
        ry1 = y0 + t + h
        rx1 = x0 + t + h
        if self.trim_edges:
            ry1 = y0 + int(math.ceil((y1 - y0 + h) / m) * m)
            rx1 = x0 + int(math.ceil((x1 - x0 + h) / m) * m)
        return Tile(index=row * self.n_cols + col, row=row, col=col, core=(y0, x0, y1, x1),
                    read=(y0 - h, x0 - h, ry1, rx1))

    def owner(self, y: float, x: float) -> int:
        """Index of the tile whose core holds point ``(y, x)`` (clipped to the image)."""
        H, W = self.shape
        r = min(max(int(math.floor(y / self.tile)), 0), self.n_rows - 1)
        c = min(max(int(math.floor(x / self.tile)), 0), self.n_cols - 1)
        return r * self.n_cols + c

    def owners(self, points: np.ndarray) -> np.ndarray:
        """Owner tile index for each ``(N, 2)`` point (vectorised :meth:`owner`)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        r = np.clip(np.floor(p[:, 0] / self.tile).astype(np.int64), 0, self.n_rows - 1)
        c = np.clip(np.floor(p[:, 1] / self.tile).astype(np.int64), 0, self.n_cols - 1)
        return r * self.n_cols + c

    def tiles_touching(self, y0: float, x0: float, y1: float, x1: float) -> list[int]:
        """Indices of tiles whose core intersects the box (clipped to the image)."""
        H, W = self.shape
        if y1 <= 0 or x1 <= 0 or y0 >= H or x0 >= W:
            return []
        r0 = max(0, int(math.floor(max(y0, 0) / self.tile)))
        r1 = min(self.n_rows - 1, int(math.floor((min(y1, H) - 1e-9) / self.tile)))
        c0 = max(0, int(math.floor(max(x0, 0) / self.tile)))
        c1 = min(self.n_cols - 1, int(math.floor((min(x1, W) - 1e-9) / self.tile)))
        return [r * self.n_cols + c for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]

    def core_map(self) -> np.ndarray:
        """(H, W) int array: owner tile of every pixel (for tests / display; small images only)."""
        H, W = self.shape
        rows = np.minimum(np.arange(H) // self.tile, self.n_rows - 1)
        cols = np.minimum(np.arange(W) // self.tile, self.n_cols - 1)
        return rows[:, None] * self.n_cols + cols[None, :]


def dedupe_points(points: np.ndarray, scores: np.ndarray, radius: float) -> np.ndarray:
    """Indices to keep so that no two kept points are closer than ``radius`` (higher score wins).

    The safety net after the ownership rule: the same object reported by two
    tiles has two nearly identical centres.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(p) < 2:
        return np.arange(len(p))
    from scipy.spatial import cKDTree

    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    tree = cKDTree(p)
    removed = np.zeros(len(p), bool)
    keep = []
    for i in order:
        if removed[i]:
            continue
        keep.append(i)
        for j in tree.query_ball_point(p[i], radius):
            if j != i:
                removed[j] = True
    return np.sort(np.asarray(keep, dtype=np.int64))
