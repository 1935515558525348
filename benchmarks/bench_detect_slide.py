"""Whole-slide detection: seam exactness, throughput vs. the naive full path, peak memory.

``seams``
    One mosaic of real four-class (CC BY 4.0) + BCCD (MIT) fields at 0.25 um/px (default
    6,000 px square, :func:`leukcore.sample.build_mosaic` -> :func:`leukcore.io.write_slide`);
    ``detect_cells`` with tile sizes 512, 1024, 2048 (working px).  Same cells?  (count, max
    centroid distance after one-to-one nearest matching, level-0 px).
``throughput``
    ``--kind smear`` (default): a smear-like slide (>= 20,000 px square, 0.5 um/px = the
    network's pixel size, so the level-0 reference is fair) written by ``write_slide``: a carpet
    of real BCCD red-cell patches without white cells, with real BCCD WBC crops at a stated
    density (red cells per mm^2 of the carpet / 700, x ``--factor``; see :func:`smear`).
    ``--kind dense``: the packed four-class + BCCD field mosaic (0.25 um/px), the worst case.
    Fast path = ``detect_cells`` defaults (candidate blocks + sub-windows), end to end (open +
    plan + read + network + NMS), on the whole slide (``--no-whole``: extrapolated from the
    sub-regions) and on ``--n-sub`` random ``--sub`` px sub-regions (seed ``--seed``).  Full
    path = the same network on every level-0 tile (no skipping, no working-resolution choice),
    on the same sub-regions, extrapolated per level-0 pixel to the whole slide.  Relative recall:
    share of full-path cells in the sub-regions with a fast-path cell within 4 um.  Smear slides
    also report recall against the placed WBC centres (6 um).  ``tiles`` = tile-level skipping
    only (``windows=False``).  Each run is a fresh process (its own peak RSS).
``memory``
    Peak RSS on 20,000 and 60,000 px slides (a repeated real tile): the full plan
    (candidate search over the whole slide) and N vs 4N batches, then cancelled.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_detect_slide.py seams [--size 6000]
    nice -n 10 .venv/bin/python benchmarks/bench_detect_slide.py throughput --size 20000 --n-sub 12 --no-tiles
    nice -n 10 .venv/bin/python benchmarks/bench_detect_slide.py throughput --size 20000 --factor 10 --n-sub 6 --no-whole
    nice -n 10 .venv/bin/python benchmarks/bench_detect_slide.py throughput --kind dense --size 20000 --n-sub 2 --no-whole
    nice -n 10 .venv/bin/python benchmarks/bench_detect_slide.py memory [--batches 5]

The development machine has 2 shared CPU cores, the network uses 1 thread here (``LEUK_BENCH_THREADS``;
``LEUK_BENCH_BACKEND`` = auto | torch | onnx, ``LEUK_BENCH_WINDOWS`` = exact | tight for the fast path):
absolute speeds are those of one busy CPU core.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = Path(os.environ.get("LEUK_BENCH_WORK", "/tmp/leuk-bench-detect"))


def mosaic(size: int, seed: int = 0, mpp: float = 0.25) -> Path:
    from leukcore.sample import MosaicOptions, build_mosaic, data_root

    out = WORK / (f"mosaic_{size}.ome.tif" if mpp == 0.25 else f"mosaic_{size}_{mpp:g}.ome.tif")
    if out.exists():
        return out
    WORK.mkdir(parents=True, exist_ok=True)
    d = data_root()
    files = []
    for cls in ("Benign", "Early", "Pre", "Pro"):
        files += sorted((d / "all4class" / "Original" / cls).glob("*.jpg"))
    files += sorted((d / "bccd" / "BCCD" / "JPEGImages").glob("*.jpg"))
    cell = int(round(470 * 0.25 / mpp))
    n = int(np.ceil(size / cell))
    t = time.perf_counter()
    build_mosaic(files, out, grid=(n, n), mpp=mpp, shuffle=seed, options=MosaicOptions(cell=cell))
    print(f"built {out} ({n * cell} px square) in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return out


# --------------------------------------------------------------------------- smear-like slide
#: level-0 pixel size of the smear slide: a 20x scan, the detector's own scale (fair level-0 reference)
SMEAR_MPP = 0.5
#: edge of the background patches (level-0 px; 20 um)
SMEAR_PATCH = 40
#: mean area of a normal red cell (um^2): a 7.5 um disc
RBC_AREA_UM2 = math.pi * 3.75**2
#: WBC : RBC ratio of normal blood (4-11 x10^3 vs 4-6 x10^6 per uL: one WBC per 500-1000 RBCs)
NORMAL_RBC_PER_WBC = 700
#: how many times more WBCs the "leukaemic" variant has (ALL blood: often 5-20x normal)
ALL_FACTOR = 10


def _bccd_voc(xml: Path) -> dict:
    import xml.etree.ElementTree as ET

    out = {"WBC": [], "RBC": [], "Platelets": []}
    for o in ET.parse(xml).getroot().iter("object"):
        name = (o.findtext("name") or "").strip()
        b = o.find("bndbox")
        try:
            x0, y0, x1, y1 = (float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError, AttributeError):
            continue
        if name in out and x1 > x0 and y1 > y0:
            out[name].append((y0, x0, y1, x1))
    return out


def bccd_library(mpp: float = SMEAR_MPP, patch: int = SMEAR_PATCH, white_balance: bool = True) -> dict:
    """Real patches from every BCCD field (MIT), rescaled to ``mpp``.

    ``background``: ``patch``-px squares with no white cell: away (2 um) from every WBC box and
    free of any purple (nucleated) blob larger than 10 um^2 (catches unannotated WBCs; platelets,
    ~2-3 um, stay in, as on a real slide).  ``wbc``: one crop per annotated WBC (box + 2 um),
    only where no other WBC box reaches into the crop; ``centre`` = box centre in the crop.
    ``rbc_area_fraction``: share of background-patch pixels darker than the glass (Otsu on green).
    ``white_balance``: every field is first scaled channel-wise so that its glass colour
    (:func:`~leukcore.detect.data.background_color`) becomes the median glass colour of all fields,
    as one slide scanned with one white balance would be (else each field keeps its own cast).
    """
    from PIL import Image
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    from leukcore.detect.data import background_color
    from leukcore.sample import BCCD_MPP, data_root

    root = data_root() / "bccd" / "BCCD"
    s = BCCD_MPP / mpp
    m = 2.0 / mpp  # 2 um margin
    min_blob = 10.0 / mpp**2  # 10 um^2
    bgs, wbcs, fg = [], [], []
    files = sorted((root / "JPEGImages").glob("*.jpg"))
    if not files:
        raise FileNotFoundError(f"{root / 'JPEGImages'}: no BCCD fields (set LEUK_DATA)")
    fields = []
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB")
            H0, W0 = im.height, im.width
            fields.append(
                np.asarray(im.resize((max(1, round(W0 * s)), max(1, round(H0 * s))), Image.Resampling.LANCZOS))
            )
    glass = np.stack([background_color(a) for a in fields])
    common = np.median(glass, axis=0)
    for f, a, g in zip(files, fields, glass, strict=True):
        if white_balance:
            a = np.clip(a.astype(np.float32) * (common / g) + 0.5, 0, 255).astype(np.uint8)
        h, w = a.shape[:2]
        ann = _bccd_voc(root / "Annotations" / (f.stem + ".xml"))
        boxes = [tuple(v * s for v in b) for b in ann["WBC"]]
        bg = background_color(a)
        n = a.astype(np.float32) / bg * 255.0
        purple = np.minimum(n[..., 2] - n[..., 1], n[..., 0] - n[..., 1]) > 18
        lab, k = ndi.label(purple)
        big = np.zeros_like(purple)
        if k:
            sizes = ndi.sum(purple, lab, index=np.arange(1, k + 1))
            big = np.isin(lab, 1 + np.nonzero(sizes >= min_blob)[0])
        g = a[..., 1]
        try:
            dark = g < threshold_otsu(g)
        except ValueError:
            dark = np.zeros_like(g, bool)
        step = patch // 2
        for y in range(0, h - patch + 1, step):
            for x in range(0, w - patch + 1, step):
                if any(y < b[2] + m and b[0] - m < y + patch and x < b[3] + m and b[1] - m < x + patch for b in boxes):
                    continue
                if big[y : y + patch, x : x + patch].any():
                    continue
                bgs.append(a[y : y + patch, x : x + patch].copy())
                fg.append(dark[y : y + patch, x : x + patch].mean())
        for i, b in enumerate(boxes):
            y0, x0 = int(max(0, math.floor(b[0] - m))), int(max(0, math.floor(b[1] - m)))
            y1, x1 = int(min(h, math.ceil(b[2] + m))), int(min(w, math.ceil(b[3] + m)))
            if any(j != i and y0 < o[2] and o[0] < y1 and x0 < o[3] and o[1] < x1 for j, o in enumerate(boxes)):
                continue
            wbcs.append(
                {
                    "pix": a[y0:y1, x0:x1].copy(),
                    "centre": ((b[0] + b[2]) / 2 - y0, (b[1] + b[3]) / 2 - x0),
                    "box": (b[0] - y0, b[1] - x0, b[2] - y0, b[3] - x0),
                    "file": f.name,
                }
            )
    return {
        "background": bgs,
        "wbc": wbcs,
        "rbc_area_fraction": float(np.mean(fg)),
        "mpp": mpp,
        "n_fields": len(files),
        "field_scale": s,
        "glass_rgb": [round(float(v), 1) for v in common],
        "white_balance": bool(white_balance),
    }


def _dihedral(a: np.ndarray, op: int) -> np.ndarray:
    a = np.rot90(a, op % 4)
    return a[:, ::-1] if op >= 4 else a


class _SmearArray:
    """Lazy (H, W, 3) uint8 smear: a carpet of background patches with WBC crops pasted on top."""

    ndim = 3
    dtype = np.dtype(np.uint8)

    def __init__(self, size, lib, bg_idx, bg_op, wbcs, bucket):
        self.shape = (size, size, 3)
        self.lib, self.bg_idx, self.bg_op, self.wbcs, self.bucket = lib, bg_idx, bg_op, wbcs, bucket

    def __getitem__(self, key):
        y0, y1, _ = key[0].indices(self.shape[0])
        x0, x1, _ = key[1].indices(self.shape[1])
        P = SMEAR_PATCH
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        bgs = self.lib["background"]
        for r in range(y0 // P, (y1 - 1) // P + 1):
            for c in range(x0 // P, (x1 - 1) // P + 1):
                p = _dihedral(bgs[self.bg_idx[r, c]], int(self.bg_op[r, c]))
                py0, px0 = r * P, c * P
                oy0, ox0, oy1, ox1 = max(py0, y0), max(px0, x0), min(py0 + P, y1), min(px0 + P, x1)
                out[oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0] = p[oy0 - py0 : oy1 - py0, ox0 - px0 : ox1 - px0]
        B = self.bucket[0]
        seen = set()
        for br in range(y0 // B, (y1 - 1) // B + 1):
            for bc in range(x0 // B, (x1 - 1) // B + 1):
                for i in self.bucket[1].get((br, bc), ()):
                    if i in seen:
                        continue
                    seen.add(i)
                    wy, wx, li, op = self.wbcs[i]
                    p = _dihedral(self.lib["wbc"][li]["pix"], op)
                    oy0, ox0 = max(wy, y0), max(wx, x0)
                    oy1, ox1 = min(wy + p.shape[0], y1), min(wx + p.shape[1], x1)
                    if oy1 > oy0 and ox1 > ox0:
                        out[oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0] = p[oy0 - wy : oy1 - wy, ox0 - wx : ox1 - wx]
        if len(key) > 2:
            out = out[:, :, key[2]]
        return out


def _dihedral_point(cy, cx, h, w, op):
    """Where point (cy, cx) of an (h, w) patch lands after :func:`_dihedral` (pixel-centre coordinates)."""
    y, x, hh, ww = cy, cx, h, w
    for _ in range(op % 4):  # np.rot90: (y, x) -> (w - x, y) on an (h, w) array
        y, x, hh, ww = ww - x, y, ww, hh
    if op >= 4:
        x = ww - x
    return y, x


def smear(size: int, factor: float = 1.0, seed: int = 0, white_balance: bool = True) -> Path:
    """A smear-like slide of ``size`` px square at 0.5 um/px: real red-cell carpet + real WBCs at a stated density.

    Density: the background's red cells per mm^2 (its RBC area fraction / the area of a 7.5 um
    disc) divided by :data:`NORMAL_RBC_PER_WBC`, times ``factor`` (1 = normal blood, 10 = ALL).
    Writes ``<slide>.smear.json`` (density, sources, WBC centres in level-0 px).
    """
    tag = ("normal" if factor == 1 else f"x{factor:g}") + ("" if white_balance else "_rawcolour")
    out = WORK / f"smear_{size}_{tag}.ome.tif"
    meta_path = Path(str(out) + ".smear.json")
    if out.exists() and meta_path.exists():
        return out
    import dask.array as da

    from leukcore.io import WriteOptions, write_slide

    WORK.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    lib = bccd_library(white_balance=white_balance)
    rng = np.random.default_rng(seed)
    P = SMEAR_PATCH
    size = int(math.ceil(size / P) * P)
    n = size // P
    bg_idx = rng.integers(0, len(lib["background"]), (n, n)).astype(np.int32)
    bg_op = rng.integers(0, 8, (n, n)).astype(np.uint8)
    area_mm2 = (size * SMEAR_MPP / 1000.0) ** 2
    rbc_per_mm2 = lib["rbc_area_fraction"] * 1e6 / RBC_AREA_UM2
    density = rbc_per_mm2 / NORMAL_RBC_PER_WBC * factor
    n_wbc = int(round(density * area_mm2))
    B = 512
    occ = {}
    wbcs, centres = [], []
    tries = 0
    while len(wbcs) < n_wbc and tries < 50 * n_wbc:
        tries += 1
        li = int(rng.integers(0, len(lib["wbc"])))
        op = int(rng.integers(0, 8))
        ph, pw = lib["wbc"][li]["pix"].shape[:2]
        if op % 2:
            ph, pw = pw, ph
        wy, wx = int(rng.integers(0, size - ph)), int(rng.integers(0, size - pw))
        keys = [(r, c) for r in range(wy // B, (wy + ph - 1) // B + 1) for c in range(wx // B, (wx + pw - 1) // B + 1)]
        clash = False
        for k in keys:
            for j in occ.get(k, ()):
                o = wbcs[j]
                oh, ow = (lib["wbc"][o[2]]["pix"].shape[:2])[:: (-1 if o[3] % 2 else 1)]
                if wy < o[0] + oh + 8 and o[0] < wy + ph + 8 and wx < o[1] + ow + 8 and o[1] < wx + pw + 8:
                    clash = True
                    break
            if clash:
                break
        if clash:
            continue
        for k in keys:
            occ.setdefault(k, []).append(len(wbcs))
        wbcs.append((wy, wx, li, op))
        h0, w0 = lib["wbc"][li]["pix"].shape[:2]
        cy, cx = lib["wbc"][li]["centre"]
        dy, dx = _dihedral_point(cy, cx, h0, w0, op)
        centres.append((wy + dy - 0.5, wx + dx - 0.5))
    arr = _SmearArray(size, lib, bg_idx, bg_op, wbcs, (B, occ))
    img = da.from_array(
        arr,
        chunks=(512, 512, 3),
        name=f"leuk-smear-{size}-{tag}-{seed}",
        lock=False,
        asarray=False,
        fancy=False,
        meta=np.empty((0, 0, 3), np.uint8),
    )
    desc = (
        f"leukcore smear-like benchmark slide: BCCD (MIT) red-cell background patches of {P} px and "
        f"{len(wbcs)} real BCCD WBC crops at {density:.1f} WBC/mm^2, {SMEAR_MPP} um/px"
    )
    about = WriteOptions(
        quality=90,
        description=desc,
        name="leukcore smear",
        attribution="BCCD, MIT licence, Copyright (c) 2017 shenggan. Rescaled and tiled by leukcore.",
    )
    write_slide(out, img, mpp=SMEAR_MPP, tile=512, compression="jpeg", options=about)
    meta = {
        "size": size,
        "mpp": SMEAR_MPP,
        "seed": seed,
        "factor": factor,
        "area_mm2": round(area_mm2, 2),
        "background_source": f"{len(lib['background'])} BCCD patches of {P} px ({P * SMEAR_MPP:g} um) from "
        f"{lib['n_fields']} fields, no WBC box within 2 um, no purple blob > 10 um^2",
        "wbc_source": f"{len(lib['wbc'])} BCCD WBC crops (box + 2 um), one WBC each",
        "white_balance": (
            f"every field scaled to the median glass colour {lib['glass_rgb']} (one slide, one scanner white balance)"
            if white_balance
            else "none (each BCCD field keeps its own colour cast)"
        ),
        "rbc_area_fraction": round(lib["rbc_area_fraction"], 4),
        "rbc_per_mm2": round(rbc_per_mm2, 0),
        "rbc_per_wbc_normal": NORMAL_RBC_PER_WBC,
        "density_wbc_per_mm2": round(len(wbcs) / area_mm2, 2),
        "density_rule": (
            f"red cells per mm^2 of the background (RBC area fraction / area of a 7.5 um disc) "
            f"/ {NORMAL_RBC_PER_WBC} (normal blood: one WBC per 500-1000 RBC)"
            + (f" x {factor:g} (ALL blood: often 5-20x more WBCs)" if factor != 1 else "")
        ),
        "n_wbc": len(wbcs),
        "wbc_centres": [[round(a, 1), round(b, 1)] for a, b in centres],
        "build_s": round(time.perf_counter() - t, 1),
    }
    meta_path.write_text(json.dumps(meta))
    print(
        f"built {out} ({size} px, {len(wbcs)} WBCs, {meta['density_wbc_per_mm2']} WBC/mm^2) in {meta['build_s']:.0f} s",
        file=sys.stderr,
    )
    return out


def run_child(args: list[str]) -> dict:
    """Run one detection in a fresh process (peak RSS of that run alone)."""
    cmd = [sys.executable, __file__, "_child", *args]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def child(argv):
    import resource

    ap = argparse.ArgumentParser()
    ap.add_argument("slide")
    ap.add_argument("--model", default="wbc-stardist")
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--region", type=int, nargs=4, default=None)
    ap.add_argument("--regions", type=int, nargs="+", default=None, help="several boxes, run one after another")
    ap.add_argument("--mode", default="fast", choices=["fast", "tiles", "full", "noskip"])
    ap.add_argument("--cells-out", default=None)
    ap.add_argument("--max-batches", type=int, default=None)
    ap.add_argument("--backend", default=os.environ.get("LEUK_BENCH_BACKEND", "auto"))
    ap.add_argument("--threads", type=int, default=int(os.environ.get("LEUK_BENCH_THREADS", "1")))
    ap.add_argument("--windows", default=os.environ.get("LEUK_BENCH_WINDOWS", "default"))
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    from leukcore.detect import Detector, detect_cells
    from leukcore.io import open_slide
    from leukcore.progress import CancelToken

    det = Detector.load(a.model, device="auto", backend=a.backend, threads=a.threads)
    win = True if a.windows == "default" else a.windows
    tok = CancelToken()
    n = [0]

    def prog(ev):
        n[0] += 1
        if a.max_batches and n[0] > a.max_batches:
            tok.cancel()

    regions = [tuple(a.region) if a.region else None]
    if a.regions:
        if len(a.regions) % 4:
            raise SystemExit("--regions: groups of 4 numbers (y0 x0 y1 x1)")
        regions = [tuple(a.regions[i : i + 4]) for i in range(0, len(a.regions), 4)]
    runs, cells = [], []
    t_all = time.perf_counter()
    for region in regions:
        n[0] = 0
        t0 = time.perf_counter()
        with open_slide(a.slide) as s:
            H, W = s.shape
            if a.mode == "full":
                # naive: level 0, pretend the slide is at the network's pixel size, every tile
                s = s.with_mpp(det.mpp, "user")
                t = detect_cells(s, det, tile_size=a.tile, region=region, skip_empty=False, progress=prog, cancel=tok)
            else:
                t = detect_cells(
                    s,
                    det,
                    tile_size=a.tile,
                    region=region,
                    skip_empty=(a.mode in ("fast", "tiles")),
                    windows=(win if a.mode == "fast" else False),
                    progress=prog,
                    cancel=tok,
                )
        dt = time.perf_counter() - t0
        cells.append(t.df[["centroid_y", "centroid_x"]].to_numpy())
        reg = region or (0, 0, H, W)
        mp = (reg[2] - reg[0]) * (reg[3] - reg[1]) / 1e6
        runs.append(
            {
                "region": list(reg),
                "seconds": round(dt, 2),
                "megapixels": round(mp, 2),
                "mp_per_s": round(mp / dt, 3),
                "cells": len(t),
                "tiles_run": t.meta.get("tiles_run"),
                "n_tiles": t.meta.get("n_tiles"),
                "windows_run": t.meta.get("windows_run"),
                "network_mpx": round((t.meta.get("px_run") or 0) / 1e6, 2),
                "working_mpp": t.meta.get("working_mpp"),
                "partial": t.partial,
                "backend": det.backend,
                "threads": det.threads,
                "window_mode": t.meta.get("window_mode"),
            }
        )
    dt = time.perf_counter() - t_all
    if a.cells_out:
        np.save(a.cells_out, np.concatenate(cells) if cells else np.zeros((0, 2)))
    mp = sum(r["megapixels"] for r in runs)
    out = {
        "mode": a.mode,
        "seconds": round(dt, 2),
        "megapixels": round(mp, 2),
        "mp_per_s": round(mp / dt, 3),
        "cells": sum(r["cells"] for r in runs),
        "tiles_run": sum(r["tiles_run"] or 0 for r in runs),
        "n_tiles": sum(r["n_tiles"] or 0 for r in runs),
        "windows_run": sum(r["windows_run"] or 0 for r in runs),
        "network_mpx": round(sum(r["network_mpx"] for r in runs), 2),
        "working_mpp": runs[0]["working_mpp"],
        "partial": any(r["partial"] for r in runs),
        "backend": runs[0]["backend"],
        "threads": runs[0]["threads"],
        "window_mode": runs[0]["window_mode"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if len(runs) > 1:
        out["regions"] = runs
    print(json.dumps(out))


def match(a: np.ndarray, b: np.ndarray, tol: float):
    """One-to-one nearest matching within ``tol``: (n_matched, max distance of matched)."""
    if len(a) == 0 or len(b) == 0:
        return 0, 0.0
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial import cKDTree

    tree = cKDTree(b)
    pairs = tree.sparse_distance_matrix(cKDTree(a), tol, output_type="coo_matrix")
    if pairs.nnz == 0:
        return 0, 0.0
    import scipy.sparse as sp

    m = sp.csr_matrix((tol + 1 - pairs.data, (pairs.col, pairs.row)), shape=(len(a), len(b))).toarray()
    r, c = linear_sum_assignment(-m)
    ok = m[r, c] > 0
    d = np.hypot(*(a[r[ok]] - b[c[ok]]).T)
    return int(ok.sum()), float(d.max()) if ok.any() else 0.0


def seams(a):
    path = mosaic(a.size)
    res = {}
    cells = {}
    for ts in (512, 1024, 2048):
        f = WORK / f"seam_{ts}.npy"
        res[ts] = run_child([str(path), "--tile", str(ts), "--cells-out", str(f), "--model", a.model])
        cells[ts] = np.load(f)
    ref = cells[512]
    rows = {}
    for ts in (1024, 2048):
        n, dmax = match(cells[ts], ref, tol=8.0)
        rows[str(ts)] = {
            "cells": len(cells[ts]),
            "cells_512": len(ref),
            "matched": n,
            "max_centroid_dist_px": round(dmax, 4),
            "same": bool(n == len(ref) == len(cells[ts]) and dmax <= 1.0),
        }
    out = {"slide": str(path), "size": a.size, "runs": {str(k): v for k, v in res.items()}, "vs_512": rows}
    (RESULTS / "bench_detect_seams.json").write_text(json.dumps(out, indent=2))
    print(f"{'tile':>6s} {'cells':>7s} {'matched':>8s} {'max d (px)':>10s}  same")
    print(f"{512:6d} {len(ref):7d}")
    for ts, r in rows.items():
        print(f"{ts:>6s} {r['cells']:7d} {r['matched']:8d} {r['max_centroid_dist_px']:10.3f}  {r['same']}")


def pick_regions(H: int, W: int, sub: int, n: int, seed: int = 0) -> list:
    """``n`` non-overlapping random ``sub``-px squares (fixed seed), origins multiples of 4."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(1000 * n):
        if len(out) >= n:
            break
        y0 = int(rng.integers(0, H - sub + 1)) // 4 * 4
        x0 = int(rng.integers(0, W - sub + 1)) // 4 * 4
        if any(y0 < r[2] and r[0] < y0 + sub and x0 < r[3] and r[1] < x0 + sub for r in out):
            continue
        out.append([y0, x0, y0 + sub, x0 + sub])
    return out


def _in_boxes(p: np.ndarray, boxes) -> np.ndarray:
    m = np.zeros(len(p), bool)
    for y0, x0, y1, x1 in boxes:
        m |= (p[:, 0] >= y0) & (p[:, 0] < y1) & (p[:, 1] >= x0) & (p[:, 1] < x1)
    return m


def throughput(a):
    from leukcore.io import open_slide

    if a.kind == "smear":
        path = smear(a.size, factor=a.factor, seed=a.seed, white_balance=not a.raw_colour)
        sm = json.loads(Path(str(path) + ".smear.json").read_text())
    else:
        path = mosaic(a.size, mpp=a.mpp)
        sm = None
    with open_slide(path) as s:
        H, W = s.shape
        mpp = s.mpp
    total_mp = H * W / 1e6
    regs = pick_regions(H, W, a.sub, a.n_sub, a.seed)
    flat = [str(v) for r in regs for v in r]
    common = ["--model", a.model, "--tile", str(a.tile)]
    rn = {}
    for mode in ("fast", "tiles", "full"):
        if mode == "tiles" and a.no_tiles:
            continue
        rn[mode] = run_child(
            [str(path), "--regions", *flat, "--mode", mode, "--cells-out", str(WORK / f"tp_{mode}_sub.npy"), *common]
        )
        print(f"  {mode} on {len(regs)} sub-regions: {rn[mode]['seconds']} s", file=sys.stderr)
    fast_all = None
    if not a.no_whole:
        fast_all = run_child([str(path), "--cells-out", str(WORK / "tp_fast_all.npy"), *common])
        print(f"  fast on the whole slide: {fast_all['seconds']} s", file=sys.stderr)
    cells = {k: np.load(WORK / f"tp_{k}_sub.npy") for k in rn}
    tol = 4.0 / mpp  # 4 um
    full_c = cells["full"]
    fast_c = np.load(WORK / "tp_fast_all.npy") if fast_all else cells["fast"]
    fast_in = fast_c[_in_boxes(fast_c, regs)]
    n_full, _ = match(full_c, fast_in, tol)
    rel = {
        "fast_vs_full": round(n_full / max(len(full_c), 1), 4),
        "fast_cells_in_regions": int(len(fast_in)),
        "full_cells_in_regions": int(len(full_c)),
        "matched": int(n_full),
        "fast_extra": int(len(fast_in) - n_full),
    }
    if "tiles" in cells:
        n_t, _ = match(cells["tiles"], fast_in, tol)
        rel["fast_vs_tile_skip"] = round(n_t / max(len(cells["tiles"]), 1), 4)
    full_s_per_mp = rn["full"]["seconds"] / rn["full"]["megapixels"]
    full_extrap = full_s_per_mp * total_mp
    fast_s = fast_all["seconds"] if fast_all else rn["fast"]["seconds"] / rn["fast"]["megapixels"] * total_mp
    out = {
        "slide": str(path),
        "kind": a.kind,
        "shape": [H, W],
        "mpp": mpp,
        "megapixels": round(total_mp, 1),
        "smear": ({k: v for k, v in sm.items() if k != "wbc_centres"} if sm else None),
        "fast_whole_slide": fast_all,
        "fast_note": (
            "fast path run on the whole slide, end to end (open + plan + read + network + NMS)"
            if fast_all
            else "fast path extrapolated per level-0 pixel from the sub-regions"
        ),
        "sub_regions": {"boxes": regs, "seed": a.seed, "edge_px": a.sub, **rn},
        "full_path_extrapolated_s": round(full_extrap, 1),
        "full_path_note": (
            f"full path (every level-0 tile, no skipping) measured on {len(regs)} random "
            f"{a.sub} px sub-regions (seed {a.seed}) and extrapolated per level-0 pixel"
        ),
        "speedup": round(full_extrap / fast_s, 2),
        "speedup_same_pixels": round(rn["full"]["seconds"] / rn["fast"]["seconds"], 2),
        "fast_mp_per_s": round(total_mp / fast_s, 3),
        "relative_recall": rel,
        "relative_recall_vs_full": rel["fast_vs_full"],
        "match_tolerance_um": 4.0,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": 1,
            "load_avg_end": [round(v, 2) for v in os.getloadavg()],
        },
    }
    if sm:
        gt = np.asarray(sm["wbc_centres"], float).reshape(-1, 2)
        gt_in = gt[_in_boxes(gt, regs)]
        tol_gt = 6.0 / mpp
        rows = {"tolerance_um": 6.0, "placed_in_regions": int(len(gt_in))}
        for k, c in (("full", full_c), ("fast", fast_in)):
            n_m, _ = match(gt_in, c, tol_gt)
            rows[k] = round(n_m / max(len(gt_in), 1), 4)
        if fast_all:
            n_m, _ = match(gt, fast_c, tol_gt)
            rows["fast_whole_slide"] = round(n_m / max(len(gt), 1), 4)
            rows["placed"] = int(len(gt))
        out["recall_vs_placed_wbc"] = rows
    if a.kind == "smear":
        tag = ("" if a.factor == 1 else f"_x{a.factor:g}") + ("_rawcolour" if a.raw_colour else "")
        name = a.out or ("bench_detect_throughput.json" if not tag else f"bench_detect_throughput_smear{tag}.json")
    else:
        name = a.out or f"bench_detect_throughput_dense{'' if a.mpp == 0.25 else f'_{a.mpp:g}'}.json"
    (RESULTS / name).write_text(json.dumps(out, indent=2))
    print(
        f"slide {H}x{W} px ({total_mp:.0f} MP) at {mpp} um/px"
        + (f", {sm['density_wbc_per_mm2']} WBC/mm^2 ({sm['n_wbc']} placed)" if sm else "")
    )
    print(f"{'path':38s} {'s':>8s} {'MP/s':>7s} {'cells':>6s} {'tiles':>11s} {'net MP':>7s} {'RSS MB':>7s}")
    for k, r in (
        ("fast, whole slide", fast_all),
        ("fast (windows), sub-regions", rn.get("fast")),
        ("tile skip only, sub-regions", rn.get("tiles")),
        ("full (level 0, all), sub-regions", rn.get("full")),
    ):
        if r:
            print(
                f"{k:38s} {r['seconds']:8.1f} {r['mp_per_s']:7.3f} {r['cells']:6d} "
                f"{str(r['tiles_run']) + '/' + str(r['n_tiles']):>11s} {r['network_mpx']:7.1f} {r['peak_rss_mb']:7.0f}"
            )
    print(
        f"speed-up fast vs full: {out['speedup']}x (whole-slide fast vs extrapolated full), "
        f"{out['speedup_same_pixels']}x on the same sub-regions; relative recall vs full {rel['fast_vs_full']} "
        f"({rel['matched']}/{rel['full_cells_in_regions']})"
        + (
            f"; recall vs placed WBCs: fast {out['recall_vs_placed_wbc']['fast']}, full {out['recall_vs_placed_wbc']['full']}"
            if sm
            else ""
        )
    )


def memory(a):
    """Peak RSS on 20k and 60k px slides (repeated real tile): plan + N batches, then cancel."""
    from leukcore.io import open_slide
    from leukcore.testing.bigslide import write_repeated_tile_slide

    src = mosaic(6000)
    with open_slide(src) as s:
        tile = s.read_region(0, 1024, 1024, 512, 512)
    rows = {}
    for size in (20000, 60000):
        path = WORK / f"repeated_{size}.ome.tif"
        if not path.exists():
            write_repeated_tile_slide(str(path), (size, size), tile, mpp=0.25)
        for nb in (a.batches, a.batches * 4):
            r = run_child([str(path), "--tile", str(a.mem_tile), "--max-batches", str(nb), "--model", a.model])
            rows[f"{size}_{nb}"] = {"size": size, "batches": nb, **r}
            print(
                f"{size:6d} px, {nb:3d} batches of 4 x {a.mem_tile} px tiles: peak RSS {r['peak_rss_mb']:.0f} MB, "
                f"{r['seconds']:.0f} s, {r['cells']} cells, tiles run {r['tiles_run']}/{r['n_tiles']} (partial={r['partial']})"
            )
    from leukcore.detect import onnx_backend

    name = "bench_detect_memory.json" if a.mem_tile == 256 else f"bench_detect_memory_t{a.mem_tile}.json"
    (RESULTS / name).write_text(
        json.dumps(
            {
                "note": "repeated real 512-px tile (from a real-field mosaic) written as a pyramidal OME-TIFF at "
                "0.25 um/px; detection cancelled after N batches (the plan, incl. the candidate search over "
                "the whole slide, always runs in full)",
                "tile": a.mem_tile,
                "onnx_memory": onnx_backend.MEMORY,
                "runs": rows,
            },
            indent=2,
        )
    )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        return child(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["seams", "throughput", "memory"])
    ap.add_argument("--batches", type=int, default=5, help="memory: batches before cancelling (and 4x that)")
    ap.add_argument("--mem-tile", type=int, default=256, help="memory: tile size (working px)")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--sub", type=int, default=2048, help="throughput: sub-region edge (level-0 px)")
    ap.add_argument("--n-sub", type=int, default=4, help="throughput: number of random sub-regions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--kind",
        choices=["smear", "dense"],
        default="smear",
        help="throughput slide: smear-like (0.5 um/px, stated WBC density) or the dense field mosaic",
    )
    ap.add_argument("--factor", type=float, default=1.0, help="smear: WBC density x this (1 normal, 10 ALL)")
    ap.add_argument("--mpp", type=float, default=0.25, help="dense mosaic: level-0 pixel size")
    ap.add_argument(
        "--raw-colour",
        action="store_true",
        help="smear: keep each source field's colour cast (no common white balance)",
    )
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--no-tiles", action="store_true", help="throughput: skip the tile-level-skip reference")
    ap.add_argument("--out", default=None, help="throughput: JSON file name under benchmarks/results")
    ap.add_argument("--model", default="wbc-stardist")
    ap.add_argument("--no-whole", action="store_true", help="extrapolate the fast path from the sub-regions too")
    a = ap.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if a.what == "seams":
        a.size = a.size or 6000
        seams(a)
    elif a.what == "memory":
        memory(a)
    else:
        a.size = a.size or 20000
        throughput(a)


if __name__ == "__main__":
    main()
