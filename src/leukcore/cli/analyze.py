"""``leuk analyze SLIDE -o OUT``: detect and classify every white cell of one slide."""

from __future__ import annotations

import sys

TRUST_HELP = (
    "load a model card whose weights have no sha256 (refused otherwise: such weights cannot be "
    "verified); only for files you trust"
)


def add_model_args(p, model_help: str = "classifier: all-binary | all-4class | path to a model card .yaml"):
    """Add the model and analysis options (``--model``, ``--detector``, ``--device``, ``--mpp``, ...) to ``p``.

    :func:`settings_from_args` turns them back into settings; ``leuk analyze`` and ``leuk batch`` share them.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The subcommand's parser.
    model_help : str
        Help text of ``--model`` (`` (default all-binary)`` is appended).
    """
    p.add_argument("--model", default="all-binary", help=model_help + " (default all-binary)")
    p.add_argument("--detector", default="wbc-stardist", help="detector model name or card (default wbc-stardist)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto: CUDA when present)")
    p.add_argument(
        "--mpp",
        type=float,
        default=None,
        help="level-0 microns per pixel, overriding the file (estimated from red cells when unknown)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="classification batch size")
    p.add_argument(
        "--review-threshold",
        type=float,
        default=None,
        help="cells with confidence below this are left for review (default: the model card's "
        "threshold, chosen on validation data)",
    )
    p.add_argument("--tile-size", type=int, default=1024, help="detection tile size in working pixels")
    p.add_argument("--trust-unverified", action="store_true", help=TRUST_HELP)


def settings_from_args(args):
    """The :class:`~leukcore.settings.AnalysisSettings` of the options :func:`add_model_args` added (and
    ``--region`` / ``--skip-missing`` where the command has them).
    """
    from ..settings import AnalysisSettings

    region = getattr(args, "region", None)
    return AnalysisSettings(
        detector=args.detector,
        classifier=args.model,
        device=args.device,
        mpp=args.mpp,
        batch_size=args.batch_size,
        review_threshold=args.review_threshold,
        tile_size=args.tile_size,
        region=tuple(region) if region else None,
        trust_unverified=args.trust_unverified,
        skip_missing=bool(getattr(args, "skip_missing", False)),
    )


def register(sub):
    """Add the ``leuk analyze`` subcommand to ``sub``."""
    p = sub.add_parser(
        "analyze",
        help="find and classify the white cells of one slide; write all outputs",
        description="Detect every white blood cell of SLIDE, classify it, and write "
        "cells.parquet, cells.csv, cells.geojson (QuPath), labels.ome.zarr, "
        "overlay.png and summary.json into OUT.",
    )
    p.add_argument("slide", help="slide file (OME-TIFF, SVS, NDPI, TIFF, OME-Zarr, PNG/JPEG field)")
    p.add_argument("-o", "--out", required=True, help="output folder")
    add_model_args(p)
    p.add_argument(
        "--region",
        type=int,
        nargs=4,
        metavar=("Y0", "X0", "Y1", "X1"),
        default=None,
        help="analyse only this level-0 region",
    )
    p.add_argument(
        "--skip-missing",
        action="store_true",
        help="analyse around pixels that are not in the file (missing tiles / chunks, NaN): they are "
        "skipped and listed in summary.json (missing.count, missing.boxes; complete: false) "
        "and the exit status is 3; default: stop with an error naming the file and the box",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="full tracebacks")
    p.set_defaults(func=run)


class TqdmProgress:
    """Progress callback driving one tqdm bar per stage."""

    def __init__(self, disable: bool = False):
        self.disable = disable
        self.bars = {}

    def __call__(self, ev):
        """Move the bar of ``ev.stage`` (a :class:`~leukcore.progress.ProgressEvent`) to ``ev.done`` of ``ev.total``.

        A stage's bar is made on its first event; ``ev.cells`` shows beside it.  Nothing when disabled.
        """
        from tqdm import tqdm

        if self.disable:
            return
        unit = {"detect": "tile", "classify": "cell", "write": "file", "labels": "chunk", "batch": "slide"}.get(
            ev.stage, "it"
        )
        bar = self.bars.get(ev.stage)
        if bar is None:
            bar = tqdm(
                total=ev.total or None,
                desc=f"{ev.stage:>8}",
                unit=unit,
                file=sys.stderr,
                dynamic_ncols=True,
                leave=True,
            )
            self.bars[ev.stage] = bar
        if ev.total and bar.total != ev.total:
            bar.total = ev.total
        bar.n = ev.done
        if ev.cells:
            bar.set_postfix(cells=ev.cells, refresh=False)
        bar.refresh()

    def close(self):
        """Close every bar and forget them."""
        for b in self.bars.values():
            b.close()
        self.bars.clear()


def _reasons(r) -> str:
    """`` (unlike training cells: N, low confidence: M)`` of a summary's ``review_reasons``."""
    if not r:
        return ""
    return f" (unlike training cells: {r.get('ood', 0)}, low confidence: {r.get('low_confidence', 0)})"


def print_result(res, out=None):
    """Print the summary of an analysis: cells, counts per class, blast share and review, pixel size, timings.

    Parameters
    ----------
    res : leukcore.pipeline.AnalysisResult
        The analysis (its ``summary`` dict is printed).
    out : file-like, optional
        Where to print; ``sys.stdout`` at the time of the call by default.
    """
    out = sys.stdout if out is None else out  # resolved per call (pytest capture, redirection)
    s = res.summary
    print(f"cells: {s['cells']}", file=out)
    for k, v in s.get("counts", {}).items():
        pct = s.get("percent", {}).get(k)
        print(f"  {k:>10}: {v}" + (f"  ({pct:.1f} %)" if pct is not None else ""), file=out)
    if s.get("blast_percent") is not None:
        print(
            f"blast / ALL: {s['blast_percent']:.1f} % of confidently classified cells   "
            f"left for review: {s.get('review', 0)}" + _reasons(s.get("review_reasons")),
            file=out,
        )
    m = s.get("mpp", {})
    if m.get("value"):
        print(f"pixel size: {m['value']:.4g} um/px ({m.get('source')})", file=out)
    t = s.get("timings", {})
    if t.get("total_s") is not None:
        eff = t.get("efficiency")
        print(
            f"time: {t['total_s']:.1f} s (detect {t.get('detect_s', 0):.1f} s, classify {t.get('classify_s', 0):.1f} s"
            + (f", pipeline efficiency {eff:.2f}" if eff else "")
            + ")",
            file=out,
        )


def run(args):
    """Run ``leuk analyze`` with the parsed ``args``; the exit code."""
    from pathlib import Path

    from ..pipeline import analyze_slide

    bar = TqdmProgress(disable=args.quiet)
    try:
        res = analyze_slide(args.slide, settings=settings_from_args(args), progress=bar, out_dir=args.out)
    finally:
        bar.close()
    print_result(res)
    print(f"outputs: {Path(args.out).resolve()}")
    for k, p in res.outputs.items():
        print(f"  {k:>8}: {Path(p).name}")
    miss = res.summary.get("missing") or {}
    for c in res.summary.get("caveats") or []:
        print(f"leuk analyze: warning: {args.slide}: {c}", file=sys.stderr)
    for w in res.summary.get("warnings") or []:
        print(f"warning: {args.slide}: {w}")
    if miss.get("count"):
        print(
            f"leuk analyze: incomplete: {args.slide}: {miss['count']} region(s) without pixel data were "
            "skipped (summary.json: missing.boxes, complete: false)",
            file=sys.stderr,
        )
        return 3
    return 0
