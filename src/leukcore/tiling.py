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

The grid also owns what detection does with tiles, so that the detector only runs networks:

* **windows** (:meth:`TileGrid.windows`): inside a tile, the sub-windows around marked candidate
  blocks (a bool block map over the grid, :meth:`TileGrid.tiles_with_blocks`, :func:`points_in_blocks`);
* **strips** (:func:`strips`): a window over a pixel budget cut into horizontal strips that overlap by
  a margin, with the rows each strip contributes;
* **seams** (:class:`SeamGuard`, :meth:`Tile.near_core_edge`): the global de-duplication of objects
  reported near core edges, on top of the ownership rule;
* **coordinates** (:class:`GridFrame`): grid pixels <-> level-0 pixels of the slide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np

__all__ = [
    "Tile",
    "TileGrid",
    "GridFrame",
    "SeamGuard",
    "dedupe_points",
    "points_in_blocks",
    "strips",
    "box_area",
    "box_union",
]


def box_area(box) -> int:
    """Pixels of a half-open ``(y0, x0, y1, x1)`` box."""
    return (box[2] - box[0]) * (box[3] - box[1])


def box_union(a, b) -> tuple:
    """Smallest box holding boxes ``a`` and ``b``."""
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


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
        """``(height, width)`` of the read box (core + halo)."""
        return (self.read[2] - self.read[0], self.read[3] - self.read[1])

    def owns(self, points: np.ndarray) -> np.ndarray:
        """Boolean mask of ``(N, 2)`` grid-pixel points (y, x) whose centre lies in this core."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        y0, x0, y1, x1 = self.core
        return (p[:, 0] >= y0) & (p[:, 0] < y1) & (p[:, 1] >= x0) & (p[:, 1] < x1)

    def near_core_edge(self, points: np.ndarray, margin: float) -> np.ndarray:
        """Boolean mask of ``(N, 2)`` points closer than ``margin`` to an edge of this core (either side)."""
        y0, x0, y1, x1 = self.core
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return (p[:, 0] - y0 < margin) | (y1 - p[:, 0] < margin) | (p[:, 1] - x0 < margin) | (x1 - p[:, 1] < margin)


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

    def __init__(
        self,
        shape: Sequence[int],
        tile: int = 1024,
        halo: int = 64,
        *,
        multiple: int = 1,
        max_object: Optional[float] = None,
        trim_edges: bool = True,
    ):
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
            raise ValueError(
                f"TileGrid: halo {self.halo} px must exceed the largest object ({max_object:.0f} px); "
                "objects at tile seams would be cut"
            )
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
        """The :class:`Tile` at grid row ``row``, column ``col``."""
        H, W = self.shape
        t, h, m = self.tile, self.halo, self.multiple
        y0, x0 = row * t, col * t
        y1, x1 = min(y0 + t, H), min(x0 + t, W)
        ry1 = y0 + t + h
        rx1 = x0 + t + h
        if self.trim_edges:
            ry1 = y0 + int(math.ceil((y1 - y0 + h) / m) * m)
            rx1 = x0 + int(math.ceil((x1 - x0 + h) / m) * m)
        return Tile(
            index=row * self.n_cols + col, row=row, col=col, core=(y0, x0, y1, x1), read=(y0 - h, x0 - h, ry1, rx1)
        )

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

    # ------------------------------------------------------------ candidate blocks and windows
    def block_edge(self, block: int) -> int:
        """Candidate-block edge dividing the tile edge: the largest of ``block``, /2, /4... that does (>= 1)."""
        b = int(block)
        while b > 1 and self.tile % b:
            b //= 2
        return max(1, b)

    def tiles_with_blocks(self, blocks: np.ndarray, block: int) -> np.ndarray:
        """Bool per tile: its core holds a marked block of the ``(rows, cols)`` block map (edge ``block``)."""
        tb = self.tile // block
        pad = np.zeros((self.n_rows * tb, self.n_cols * tb), bool)
        pad[: blocks.shape[0], : blocks.shape[1]] = blocks
        return pad.reshape(self.n_rows, tb, self.n_cols, tb).any(axis=(1, 3)).ravel()

    def windows(self, tile: Tile, blocks: np.ndarray, block: int, halo: int, max_share: float = 1.0) -> list:
        """Sub-windows of ``tile`` around its marked blocks, as :class:`Tile` objects (index of ``tile``).

        Each window's core is a union of 8-connected marked blocks inside the tile's core, merged with another
        while their cores overlap or the union reads no more pixels than the two apart (window cores are
        disjoint); its read box is the core grown by ``halo`` and clipped to the tile's read box (a multiple
        of :attr:`multiple` when ``halo``, ``block`` and the tile are).  ``[]`` when the tile holds no marked
        block; ``[tile]`` when the windows would read more than ``max_share`` of the tile's read box.
        """
        tb = self.tile // block
        sub = blocks[tile.row * tb : (tile.row + 1) * tb, tile.col * tb : (tile.col + 1) * tb]
        if not sub.any():
            return []
        from scipy import ndimage as ndi

        cy0, cx0, cy1, cx1 = tile.core
        ry1, rx1 = tile.read[2], tile.read[3]

        def read_of(core):
            return (
                core[0] - halo,
                core[1] - halo,
                ry1 if core[2] >= cy1 else core[2] + halo,
                rx1 if core[3] >= cx1 else core[3] + halo,
            )

        lab, _ = ndi.label(sub, structure=np.ones((3, 3), int))
        cores = [
            (
                cy0 + sl[0].start * block,
                cx0 + sl[1].start * block,
                min(cy0 + sl[0].stop * block, cy1),
                min(cx0 + sl[1].stop * block, cx1),
            )
            for sl in ndi.find_objects(lab)
        ]
        cores = _merge_cores(cores, read_of)
        wins = [Tile(index=tile.index, row=tile.row, col=tile.col, core=c, read=read_of(c)) for c in cores]
        if sum(box_area(w.read) for w in wins) > max_share * box_area(tile.read):
            return [tile]
        return wins

    def core_map(self) -> np.ndarray:
        """(H, W) int array: owner tile of every pixel (for tests / display; small images only)."""
        H, W = self.shape
        rows = np.minimum(np.arange(H) // self.tile, self.n_rows - 1)
        cols = np.minimum(np.arange(W) // self.tile, self.n_cols - 1)
        return rows[:, None] * self.n_cols + cols[None, :]


def _merge_cores(cores: list, read_of) -> list:
    """Merge window cores while two overlap or their union reads no more pixels than the two apart."""
    cores = list(cores)
    changed = True
    while changed and len(cores) > 1:
        changed = False
        for i in range(len(cores)):
            for j in range(i + 1, len(cores)):
                a, b = cores[i], cores[j]
                u = box_union(a, b)
                if _overlap(a, b) or box_area(read_of(u)) <= box_area(read_of(a)) + box_area(read_of(b)):
                    cores[i] = u
                    del cores[j]
                    changed = True
                    break
            if changed:
                break
    return cores


def points_in_blocks(points: np.ndarray, blocks: np.ndarray, block: int) -> np.ndarray:
    """Bool per ``(N, 2)`` grid point: it lies in a marked block of the block map (edge ``block``)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    r = np.clip(np.floor(p[:, 0] / block).astype(np.int64), 0, blocks.shape[0] - 1)
    c = np.clip(np.floor(p[:, 1] / block).astype(np.int64), 0, blocks.shape[1] - 1)
    return blocks[r, c]


def strips(height: int, width: int, budget: float, margin: int, multiple: int = 1) -> Optional[list]:
    """Horizontal strips of a ``height`` x ``width`` window, each read with ``margin`` rows on both sides.

    Returns ``[(y0, y1, r0, r1), ...]``: the strip contributes rows ``y0:y1`` and is read as rows ``r0:r1``
    (``r1 - r0`` rows of ``width`` px stay within ``budget`` pixels; strip heights are multiples of
    ``multiple``, so a network's pooling grid stays aligned), or ``None`` when the budget is too narrow
    for this width (read the window in one piece).
    """
    m = max(1, int(multiple))
    h = (int(budget // width) - 2 * margin) // m * m
    if h < max(m, margin):
        return None
    return [(y0, min(height, y0 + h), max(0, y0 - margin), min(height, y0 + h + margin)) for y0 in range(0, height, h)]


@dataclass(frozen=True)
class GridFrame:
    """Where a grid lies on the slide: grid pixel ``(y, x)`` has its centre at level-0
    ``origin + (p + 0.5) * ds - 0.5`` (pixel-centre convention; ``ds`` level-0 px per grid px).
    """

    origin: tuple
    ds: float

    def to_level0(self, pts: np.ndarray) -> np.ndarray:
        """Grid (y, x) -> level-0 (y, x), float64, any leading shape."""
        p = np.asarray(pts, dtype=np.float64)
        out = (p + 0.5) * self.ds - 0.5
        out[..., 0] += self.origin[0]
        out[..., 1] += self.origin[1]
        return out

    def from_level0(self, pts: np.ndarray) -> np.ndarray:
        """Level-0 (y, x) -> grid (y, x) (the inverse of :meth:`to_level0`)."""
        p = np.array(pts, dtype=np.float64)
        p[..., 0] -= self.origin[0]
        p[..., 1] -= self.origin[1]
        return (p + 0.5) / self.ds - 0.5


class SeamGuard:
    """The global safety net behind the ownership rule: objects kept near a core edge are remembered,
    and a later tile's object within ``radius`` of one of them is a duplicate (the two tiles placed the
    same object's centre in their own cores).
    """

    def __init__(self, radius: float):
        self.radius = float(radius)
        self.points = np.zeros((0, 2))

    def keep(self, tile: Tile, points: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """``keep`` with the duplicates of remembered seam objects dropped; remembers this tile's kept
        objects near its core edges.  ``points`` are grid (y, x) centres.
        """
        keep = np.array(keep, dtype=bool)
        near = tile.near_core_edge(points, 2 * self.radius)
        if len(self.points) and near.any():
            from scipy.spatial import cKDTree

            d, _ = cKDTree(self.points).query(np.asarray(points)[near], k=1)
            keep[np.nonzero(near)[0][d < self.radius]] = False
        if near.any():
            self.points = np.concatenate([self.points, np.asarray(points)[near & keep]])
        return keep


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
