"""From a config to labelled, de-duplicated, split images and their per-cell crops."""

from __future__ import annotations

import numpy as np

from ..classify.geometry import CropSpec
from . import datasets as ds
from .splits import assign_splits

__all__ = ["read_datasets", "make_finder", "spec_from_config", "prepare"]


def spec_from_config(cfg: dict) -> CropSpec:
    """The crop spec of a training config (``model.input``)."""
    return CropSpec.from_card(cfg["model"]["input"])


def read_datasets(cfg: dict, report: dict | None = None):
    """Read every dataset of the config, map labels, add ``stain_group``, de-duplicate, split."""
    import pandas as pd

    frames = []
    corr_reports: list = []
    for d in cfg["data"]["datasets"]:
        f = _read_dataset(d, cfg, corr_reports)
        if "cell_type" not in f:
            f["cell_type"] = None
        frames.append(f)
    df = pd.concat(frames, ignore_index=True)
    rep: dict = {}
    df = ds.deduplicate(df, report=rep)
    classes = cfg.get("classes") or sorted(df["label"].unique())
    bad = ~df["label"].isin(classes)
    if bad.any():
        rep["dropped_unlisted_labels"] = int(bad.sum())
        df = df[~bad].reset_index(drop=True)
    fixed = None
    if "fixed_split" in df and df["fixed_split"].notna().any():  # rows with a set split skip the splitter
        held = df["fixed_split"].notna().to_numpy()
        fixed = df[held].assign(split=df.loc[held, "fixed_split"])
        df = df[~held].reset_index(drop=True)
    if corr_reports:
        rep["corrections"] = corr_reports
    dd = cfg["data"]
    if dd.get("max_images_per_class"):
        n = int(dd["max_images_per_class"])
        rng = np.random.default_rng(int(dd["seed"]))
        keep = np.concatenate(
            [rng.permutation(np.flatnonzero(df["label"].to_numpy() == c))[:n] for c in sorted(df["label"].unique())]
        )
        df = df.iloc[np.sort(keep)].reset_index(drop=True)
    df = assign_splits(
        df,
        test_frac=dd["test_frac"],
        val_frac=dd["val_frac"],
        seed=dd["seed"],
        holdout_sources=tuple(dd.get("holdout_sources") or ()),
    )
    if fixed is not None:
        st = df.attrs["split_type"]
        df = pd.concat([df, fixed], ignore_index=True)
        df.attrs["split_type"] = st
    if report is not None:
        report.update(rep)
        report["split_type"] = df.attrs["split_type"]
        report["images_per_split"] = {k: int(v) for k, v in df["split"].value_counts().items()}
    return df, list(classes)


def _read_dataset(d: dict, cfg: dict, corr_reports: list):
    """One dataset entry of the config as a frame (``stain_group`` set; a corrections entry's report appended)."""
    r = d["reader"]
    if r == "all4class":
        f = ds.read_all4class(d.get("root"))
        f["stain_group"] = f["label"]
        if d.get("label_map"):
            f["label"] = f["label"].map(lambda x, m=d["label_map"]: m.get(x, x))
    elif r == "pbc":
        classes = d.get("classes") or [c for c in ds.PBC_CLASSES if c not in cfg["data"].get("exclude_pbc_classes", [])]
        f = ds.read_pbc(d.get("root"), classes=classes, label=d.get("label", "normal"))
        f["stain_group"] = "pbc"
    elif r == "bccd":
        f = ds.read_bccd(d.get("root"), label=d.get("label", "normal"))
        f["stain_group"] = "bccd"
    elif r == "cnmc":
        f = ds.read_cnmc(d["root"])
        f["stain_group"] = f["label"]
    elif r == "corrections":  # a reviewer's corrected cells (docs/review.md)
        crep: dict = {}
        f = ds.read_corrections(d["root"], slides=d.get("slides"), report=crep)
        f["stain_group"] = "corrections"
        split = d.get("split", "train")  # extra training data unless `split: auto`
        f["fixed_split"] = None if split == "auto" else split
        corr_reports.append({"root": str(d["root"]), "split": split, **crep})
    else:
        f = ds.read_folder_per_class(
            d["root"],
            d.get("classes"),
            source=d.get("source", "folder"),
            kind=d.get("kind", "cell"),
            mpp=float(d.get("mpp", float("nan"))),
            label_map=d.get("label_map"),
        )
        f["stain_group"] = f["label"]
    return f


def make_finder(cfg: dict, device="cpu"):
    """The cell finder a training config's ``data.finder`` names: the detector, the segmented masks or the centre."""
    from .cells import centre_finder, detector_finder, segmented_finder

    f = cfg["data"]["finder"]
    if f == "detector":
        return detector_finder(cfg["data"].get("detector", "wbc-stardist"), device=device)
    if f == "segmented":
        root = ds.data_root() / "all4class"
        return segmented_finder(str(root / "Original"), str(root / "Segmented"))
    centre_finder.name = "centre"
    return centre_finder


def cap_train_cells(cells: dict, cap: int, seed: int = 0) -> dict:
    """Keep at most ``cap`` cells of each **training** image (a seeded random choice among its cells);
    validation and test keep all (a field is evaluated from all its detected cells).  ``n_cells`` still
    counts every detected cell.
    """
    keep = np.ones(len(cells["row"]), bool)
    tr = np.flatnonzero(cells["split"] == "train")
    if len(tr):
        perm = tr[np.random.default_rng(seed).permutation(len(tr))]
        perm = perm[np.argsort(cells["row"][perm], kind="stable")]  # grouped by image, random within
        rows = cells["row"][perm]
        first = np.r_[0, np.flatnonzero(np.diff(rows)) + 1]
        rank = np.arange(len(rows)) - np.repeat(first, np.diff(np.r_[first, len(rows)]))
        keep[perm[rank >= cap]] = False
    n = len(keep)
    return {
        k: (v[keep] if isinstance(v, np.ndarray) and len(v) == n and k not in ("n_cells", "found") else v)
        for k, v in cells.items()
    }


def _build_cells(df, spec, finder, *, max_cells_per_image: int, only_cached: bool) -> dict:
    """:func:`build_cell_set` of the image rows plus, for ``slide-cell`` rows (corrections), the crop read
    from the slide at the cell's centroid (:func:`leukcore.corrections.correction_crops`); rows in ``df`` order.
    """
    from .cells import build_cell_set

    sl = (df["kind"] == "slide-cell").to_numpy() if "kind" in df else np.zeros(len(df), bool)
    if not sl.any():
        return build_cell_set(df, spec, finder, max_cells_per_image=max_cells_per_image, only_cached=only_cached)
    from ..corrections import correction_crops

    img, sli = np.flatnonzero(~sl), np.flatnonzero(sl)
    n_cells, found = np.zeros(len(df), int), np.ones(len(df), bool)
    crops, rows, cents = [], [], []
    if len(img):
        c = build_cell_set(
            df.iloc[img].reset_index(drop=True),
            spec,
            finder,
            max_cells_per_image=max_cells_per_image,
            only_cached=only_cached,
        )
        crops.append(c["crops"])
        rows.append(img[c["row"]])
        cents.append(c["centroid"])
        n_cells[img], found[img] = c["n_cells"], c["found"]
    cc, cz = correction_crops(df.iloc[sli], spec)
    crops.append(cc)
    rows.append(sli)
    cents.append(cz)
    n_cells[sli] = 1
    row = np.concatenate(rows)
    order = np.argsort(row, kind="stable")
    return {
        "crops": np.concatenate(crops)[order],
        "row": row[order],
        "centroid": np.concatenate(cents)[order],
        "n_cells": n_cells,
        "found": found,
    }


def prepare(cfg: dict, device="cpu", report: dict | None = None):
    """``(df, classes, spec, cells)`` where ``cells`` adds ``label`` (class index), ``split`` and ``field`` per crop."""
    df, classes = read_datasets(cfg, report)
    spec = spec_from_config(cfg)
    only = bool(cfg["data"].get("only_cached"))
    finder = make_finder(cfg, device)
    from .cells import cell_cache_dir
    from .scales import with_crop_mpp

    df = with_crop_mpp(df, cfg["data"].get("crop_mpp", "folder"), cell_cache_dir())  # "folder": df as is
    cells = _build_cells(df, spec, finder, max_cells_per_image=cfg["data"]["max_cells_per_image"], only_cached=only)
    lab = df["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    cells["label"] = lab[cells["row"]].astype(int)
    cells["split"] = df["split"].to_numpy()[cells["row"]]
    cap = cfg["data"].get("max_train_cells_per_image")
    if cap is not None and len(cells["row"]):
        cells = cap_train_cells(cells, int(cap), seed=int(cfg["data"].get("seed", 0)))
    if report is not None:
        report["finder"] = getattr(
            finder, "name", str(cfg["data"]["finder"])
        )  # detector: name, weights sha, thresholds
        nc = cells["n_cells"]
        report["cells"] = int(len(cells["row"]))
        report["images_without_cells"] = int(((nc == 0) & cells["found"]).sum())
        if only:
            nf = ~cells["found"]
            report["images_not_run_through_finder"] = {
                k: int((nf & (df["split"].to_numpy() == k)).sum()) for k in ("train", "val", "test")
            }
        report["cells_per_split"] = {k: int((cells["split"] == k).sum()) for k in ("train", "val", "test")}
    return df, classes, spec, cells
