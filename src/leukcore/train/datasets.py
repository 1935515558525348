"""Dataset readers: image lists with labels, subjects and content hashes.

Every reader returns a :class:`pandas.DataFrame` with one row per image:

``path`` (str), ``label`` (str), ``source`` (dataset name), ``subject`` (str or None),
``sha256`` (content hash), ``group`` (the unit splits must keep together), ``kind``
(``"cell"`` for single-cell images, ``"field"`` for multi-cell fields), ``mpp`` (float or NaN).

Readers
-------
:func:`read_folder_per_class`
    ``root/<class>/*.{png,jpg,bmp,tif}``.
:func:`read_cnmc`
    C-NMC 2019 (``training_data/fold_*/{all,hem}/*.bmp`` and the preliminary test set with its
    ``Patient_ID,new_names,labels`` CSV); subject IDs parsed from ``UID_<subject>_...`` /
    ``UID_H<subject>_...`` (``h`` in either case); subjects sharing byte-identical images are merged
    (union-find) before grouping.
:func:`read_all4class`
    The four-class field set (``Original/{Benign,Early,Pre,Pro}``), field-level labels.
:func:`read_pbc`
    PBC normal cells (``pbc/<class>``), all normal.
:func:`read_bccd`
    BCCD smear fields (``bccd/BCCD/JPEGImages``): white cells of a non-leukaemic smear, a third lab and
    camera, as ``kind="field"`` images with one label for every cell found in them.
:func:`read_corrections`
    A reviewer's corrections (``corrections.parquet`` beside slide results, :mod:`leukcore.corrections`):
    one row per corrected cell (``kind="slide-cell"``), the crop re-read from the slide at its centroid.

:func:`deduplicate` removes byte-identical images (content hash) before any split and reports
conflicts (the same image under two labels).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Optional

__all__ = [
    "IMAGE_EXTS",
    "data_root",
    "file_sha256",
    "read_folder_per_class",
    "read_cnmc",
    "read_all4class",
    "read_pbc",
    "read_corrections",
    "deduplicate",
    "parse_cnmc_subject",
    "UnionFind",
    "link_subjects",
    "DatasetError",
    "ALL4CLASS_CLASSES",
    "ALL4CLASS_MPP",
    "PBC_MPP",
    "PBC_CLASSES",
    "read_bccd",
    "BCCD_MPP",
]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ALL4CLASS_CLASSES = ["Benign", "Early", "Pre", "Pro"]
PBC_CLASSES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]
#: dataset-level pixel sizes, the median of :func:`leukcore.mpp.estimate_mpp` (7.5 um red cells) over the
#: fields of each set (175 four-class, 79 PBC fields sampled; per-field estimates are noisy; labels unused)
ALL4CLASS_MPP = 0.535
PBC_MPP = 0.108
#: BCCD fields (640x480 at high magnification): the median red-cell estimate over its fields
BCCD_MPP = 0.092


class DatasetError(ValueError):
    """A dataset folder or label file is missing or malformed."""


def data_root() -> Path:
    """``$LEUK_DATA`` or ``<repo>/../shared/data`` (:func:`leukcore.paths.data_dir`)."""
    from ..paths import data_dir

    return data_dir()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a whole file (:func:`leukcore.provenance.sha256_file`)."""
    from ..provenance import sha256_file

    return sha256_file(path)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def _frame(rows: list[dict]):
    import pandas as pd

    cols = ["path", "label", "source", "subject", "sha256", "group", "kind", "mpp"]
    df = pd.DataFrame(rows, columns=cols)
    df["mpp"] = df["mpp"].astype(float)
    return df


def _need_dir(p: Path, what: str) -> Path:
    if not p.is_dir():
        raise DatasetError(f"{p}: {what} folder not found")
    return p


def read_folder_per_class(
    root: str | os.PathLike,
    classes: Optional[Iterable[str]] = None,
    *,
    source: str = "folder",
    kind: str = "cell",
    mpp: float = float("nan"),
    label_map: Optional[dict] = None,
):
    """Images in ``root/<class>/``; the group is the content hash (no subjects known)."""
    root = _need_dir(Path(root), "dataset")
    names = list(classes) if classes is not None else sorted(d.name for d in root.iterdir() if d.is_dir())
    if not names:
        raise DatasetError(f"{root}: no class sub-folders")
    rows = []
    for c in names:
        d = _need_dir(root / c, f"class {c!r}")
        files = _images(d)
        if not files:
            raise DatasetError(f"{d}: no images ({', '.join(IMAGE_EXTS)})")
        for p in files:
            h = file_sha256(p)
            rows.append(
                {
                    "path": str(p),
                    "label": (label_map or {}).get(c, c),
                    "source": source,
                    "subject": None,
                    "sha256": h,
                    "group": h,
                    "kind": kind,
                    "mpp": mpp,
                }
            )
    return _frame(rows)


def read_all4class(root: str | os.PathLike | None = None, *, label_map: Optional[dict] = None):
    """The four-class B-ALL field set (``<root>/Original/<class>``); labels are per field."""
    root = Path(root) if root else data_root() / "all4class"
    orig = root / "Original" if (root / "Original").is_dir() else root
    return read_folder_per_class(
        orig, ALL4CLASS_CLASSES, source="all4class", kind="field", mpp=ALL4CLASS_MPP, label_map=label_map
    )


def read_pbc(
    root: str | os.PathLike | None = None, classes: Optional[Iterable[str]] = None, label: Optional[str] = "normal"
):
    """PBC normal cells (``<root>/<class>``); ``label=None`` keeps the cell type as the label."""
    root = Path(root) if root else data_root() / "pbc"
    df = read_folder_per_class(root, classes or PBC_CLASSES, source="pbc", kind="cell", mpp=PBC_MPP)
    df["cell_type"] = df["label"]
    if label is not None:
        df["label"] = label
    return df


def read_bccd(root: str | os.PathLike | None = None, *, label: str = "normal"):
    """BCCD fields (``<root>/JPEGImages/*.jpg`` or ``<root>/BCCD/JPEGImages``), every cell labelled ``label``.

    The BCCD smears carry no leukaemia (neutrophils, lymphocytes, monocytes, eosinophils): a source of
    normal white cells from a lab other than PBC's, so that "normal" is not one lab's look.
    """
    root = Path(root) if root else data_root() / "bccd"
    for cand in (root / "BCCD" / "JPEGImages", root / "JPEGImages", root):
        if cand.is_dir() and any(p.suffix.lower() in IMAGE_EXTS for p in cand.iterdir()):
            break
    else:
        raise DatasetError(f"{root}: no BCCD JPEGImages folder")
    return read_folder_per_class(
        cand.parent, [cand.name], source="bccd", kind="field", mpp=BCCD_MPP, label_map={cand.name: label}
    )


def read_corrections(
    root: str | os.PathLike, *, slides: Optional[str | os.PathLike] = None, report: Optional[dict] = None
):
    """Corrected cells of the reviewed results folders at or below ``root`` (reviewer's class as the label,
    ``review`` cells skipped); see :func:`leukcore.corrections.training_rows`.
    """
    from ..corrections import CorrectionsError, training_rows

    try:
        return training_rows(root, slides=slides, report=report)
    except CorrectionsError as e:
        raise DatasetError(str(e)) from None


# ------------------------------------------------------------------ C-NMC 2019
_CNMC_RE = re.compile(r"^UID_(H?)(\d+)_", re.IGNORECASE)


def parse_cnmc_subject(name: str) -> Optional[str]:
    """Subject ID from a C-NMC file name: ``UID_11_2_1_all.bmp`` -> ``"11"``, ``UID_h22_...`` -> ``"H22"``."""
    m = _CNMC_RE.match(Path(name).name)
    if not m:
        return None
    return ("H" if m.group(1) else "") + str(int(m.group(2)))


class UnionFind:
    """Minimal union-find over hashable items."""

    def __init__(self):
        self.parent: dict = {}

    def find(self, a):
        """The root of ``a``'s set (``a`` joins as its own set when new; paths are halved on the way)."""
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a, b):
        """Join the sets of ``a`` and ``b`` (the smaller root wins, so roots are stable)."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def link_subjects(df):
    """Set ``group`` so subjects sharing any byte-identical image fall into one group (union-find).

    Rows without a subject are grouped by content hash (linked to a subject when they share its image).
    """
    uf = UnionFind()
    for subj, h in zip(df["subject"], df["sha256"], strict=False):
        node = f"s:{subj}" if subj is not None and subj == subj else f"h:{h}"
        uf.union(node, f"h:{h}")
    groups = []
    for h in df["sha256"]:
        root = uf.find(f"h:{h}")
        groups.append(root)
    # name each group by the sorted subjects it holds (stable, readable)
    members: dict = {}
    for g, subj in zip(groups, df["subject"], strict=False):
        if subj is not None and subj == subj:
            members.setdefault(g, set()).add(subj)
    df = df.copy()
    df["group"] = ["+".join(sorted(members[g])) if g in members else g[2:] for g in groups]
    return df


def read_cnmc(root: str | os.PathLike, *, include_test: bool = True):
    """C-NMC 2019 training folds (and the labelled preliminary test set when present).

    Layout: ``root/training_data/fold_*/{all,hem}/*.bmp``; optionally
    ``root/validation_data/C-NMC_test_prelim_phase_data/*.bmp`` with a labels CSV
    (``Patient_ID,new_names,labels``: original name, ``N.bmp``, 1 = ALL / 0 = hem) anywhere under
    ``root/validation_data``.  Labels are ``ALL`` / ``normal`` (hem).
    """
    import pandas as pd

    root = Path(root)
    train = _need_dir(root / "training_data", "C-NMC training_data")
    rows = []
    folds = sorted(d for d in train.iterdir() if d.is_dir() and d.name.lower().startswith("fold"))
    if not folds:
        raise DatasetError(f"{train}: no fold_* folders")
    for fold in folds:
        for sub, lab in (("all", "ALL"), ("hem", "normal")):
            d = fold / sub
            if not d.is_dir():
                continue
            for p in _images(d):
                subj = parse_cnmc_subject(p.name)
                if subj is None:
                    raise DatasetError(f"{p}: file name does not start with UID_<subject>_ / UID_H<subject>_")
                rows.append(
                    {
                        "path": str(p),
                        "label": lab,
                        "source": f"cnmc/{fold.name}",
                        "subject": subj,
                        "sha256": file_sha256(p),
                        "group": None,
                        "kind": "cell",
                        "mpp": float("nan"),
                    }
                )
    if include_test and (root / "validation_data").is_dir():
        csvs = sorted((root / "validation_data").rglob("*.csv"))
        for csv in csvs:
            lab_df = pd.read_csv(csv)
            need = {"Patient_ID", "new_names", "labels"}
            if not need.issubset(lab_df.columns):
                raise DatasetError(f"{csv}: expected columns {sorted(need)}, got {list(lab_df.columns)}")
            img_dirs = [d for d in csv.parent.rglob("*") if d.is_dir()] + [csv.parent]
            for _, r in lab_df.iterrows():
                p = next((d / str(r["new_names"]) for d in img_dirs if (d / str(r["new_names"])).is_file()), None)
                if p is None:
                    raise DatasetError(f"{csv}: image {r['new_names']} listed but not found under {csv.parent}")
                lab = {1: "ALL", 0: "normal"}.get(int(r["labels"]))
                if lab is None:
                    raise DatasetError(f"{csv}: label {r['labels']!r} for {r['new_names']} is not 0 or 1")
                rows.append(
                    {
                        "path": str(p),
                        "label": lab,
                        "source": "cnmc/prelim-test",
                        "subject": parse_cnmc_subject(str(r["Patient_ID"])),
                        "sha256": file_sha256(p),
                        "group": None,
                        "kind": "cell",
                        "mpp": float("nan"),
                    }
                )
    if not rows:
        raise DatasetError(f"{root}: no C-NMC images found")
    return link_subjects(_frame(rows))


# ------------------------------------------------------------------ duplicates
def deduplicate(df, *, report: Optional[dict] = None):
    """Drop byte-identical images (same ``sha256``), keeping the first; conflicts are dropped entirely.

    Rows of one hash that carry different labels cannot be trusted and are all removed.
    ``report`` (a dict), when given, receives ``duplicates_removed`` and ``conflicts_removed``.
    The result's ``group`` is recomputed with :func:`link_subjects` so duplicates that linked two
    subjects still link them.
    """
    df = link_subjects(df) if df["subject"].notna().any() else df
    labels_per_hash = df.groupby("sha256")["label"].nunique()
    bad = set(labels_per_hash[labels_per_hash > 1].index)
    n0 = len(df)
    conflicts = int(df["sha256"].isin(bad).sum())
    out = df[~df["sha256"].isin(bad)].drop_duplicates("sha256", keep="first").reset_index(drop=True)
    if report is not None:
        report["duplicates_removed"] = n0 - conflicts - len(out)
        report["conflicts_removed"] = conflicts
        report["images"] = len(out)
    return out
