"""Make docs/images/report.png: the sign-off report of the bundled sample slide after a real run and a short review.

    .venv/bin/python docs/images/make_report_screenshot.py [--results DIR] [--out docs/images/report.png]

Without ``--results`` the sample slide is analysed with the shipped models (wbc-stardist + all-binary, about a
minute on two CPU cores).  The results are copied to a temporary folder and reviewed there (a demonstration, not
a diagnosis): of the cells the model left for review, the five least sure are called (three confirmed, two moved
to the other class), a 100-cell random differential is recorded, and the review is signed; the report is
rendered by headless Chromium (tests/_browser.py) and its top captured.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=None, help="results of the sample slide (default: analyse it now)")
    ap.add_argument("--out", default=str(HERE / "report.png"))
    ap.add_argument("--height", type=int, default=1750, help="captured height in px (0: the whole page)")
    args = ap.parse_args(argv)

    from _browser import DevTools, launch_chromium, page_target
    from leukcore.corrections import Corrections
    from leukcore.differential import differential, record_differential
    from leukcore.report import write_report

    with tempfile.TemporaryDirectory(prefix="leuk-report-shot-") as tmp:
        tmp = Path(tmp)
        res = tmp / "leukcore-sample"
        if args.results:
            shutil.copytree(args.results, res)
        else:
            from leukcore.pipeline import analyze_slide
            from leukcore.sample import sample_slide_path

            analyze_slide(sample_slide_path(), "wbc-stardist", "all-binary", device="cpu", out_dir=res)
        for f in ("corrections.parquet", "signoff.json", "differential.json", "report.html"):
            (res / f).unlink(missing_ok=True)
        c = Corrections.open(res, reviewer="demo reviewer")
        df = c.table.df
        unsure = df[df["review"]].sort_values(["confidence", "cell_id"]).head(5)
        other = {a: b for a, b in zip(c.classes, reversed(c.classes), strict=False)}
        for k, (cid, lab) in enumerate(zip(unsure["cell_id"], unsure["label"], strict=False)):
            c.set([int(cid)], lab if k < 3 else other[lab])
        record_differential(res, differential(c.reviewed(), n=100, order="random", seed=0), reviewer="demo reviewer")
        html = write_report(res, reviewer="demo reviewer", signed=True)
        with launch_chromium(tmp / "profile") as port:
            dt = DevTools(page_target(port))
            try:
                dt.call("Page.enable")
                dt.call("Page.navigate", url=html.as_uri())
                dt.wait_for("document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)")
                dt.screenshot(args.out, width=1100, height=args.height or None)
            finally:
                dt.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
