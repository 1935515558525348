"""Every fact the sign-off report shows (:func:`report_data`) and the cell thumbnails.
See :mod:`leukcore.report`.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..caveats import mpp_caveat, stain_caveat
from ..results import BLAST_CLASSES, CLASS_COLORS, CellTable, class_color
from .signoff import results_folder, sha256_or_none, signoff_state

__all__ = [
    "MANY_REVIEW_FRACTION",
    "DEFAULT_MAX_THUMBNAILS",
    "THUMB_UM",
    "THUMB_PX",
    "report_data",
    "cell_thumbnails",
    "data_uri",
]

#: more than this fraction of cells left for review is a warning (out-of-distribution slide, bad stain or scale)
MANY_REVIEW_FRACTION = 0.2
#: thumbnails per gallery (blasts, review); the rest are counted, not shown
DEFAULT_MAX_THUMBNAILS = 2000
#: thumbnail side in microns and pixels (a fixed physical size: cells compare by size across slides)
THUMB_UM = 24.0
THUMB_PX = 96
_MPP_SOURCE = {
    "metadata": "from the slide file's metadata",
    "user": "given by the user (--mpp)",
    "estimated": "estimated from the image",
}


# ------------------------------------------------------------------ thumbnails
def cell_thumbnails(
    slide, table: CellTable, rows: Sequence[int], *, size: int = THUMB_PX, crop_um: float = THUMB_UM
) -> np.ndarray:
    """``uint8 (len(rows), size, size, 3)`` crops of ``crop_um`` microns centred on the cells (read lazily,
    only these cells; :func:`leukcore.classify.extract_crops`).
    """
    from ..classify.crops import extract_crops
    from ..classify.geometry import CropSpec

    spec = CropSpec(size=int(size), crop_um=float(crop_um), mode="rgb", mask=False)
    return extract_crops(slide, table, spec, rows=list(rows), mpp=table.meta.get("mpp"))


def data_uri(rgb: np.ndarray, quality: int = 85) -> str:
    """A JPEG ``data:`` URI of an RGB image (the page holds its pictures)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ------------------------------------------------------------------ the facts
def _mpp_text(mpp: Mapping[str, Any]) -> tuple[str, Optional[str]]:
    """(text, warning or None) of the summary's ``mpp`` block."""
    v, src = mpp.get("value"), mpp.get("source")
    if not v:
        return "unknown", "pixel size unknown: sizes and crops rest on a default scale"
    text = f"{float(v):.4g} µm/px, {_MPP_SOURCE.get(src, src or 'source not recorded')}"
    if src == "estimated":
        bits = [
            b
            for b in (
                mpp.get("method"),
                f"spread {mpp['spread']:.2f}" if mpp.get("spread") is not None else None,
                f"{mpp['n_cells']} red cells" if mpp.get("n_cells") else None,
            )
            if b
        ]
        if bits:
            text += f" ({', '.join(bits)})"
        return text, mpp_caveat(mpp)
    return text, None


def _breakdowns(table: CellTable, reviewed: CellTable):
    from ..corrections import REVIEW_LABEL
    from ..differential import breakdown

    m, r = breakdown(table), breakdown(reviewed)
    rows = []
    for c in list(table.classes) + [REVIEW_LABEL]:
        is_rev = c == REVIEW_LABEL
        mc = m["review"] if is_rev else m["counts"].get(c, 0)
        rc = r["review"] if is_rev else r["counts"].get(c, 0)
        rows.append(
            {
                "name": c,
                "label": "review / unidentified" if is_rev else c,
                "is_review": is_rev,
                "color": CLASS_COLORS["unclassified"] if is_rev else class_color(c),
                "model": mc,
                "model_pct": m["percent"].get(c),
                "reviewed": rc,
                "reviewed_pct": r["percent"].get(c),
                "changed": mc != rc,
            }
        )
    return m, r, rows


def _gallery_rows(reviewed: CellTable, kind: str) -> np.ndarray:
    """Row positions of the blast (confident, blast class) or review cells, least sure first."""
    from ..corrections import REVIEW_LABEL, review_groups

    if not reviewed.is_classified:
        return np.zeros(0, int)
    g = review_groups(reviewed)
    if kind == "review":
        return g[REVIEW_LABEL]
    blasts = [g[c] for c in reviewed.classes if c in BLAST_CLASSES]
    if not blasts:
        return np.zeros(0, int)
    idx = np.concatenate(blasts)
    df = reviewed.df
    conf = df["confidence"].to_numpy(np.float64)[idx] if "confidence" in df else np.zeros(len(idx))
    return idx[np.lexsort((df["cell_id"].to_numpy()[idx], conf))]  # least sure first


def report_data(
    results: str | os.PathLike,
    *,
    reviewer: Optional[str] = None,
    max_thumbnails: Optional[int] = DEFAULT_MAX_THUMBNAILS,
    thumbnails: bool = True,
    thumb_um: float = THUMB_UM,
    thumb_px: int = THUMB_PX,
    now: Optional[str] = None,
) -> dict:
    """Every fact the report shows, as a dict (``leukcore.report_html.render`` draws it).

    Reads the folder with :func:`leukcore.export.kinds.read_results`, its corrections and sign-off, the
    recorded differential, and (``thumbnails``) crops of the blast and review cells from the slide named by the
    summary (up to ``max_thumbnails`` per gallery; None = all).
    """
    from .._version import __version__
    from ..corrections import corrections_context, corrections_digest, now_iso

    f = _ReportFacts(results_folder(results))
    f.slide_facts()
    models = f.run_state()
    m, r, rows = f.counts()
    diff = f.recorded_differential()
    galleries = f.galleries(thumbnails, max_thumbnails, thumb_px, thumb_um)
    folder, table, summary, corr, warnings = f.folder, f.table, f.summary, f.corr, f.warnings
    so = signoff_state(folder, corr)
    if so and not so["valid"]:
        warnings.append(f"sign-off by {so.get('reviewer')} is no longer valid: {so['reason']}")
    ctx = corrections_context(table, summary)
    corrected = int(len(corr))
    reviewers = sorted({str(v) for v in corr["reviewer"].tolist() if v is not None and v == v}) if corrected else []
    times = [str(v) for v in corr["time"].tolist() if v is not None and v == v] if corrected else []
    return {
        "leukcore_version": __version__,
        "generated": now or now_iso(),
        "results_dir": str(folder.resolve()),
        "slide": {"name": f.name, "path": f.sl.get("path"), "size": f.size},
        "mpp": {**f.mpp, "text": f.mpp_text},
        "region": summary.get("region"),
        "analysed_with": (
            f"leukcore {summary.get('leukcore_version', '?')} on {summary.get('device', '?')}" if summary else "unknown"
        ),
        "classes": list(table.classes),
        "blast_classes": [c for c in table.classes if c in BLAST_CLASSES],
        "model": m,
        "reviewed": r,
        "class_rows": rows,
        "review": {
            "corrected": corrected,
            "reviewers": reviewers,
            "reviewer": reviewer,
            "last_change": max(times) if times else None,
        },
        "differential": diff,
        "galleries": galleries,
        "models": models,
        "warnings": warnings,
        "notes": f.notes,
        "signoff": so,
        "run_digest": ctx.get("results_digest"),
        "corrections_sha256": corrections_digest(corr),
        "summary_sha256": sha256_or_none(folder / "summary.json") if summary else None,
    }


class _ReportFacts:
    """The facts of one report, gathered step by step, with the warnings and notes each step finds."""

    def __init__(self, folder: Path):
        from ..corrections import CorrectionsError, apply_corrections, empty_corrections_frame, load_reviewed
        from ..export.kinds import read_results

        self.folder = folder
        self.warnings: list[str] = []
        self.notes: list[str] = []
        try:
            self.table, self.reviewed, self.summary, self.corr = load_reviewed(folder)
        except CorrectionsError as e:
            self.warnings.append(f"corrections not applied: {e}")
            self.table, self.summary = read_results(folder)
            self.reviewed = apply_corrections(self.table, None) if self.table.is_classified else self.table
            self.corr = empty_corrections_frame()

    def slide_facts(self) -> None:
        """Slide name, pixel size (and its wording), size in px and mm."""
        table, summary = self.table, self.summary
        self.sl = sl = summary.get("slide") or {}
        self.name = sl.get("name") or table.meta.get("slide") or self.folder.name
        shape = sl.get("shape") or table.meta.get("shape")
        mpp = dict(summary.get("mpp") or {})
        if not mpp.get("value") and table.meta.get("mpp"):
            mpp = {"value": table.meta.get("mpp"), "source": table.meta.get("mpp_source")}
        self.mpp = mpp
        self.mpp_text, mpp_warn = _mpp_text(mpp)
        if mpp_warn:
            self.warnings.append(mpp_warn)
        stain = stain_caveat(summary.get("stain"))
        if stain:
            self.warnings.append(stain)
        size = "unknown"
        if shape:
            size = f"{int(shape[1])} × {int(shape[0])} px"
            if mpp.get("value"):
                mm = float(mpp["value"]) / 1000
                size += f" ({int(shape[1]) * mm:.2f} × {int(shape[0]) * mm:.2f} mm)"
        self.size = size

    def run_state(self) -> list:
        """Warnings about the run (partial, incomplete, integrity, region) and the models it recorded."""
        summary, warnings = self.summary, self.warnings
        if not summary:
            warnings.append("incomplete results: no summary.json (the run did not finish, or only detection ran)")
        else:
            if summary.get("partial"):
                warnings.append("partial run: the analysis was cancelled, the counts cover part of the slide")
            if not summary.get("complete"):
                warnings.append("incomplete results: summary.json does not mark the run complete")
        for w in summary.get("warnings") or []:
            warnings.append(f"slide integrity: {w}")
        miss = summary.get("missing") or {}
        if miss.get("count"):
            warnings.append(f"{miss['count']} missing region(s) of the slide were skipped")
        if summary.get("region"):
            self.notes.append(f"only a region of the slide was analysed: {summary['region']} (y0, x0, y1, x1, px)")
        models = []
        recorded = summary.get("models") or (summary.get("provenance") or {}).get("models") or {}
        for role in ("detector", "classifier"):
            rec_m = recorded.get(role)
            if rec_m:
                models.append((role, rec_m))
                if rec_m.get("weights_verified") is False:
                    warnings.append(
                        f"{role} {rec_m.get('name')}: weights not verified against its card (--trust-unverified)"
                    )
        return models

    def counts(self) -> tuple:
        """The model's and the reviewed breakdowns and the class rows."""
        table, reviewed, warnings = self.table, self.reviewed, self.warnings
        if table.is_classified:
            m, r, rows = _breakdowns(table, reviewed)
        else:
            from ..differential import breakdown

            m = r = breakdown(table)
            rows = []
            warnings.append("no classification in these results (detection only): no class counts")
        n = r["cells"]
        if n and r["review"] / n > MANY_REVIEW_FRACTION:
            warnings.append(
                f"many cells left for review: {r['review']} of {n} ({100 * r['review'] / n:.0f} %), "
                "unlike the model's training cells or below its confidence threshold; "
                "the percentages rest on the rest"
            )
        if not len(self.corr) and table.is_classified:
            self.notes.append("not reviewed: every number is the model's")
        return m, r, rows

    def recorded_differential(self) -> Optional[dict]:
        """The recorded N-cell differential, recomputed on the reviewed table (None when none)."""
        from ..differential import differential, read_differential

        diff = None
        try:
            rec = read_differential(self.folder)
        except ValueError as e:
            rec = None
            self.warnings.append(str(e))
        if rec and self.table.is_classified:
            diff = differential(
                self.reviewed,
                n=int(rec["n"]),
                order=rec["order"],
                seed=int(rec.get("seed", 0)),
                strip_um=float(rec.get("strip_um", 150.0)),
            )
            diff["reviewer"], diff["time"] = rec.get("reviewer"), rec.get("time")
            if rec.get("cell_ids") and rec["cell_ids"] != diff["cell_ids"]:
                self.warnings.append(
                    "the recorded differential's cells are not the ones its order picks now "
                    "(results changed since it was recorded)"
                )
        return diff

    def open_slide(self, thumbnails: bool, want: dict):
        """The slide for the thumbnails (or None) and why there are none / fewer."""
        from ..export.kinds import find_results_slide

        if not thumbnails:
            return None, "thumbnails off"
        if not any(len(v) for v in want.values()):
            return None, None
        path = find_results_slide(self.folder, self.table, self.summary)
        if path is None:
            self.warnings.append(f"slide not found ({self.sl.get('path') or self.name}): no cell thumbnails")
            return None, "slide not found"
        from ..io import open_slide

        try:
            return open_slide(path, mpp=self.mpp.get("value") or None), None
        except Exception as e:  # a report still comes out without pictures
            self.warnings.append(f"slide {path} cannot be opened ({e}): no cell thumbnails")
            return None, "slide cannot be opened"

    def galleries(self, thumbnails: bool, max_thumbnails: Optional[int], thumb_px: int, thumb_um: float) -> dict:
        """Thumbnails of the blast and review cells (up to ``max_thumbnails`` per gallery)."""
        reviewed = self.reviewed
        galleries = {}
        why_not = f"at most {max_thumbnails} per group" if max_thumbnails is not None else ""
        want = {k: _gallery_rows(reviewed, k) for k in ("blast", "review")}
        slide, why = self.open_slide(thumbnails, want)
        why_not = why or why_not
        try:
            df = reviewed.df
            for kind, idx in want.items():
                shown = idx if max_thumbnails is None else idx[: max(0, int(max_thumbnails))]
                if slide is None:
                    shown = shown[:0]
                crops = cell_thumbnails(slide, reviewed, shown, size=thumb_px, crop_um=thumb_um) if len(shown) else []
                thumbs = []
                for j, i in enumerate(shown):
                    lab = str(df["label"].iat[i])
                    rl = df["reviewer_label"].iat[i] if "reviewer_label" in df else None
                    shown_label = "review" if kind == "review" and rl == "review" else lab
                    thumbs.append(
                        {
                            "cell_id": int(df["cell_id"].iat[i]),
                            "label": shown_label,
                            "model_label": str(df["model_label"].iat[i]) if "model_label" in df else lab,
                            "confidence": float(df["confidence"].iat[i]) if "confidence" in df else None,
                            "color": class_color(lab) if kind == "blast" else CLASS_COLORS["unclassified"],
                            "src": data_uri(crops[j]),
                        }
                    )
                galleries[kind] = {"total": int(len(idx)), "thumbs": thumbs, "why_not": why_not}
        finally:
            if slide is not None:
                slide.close()
        return galleries
