"""Real-data mosaics and the bundled sample slide.

:func:`build_mosaic` assembles real smear fields (JPEG/PNG files) into one large
whole-slide image with ONE physical pixel size: every field is rescaled from its
own pixel size to the mosaic's, placed on a grid, and the mosaic is written as
a pyramidal OME-TIFF with :func:`leukcore.io.write_slide`.  The image is built
lazily (a dask array over an array-like that renders only the fields under the
requested window), so 60k x 60k mosaics are written chunk by chunk.

:func:`sample_slide_path` builds the small bundled sample slide (from the fields
in ``leukcore/data/sample``) on first use into the user cache directory.

Field pixel sizes
-----------------
The source datasets state no pixel size, so it was measured from red cells
(normal RBC diameter ~7.5 um): Otsu threshold on the green channel, connected
components that are round (solidity > 0.93, eccentricity < 0.6), not touching
the border and not purple (blue < red + 25), median equivalent diameter over
~30 fields per folder.  Measured median RBC diameters (px): four-class Benign
16.4 (5 cells), Early 16.7 (2), Pro 14.8 (73); Pre had too few isolated RBCs
and was judged by eye (~19 px); BCCD 88 px (45).  Hence the constants below
(um/px = 7.5 / diameter), rounded; they are rough (+-15 %), which is fine for
placing fields on a common scale, not for morphometry.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import threading
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from .io.write import WriteOptions

__all__ = [
    "build_mosaic",
    "MosaicOptions",
    "sample_slide_path",
    "bundled_fields",
    "Field",
    "Mosaic",
    "field_mpp_for",
    "FOURCLASS_MPP",
    "BCCD_MPP",
    "SAMPLE_MPP",
    "ATTRIBUTION",
    "data_root",
    "cache_dir",
    "render_field",
]

#: measured pixel size (um/px) of the four-class (Aria / Ghaderzadeh) fields, per class folder
FOURCLASS_MPP = {"Benign": 0.46, "Early": 0.45, "Pre": 0.40, "Pro": 0.51}
#: measured pixel size (um/px) of the BCCD fields
BCCD_MPP = 0.085
#: pixel size of the bundled sample slide
SAMPLE_MPP = 0.25
#: bump when the sample layout / rendering changes (invalidates cached sample slides)
SAMPLE_VERSION = 2

ATTRIBUTION = (
    "Fields: B-ALL four-class dataset, Aria, Ghaderzadeh et al., CC BY 4.0 "
    "(Ghaderzadeh et al., Int J Intell Syst 2022, doi:10.1002/int.22753); "
    "BCCD, MIT licence, Copyright (c) 2017 shenggan. Rescaled and tiled by leukcore."
)

_SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "sample"


def data_root() -> Path:
    """The shared real-data folder: :func:`leukcore.paths.data_dir` (``$LEUK_DATA`` or ``<repo>/../shared/data``)."""
    from .paths import data_dir

    return data_dir()


def cache_dir() -> Path:
    """Where built sample slides go: :func:`leukcore.paths.cache_dir` (``$LEUK_CACHE`` or the user cache)."""
    from .paths import cache_dir as _cache_dir

    return _cache_dir()


@dataclass
class Field:
    """One source field: its file, dataset, per-field label and pixel size (um/px)."""

    path: str
    source: str  # "all4class" | "bccd" | "other"
    label: Optional[str] = None
    mpp: Optional[float] = None


def field_mpp_for(path) -> tuple[str, Optional[str], Optional[float]]:
    """``(source, label, mpp)`` guessed from a field's path (dataset folder / file name)."""
    p = Path(path)
    parts = [s.lower() for s in p.parts]
    name = p.name
    if "bccd" in parts or name.startswith("BloodImage_"):
        return "bccd", None, BCCD_MPP
    for cls in FOURCLASS_MPP:
        if cls.lower() in parts or f"-{cls}-" in name or name.startswith(f"WBC-{cls}-"):
            return "all4class", cls, FOURCLASS_MPP[cls]
    return "other", None, None


def bundled_fields() -> list[Field]:
    """The real fields shipped in ``leukcore/data/sample`` (24 four-class, 8 BCCD), sorted."""
    out = []
    for p in sorted(_SAMPLE_DIR.rglob("*.jpg")):
        src, label, mpp = field_mpp_for(p)
        out.append(Field(str(p), src, label, mpp))
    return out


def _bccd_wbc_boxes(path) -> list[tuple[float, float, float, float]]:
    """WBC boxes (y0, x0, y1, x1) from a BCCD VOC XML next to the image (if any)."""
    p = Path(path)
    cands = [p.with_suffix(".xml"), p.parent.parent / "Annotations" / (p.stem + ".xml")]
    for x in cands:
        if x.exists():
            try:
                root = ET.parse(x).getroot()
            except ET.ParseError:
                return []
            boxes = []
            for o in root.iter("object"):
                if (o.findtext("name") or "").strip() != "WBC":
                    continue
                b = o.find("bndbox")
                try:
                    x0, y0, x1, y1 = (float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
                except (TypeError, ValueError, AttributeError):
                    continue
                if x1 > x0 and y1 > y0:
                    boxes.append((y0, x0, y1, x1))
            return boxes
    return []


def _as_field(f) -> Field:
    if isinstance(f, Field):
        return f
    if isinstance(f, dict):
        src, label, mpp = field_mpp_for(f["path"])
        return Field(str(f["path"]), f.get("source", src), f.get("label", label), f.get("mpp", mpp))
    if isinstance(f, (tuple, list)):
        src, label, _ = field_mpp_for(f[0])
        return Field(str(f[0]), src, label, float(f[1]))
    src, label, mpp = field_mpp_for(f)
    return Field(str(f), src, label, mpp)


@functools.lru_cache(maxsize=128)
def render_field(path: str, out_h: int, out_w: int, mask_scale_bar: bool) -> np.ndarray:
    """Decode a field, paint over the four-class scale bar, resize to (out_h, out_w)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        a = np.array(im)
    if mask_scale_bar:
        h, w = a.shape[:2]
        # the four-class fields have a scale bar + text burned into the lower-right corner
        y0, x0 = int(h * 0.875), int(w * 0.80)
        # fill with the local background: the bright (cell-free) pixels of a band around the patch
        ring = np.concatenate(
            [a[max(0, y0 - 12) : y0, max(0, x0 - 12) :].reshape(-1, 3), a[y0:, max(0, x0 - 12) : x0].reshape(-1, 3)]
        ).astype(np.int32)
        lum = ring.sum(1)
        bg = ring[lum >= np.percentile(lum, 60)]
        a[y0:, x0:] = np.median(bg, axis=0).astype(np.uint8)
    if (out_h, out_w) != a.shape[:2]:
        im = Image.fromarray(a)
        a = np.asarray(im.resize((out_w, out_h), Image.Resampling.LANCZOS))
    return a


@dataclass
class Mosaic:
    """Description of a built mosaic (also written as ``<path>.layout.json``).

    ``fields`` holds one dict per placed field: ``file``, ``source``, ``label``,
    ``y0, x0, y1, x1`` (level-0 px, half-open), ``scale`` (mosaic px per field px)
    and ``wbc_boxes`` (BCCD annotations mapped to mosaic px, ``[y0, x0, y1, x1]``).
    """

    path: str
    shape: tuple
    mpp: float
    grid: tuple
    cell: int
    fields: list = field(default_factory=list)

    def to_json(self) -> str:
        """The layout as JSON (what ``<slide>.layout.json`` holds)."""
        return json.dumps(asdict(self), indent=1)


class _MosaicArray:
    """Array-like ``(H, W, 3)`` uint8 that renders only the fields under a requested window."""

    ndim = 3
    dtype = np.dtype(np.uint8)

    def __init__(self, shape, placements, background):
        self.shape = (int(shape[0]), int(shape[1]), 3)
        self.placements = placements  # list of (y0, x0, h, w, path, mask)
        self.background = np.asarray(background, np.uint8)
        self._cell_index = None

    def __getitem__(self, key):
        ys, xs = key[0], key[1]
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        out = np.empty((max(0, y1 - y0), max(0, x1 - x0), 3), np.uint8)
        out[:] = self.background
        for fy, fx, fh, fw, path, mask in self.placements:
            if fy >= y1 or fx >= x1 or fy + fh <= y0 or fx + fw <= x0:
                continue
            img = render_field(path, fh, fw, mask)
            oy0, ox0 = max(fy, y0), max(fx, x0)
            oy1, ox1 = min(fy + fh, y1), min(fx + fw, x1)
            out[oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0] = img[oy0 - fy : oy1 - fy, ox0 - fx : ox1 - fx]
        if len(key) > 2:
            out = out[:, :, key[2]]
        return out


def _lazy_mosaic(shape, placements, background, chunk: int):
    import dask.array as da

    arr = _MosaicArray(shape, placements, background)
    tok = hashlib.sha1(repr((shape, placements[:50], len(placements), tuple(background))).encode()).hexdigest()[:16]
    return da.from_array(
        arr,
        chunks=(chunk, chunk, 3),
        name=f"leuk-mosaic-{tok}",
        lock=False,
        asarray=False,
        fancy=False,
        meta=np.empty((0, 0, 3), np.uint8),
    )


@dataclass(frozen=True)
class MosaicOptions(WriteOptions):
    """How :func:`build_mosaic` lays out and writes a mosaic, beyond its grid, scale, pixel size and background.

    The writing options are :class:`~leukcore.io.write.WriteOptions` (``quality``, ``description``,
    ``attribution``, ``name``, ``min_level_size``, ``progress``, ``maxworkers``), with the mosaic's defaults:
    the fields' ``attribution``, a ``description`` naming the fields, grid and pixel size, ``name``
    ``"leukcore mosaic"``.

    Attributes
    ----------
    cell : int, optional
        Cell edge in mosaic px (default: the largest rescaled field + ``gap``).
    gap : int
        Margin added to the largest field when ``cell`` is not given.
    mask_scale_bar : bool
        Paint over the scale bar in the lower-right corner of four-class fields.
    tile, compression : int, str
        The written OME-TIFF's tile edge and compression (:func:`~leukcore.io.write_slide`).
    write_layout : bool
        Also write ``<out_path>.layout.json``.
    """

    attribution: Optional[str] = ATTRIBUTION
    cell: Optional[int] = None
    gap: int = 8
    mask_scale_bar: bool = True
    tile: int = 512
    compression: str = "jpeg"
    write_layout: bool = True


def build_mosaic(
    fields: Iterable,
    out_path,
    grid: Optional[tuple] = None,
    field_scale=None,
    mpp: float = SAMPLE_MPP,
    background=(242, 240, 245),
    *,
    shuffle: Optional[int] = 0,
    options: Optional[MosaicOptions] = None,
) -> Mosaic:
    """Assemble real smear fields into one pyramidal OME-TIFF at a single pixel size.

    Parameters
    ----------
    fields : iterable
        Field files (paths, :class:`Field`, ``(path, field_mpp)`` or dicts with ``path`` and
        optional ``mpp`` / ``label`` / ``source``).  Their pixel size comes from
        :func:`field_mpp_for` unless given.  Fields are reused cyclically to fill the grid.
    out_path : str or os.PathLike
        Output ``.ome.tif`` (anything :func:`~leukcore.io.write_slide` accepts).
    grid : (rows, cols), optional
        Grid of cells; default: square-ish grid holding every field once.
    field_scale : float or callable, optional
        Resize factor (mosaic px per field px) for every field, or ``callable(Field) -> factor``;
        default ``field.mpp / mpp`` (one physical pixel size across the mosaic).
    mpp : float
        Pixel size of the mosaic (um/px), written to the OME metadata.
    background : (r, g, b)
        Colour between fields.
    shuffle : int or None
        Seed for shuffling the field order (``None`` keeps the given order).
    options : MosaicOptions, optional
        Cell size, scale-bar masking, compression, attribution, description, progress, layout file
        (:class:`MosaicOptions`).

    Returns
    -------
    Mosaic
        Path, shape, mpp, grid and the placement of every field (also written as
        ``<out_path>.layout.json`` when ``write_layout``).
    """
    from .io import write_slide

    o = options or MosaicOptions()
    flist, rows, cols = _field_grid(fields, mpp, shuffle, grid)
    sizes, scaled = _scaled_sizes(flist, field_scale, mpp)
    cell = o.cell if o.cell is not None else max(max(h, w) for h, w, _ in scaled.values()) + o.gap
    H, W = rows * cell, cols * cell
    placements, layout = _place_fields(flist, sizes, scaled, (rows, cols), cell, o.mask_scale_bar)
    img = _lazy_mosaic((H, W), placements, background, chunk=o.tile)
    desc = o.description or (
        f"leukcore mosaic of {len(flist)} real blood-smear fields ({rows} x {cols} grid, {mpp} um/px)"
    )
    written = dataclasses.replace(o, description=desc, name=o.name or "leukcore mosaic")
    write_slide(out_path, img, mpp=mpp, tile=o.tile, compression=o.compression, options=written)
    mos = Mosaic(path=str(out_path), shape=(H, W), mpp=float(mpp), grid=(rows, cols), cell=int(cell), fields=layout)
    if o.write_layout:
        _write_layout(mos, out_path)
    return mos


def _write_layout(mos: Mosaic, out_path) -> None:
    """``<out_path>.layout.json``: where every field of the mosaic lies (atomically)."""
    from .results import atomic_path

    with atomic_path(str(out_path) + ".layout.json") as tmp:
        Path(tmp).write_text(mos.to_json())


def _field_grid(fields, mpp, shuffle, grid) -> tuple[list, int, int]:
    """``(fields in mosaic order, rows, cols)``; the default grid is square-ish, holding every field once."""
    flist = [_as_field(f) for f in fields]
    if not flist:
        raise ValueError("build_mosaic: no fields given")
    if not (mpp and mpp > 0):
        raise ValueError(f"build_mosaic: mpp must be positive, got {mpp!r}")
    if shuffle is not None:
        rng = np.random.default_rng(shuffle)
        flist = [flist[i] for i in rng.permutation(len(flist))]
    if grid is None:
        cols = max(1, int(math.ceil(math.sqrt(len(flist)))))
        grid = (int(math.ceil(len(flist) / cols)), cols)
    rows, cols = int(grid[0]), int(grid[1])
    if rows < 1 or cols < 1:
        raise ValueError(f"build_mosaic: bad grid {grid!r}")
    return flist, rows, cols


def _scaled_sizes(flist: list, field_scale, mpp: float) -> tuple[dict, dict]:
    """``({path: (h, w)}, {path: (scaled h, scaled w, scale)})`` of the fields (headers read, not pixels)."""
    from PIL import Image

    sizes = {}
    for f in flist:
        if not os.path.exists(f.path):
            raise FileNotFoundError(f"{f.path}: field file not found")
        with Image.open(f.path) as im:
            sizes[f.path] = (im.height, im.width)

    def scale_of(f: Field) -> float:
        if callable(field_scale):
            return float(field_scale(f))
        if field_scale is not None:
            return float(field_scale)
        if f.mpp is None:
            raise ValueError(f"{f.path}: unknown pixel size for this field; pass field_scale or (path, mpp)")
        return f.mpp / mpp

    scaled = {}
    for f in flist:
        h, w = sizes[f.path]
        s = scale_of(f)
        scaled[f.path] = (max(1, int(round(h * s))), max(1, int(round(w * s))), s)
    return sizes, scaled


def _place_fields(flist: list, sizes: dict, scaled: dict, grid: tuple, cell: int, mask_scale_bar: bool):
    """``(placements, layout)``: each grid cell's field centred in it (fields reused cyclically)."""
    rows, cols = grid
    placements, layout = [], []
    for k in range(rows * cols):
        f = flist[k % len(flist)]
        r, c = divmod(k, cols)
        fh, fw, s = scaled[f.path]
        fy = r * cell + (cell - fh) // 2
        fx = c * cell + (cell - fw) // 2
        mask = bool(mask_scale_bar and f.source == "all4class")
        placements.append((fy, fx, fh, fw, f.path, mask))
        boxes = []
        if f.source == "bccd":
            sy, sx = fh / sizes[f.path][0], fw / sizes[f.path][1]
            boxes = [[fy + b[0] * sy, fx + b[1] * sx, fy + b[2] * sy, fx + b[3] * sx] for b in _bccd_wbc_boxes(f.path)]
        layout.append(
            {
                "file": os.path.basename(f.path),
                "source": f.source,
                "label": f.label,
                "y0": fy,
                "x0": fx,
                "y1": fy + fh,
                "x1": fx + fw,
                "scale": s,
                "wbc_boxes": boxes,
            }
        )
    return placements, layout


_sample_lock = threading.Lock()


def sample_slide_path(rebuild: bool = False) -> str:
    """Path of the bundled sample slide, built on first use into :func:`cache_dir`.

    The slide is a ~3k px wide pyramidal OME-TIFF at :data:`SAMPLE_MPP` um/px made
    from the 32 real fields in ``leukcore/data/sample`` (24 four-class, 8 BCCD;
    see ``ATTRIBUTION.md`` there).  A ``.layout.json`` next to it lists where every
    field (with its class label) and every annotated BCCD WBC box lies.
    """
    fields = bundled_fields()
    if not fields:
        raise FileNotFoundError(f"{_SAMPLE_DIR}: bundled sample fields are missing")
    h = hashlib.sha1()
    h.update(f"v{SAMPLE_VERSION}:{SAMPLE_MPP}".encode())
    for f in fields:
        h.update(os.path.basename(f.path).encode())
        h.update(str(os.path.getsize(f.path)).encode())
    out = cache_dir() / f"leukcore-sample-{h.hexdigest()[:10]}.ome.tif"
    with _sample_lock:
        if rebuild or not (out.exists() and Path(str(out) + ".layout.json").exists()):
            out.parent.mkdir(parents=True, exist_ok=True)
            desc = (
                "leukcore sample slide: 24 B-ALL four-class fields (6 per class) and "
                "8 BCCD fields on one 0.25 um/px grid"
            )
            build_mosaic(
                fields,
                out,
                grid=(4, 8),
                mpp=SAMPLE_MPP,
                shuffle=7,
                options=MosaicOptions(compression="jpeg", quality=90, description=desc),
            )
    return str(out)
