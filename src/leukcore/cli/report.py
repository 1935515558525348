"""``leuk report RESULTS_DIR``: the sign-off report of a slide's results (one self-contained HTML page).

Counts and percentages per class as the model called them and as reviewed (corrections.parquet), the
blast percentage, thumbnails of every blast and every review cell, models and weights hashes, warnings and
the sign-off state. --sign --reviewer NAME signs the review first (signoff.json); --pdf also prints it
with headless Chromium; --differential N records an N-cell differential, shown in the report.
"""

from __future__ import annotations


def register(sub):
    """Add the ``leuk report`` subcommand to ``sub``."""
    p = sub.add_parser(
        "report",
        help="sign-off report of a results folder (self-contained HTML, optional PDF)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("results", help="results folder (leuk analyze / leuk batch output), reviewed or not")
    p.add_argument("-o", "--out", default=None, help="HTML file (default RESULTS/report.html)")
    p.add_argument("--pdf", action="store_true", help="also write a PDF beside the HTML (needs chromium)")
    p.add_argument("--reviewer", default=None, metavar="NAME", help="reviewer's name (shown; required with --sign)")
    p.add_argument(
        "--sign",
        action="store_true",
        help="sign off the review: write signoff.json (reviewer, time, hashes of corrections + summary)",
    )
    p.add_argument(
        "--differential",
        type=int,
        default=None,
        metavar="N",
        help="record the N-cell differential (100 or 200 by convention) before writing the report",
    )
    p.add_argument(
        "--order", choices=("random", "raster"), default="random", help="cell order of --differential (default random)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random order (default 0)")
    p.add_argument(
        "--max-thumbnails",
        type=int,
        default=None,
        metavar="N",
        help="thumbnails per group (blasts, review); default 2000, 0 = none",
    )
    p.add_argument("--debug", action="store_true", help="full tracebacks")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``leuk report`` with the parsed ``args``; the exit code."""
    from ..corrections import load_reviewed
    from ..differential import differential, record_differential
    from ..report import DEFAULT_MAX_THUMBNAILS, write_report

    if args.sign and not args.reviewer:
        raise ValueError("--sign needs --reviewer NAME")
    if args.differential is not None:
        _, reviewed, _, _ = load_reviewed(args.results)
        d = differential(reviewed, n=args.differential, order=args.order, seed=args.seed)
        record_differential(args.results, d, reviewer=args.reviewer)
        s = d["sample"]
        print(
            f"{d['counted']}-cell differential ({args.order}): "
            + ", ".join(f"{k} {v}" for k, v in s["counts"].items())
            + f", review {s['review']}"
        )
    mt = DEFAULT_MAX_THUMBNAILS if args.max_thumbnails is None else args.max_thumbnails
    try:
        out = write_report(
            args.results, args.out, reviewer=args.reviewer, signed=args.sign, pdf=args.pdf, max_thumbnails=mt
        )
    except RuntimeError as e:  # no chromium / it failed: the HTML is written, the PDF is not
        import sys

        print(f"leuk report: error: {e}", file=sys.stderr)
        return 2
    print(f"report: {out}" + (f" (+ {out.with_suffix('.pdf')})" if args.pdf else ""))
    return 0
