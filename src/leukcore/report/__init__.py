"""The sign-off report of a slide's results: one self-contained HTML page (optionally PDF).

``leuk report RESULTS_DIR [-o report.html] [--pdf] [--reviewer NAME --sign]`` and :func:`write_report` read a
results folder (``leuk analyze`` / ``leuk batch`` output, reviewed or not) and write a page with the slide,
its pixel size and where that came from, counts and percentages per class as the model called them and as
reviewed (:mod:`leukcore.corrections`), the blast percentage (the summary's rule: blast classes over the
confidently classified cells), the review count, a thumbnail of every blast and every cell left for review
(crops of a fixed physical size read lazily from the slide), the models with version and weights hash,
warnings (uncertain scale, many review cells, partial or incomplete run, slide integrity, stale corrections),
the recorded N-cell differential (:mod:`leukcore.differential`) and the sign-off state.

Signing (:func:`sign_off`, ``--sign``) writes ``signoff.json`` beside the results, atomically: reviewer, time,
the sha256 of the corrections (:func:`leukcore.corrections.corrections_digest`) and of ``summary.json`` and the
numbers signed.  The report shows *signed* only while both hashes still match; a correction made after the
sign-off shows it as no longer valid.

The page holds no external asset (pictures are ``data:`` URIs, style inline, a Content-Security-Policy
forbids any request); :func:`html_to_pdf` prints it with headless Chromium when one is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from ..results import atomic_path
from .facts import (
    DEFAULT_MAX_THUMBNAILS,
    MANY_REVIEW_FRACTION,
    THUMB_PX,
    THUMB_UM,
    cell_thumbnails,
    report_data,
)
from .signoff import SIGNOFF_NAME, results_folder, sign_off, signoff_state

__all__ = [
    "REPORT_NAME",
    "SIGNOFF_NAME",
    "MANY_REVIEW_FRACTION",
    "DEFAULT_MAX_THUMBNAILS",
    "THUMB_UM",
    "THUMB_PX",
    "report_data",
    "write_report",
    "sign_off",
    "signoff_state",
    "cell_thumbnails",
    "html_to_pdf",
    "find_chromium",
]

REPORT_NAME = "report.html"


# ------------------------------------------------------------------ writing
def write_report(
    results_dir: str | os.PathLike,
    out: Optional[str | os.PathLike] = None,
    reviewer: Optional[str] = None,
    signed: bool = False,
    *,
    pdf: bool | str | os.PathLike = False,
    max_thumbnails: Optional[int] = DEFAULT_MAX_THUMBNAILS,
    thumbnails: bool = True,
) -> Path:
    """Write the report of a results folder; returns the HTML path.

    Parameters
    ----------
    results_dir : path-like
        A results folder (reviewed or not).
    out : path-like, optional
        The HTML file (default ``RESULTS_DIR/report.html``); written atomically.
    reviewer : str, optional
        Who signs (with ``signed``) or makes the report.
    signed : bool
        Sign the review first (:func:`sign_off`: writes ``signoff.json``; needs ``reviewer``).
    pdf : bool or path
        Also print a PDF (``True``: beside the HTML, ``.pdf``) with headless Chromium (:func:`html_to_pdf`).
    """
    from ..report_html import render

    folder = results_folder(results_dir)
    if signed:
        sign_off(folder, reviewer)
    data = report_data(folder, reviewer=reviewer, max_thumbnails=max_thumbnails, thumbnails=thumbnails)
    out = Path(out) if out is not None else folder / REPORT_NAME
    if out.is_dir():
        out = out / REPORT_NAME
    with atomic_path(out) as tmp:
        Path(tmp).write_text(render(data), encoding="utf-8")
    if pdf:
        html_to_pdf(out, out.with_suffix(".pdf") if pdf is True else Path(pdf))
    return out


def find_chromium() -> Optional[str]:
    """A headless-capable Chromium / Chrome (``$LEUK_CHROMIUM`` first), or None."""
    for name in (
        os.environ.get("LEUK_CHROMIUM"),
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def html_to_pdf(
    html: str | os.PathLike, pdf: str | os.PathLike, *, chromium: Optional[str] = None, timeout: float = 120.0
) -> Path:
    """Print an HTML file to PDF (A4) with headless Chromium; atomic.

    Raises
    ------
    RuntimeError
        No Chromium found (install Debian ``chromium`` or set ``$LEUK_CHROMIUM``), or it failed.
    """
    exe = chromium or find_chromium()
    if exe is None:
        raise RuntimeError(
            "PDF needs headless Chromium: install it (Debian: apt-get install chromium) or set "
            "LEUK_CHROMIUM to its path; the HTML report is complete without it"
        )
    html, pdf = Path(html).resolve(), Path(pdf)
    with tempfile.TemporaryDirectory(prefix="leuk-pdf-") as prof, atomic_path(pdf) as tmp:
        cmd = [
            exe,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={prof}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={Path(tmp).resolve()}",
            html.as_uri(),
        ]
        try:
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"chromium did not print {html} within {timeout:.0f} s") from None
        if not Path(tmp).is_file() or Path(tmp).stat().st_size == 0:
            raise RuntimeError(f"chromium could not print {html} (exit {r.returncode}): {r.stderr[-500:]}")
    return pdf
