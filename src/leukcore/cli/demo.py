"""``leuk demo``: build the bundled real-content sample slide, analyse it, show where the outputs are."""

from __future__ import annotations


def register(sub):
    """Add the ``leuk demo`` subcommand to ``sub``."""
    p = sub.add_parser(
        "demo",
        help="analyse the bundled sample slide (built on first use) and print the counts",
        description="Builds (once, into the user cache) a pyramidal OME-TIFF mosaic of real, "
        "openly licensed smear fields, runs `leuk analyze` on it and prints the counts "
        "and the output folder.",
    )
    p.add_argument("-o", "--out", default=None, help="output folder (default: ./leuk-demo)")
    p.add_argument(
        "--model",
        default=None,
        help="all-binary | all-4class | model card (default all-binary, or the shipped classifier)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="full tracebacks")
    p.set_defaults(func=run)


def run(args):
    """Run ``leuk demo`` with the parsed ``args``; the exit code."""
    from pathlib import Path

    from ..pipeline import analyze_slide
    from ..sample import sample_slide_path
    from .analyze import TqdmProgress, print_result

    model = args.model
    if model is None:
        from ..models.registry import list_models

        shipped = list_models("classification")
        model = "all-binary" if "all-binary" in shipped or not shipped else shipped[0]
    slide = sample_slide_path()
    out = Path(args.out or "leuk-demo")
    print(f"sample slide: {slide}\nclassifier: {model}")
    bar = TqdmProgress(disable=args.quiet)
    try:
        res = analyze_slide(slide, classifier=model, device=args.device, progress=bar, out_dir=out)
    finally:
        bar.close()
    print_result(res)
    print(f"outputs in {out.resolve()}:")
    for p in res.outputs.values():
        print(f"  {Path(p).name}")
    if "overlay" in res.outputs:
        print(f"look at {Path(res.outputs['overlay']).resolve()}: every cell outlined in its class colour")
    print(
        "open cells.geojson in QuPath (File > Import objects), cells.parquet with pandas, "
        "or the slide + labels.ome.zarr in napari."
    )
    return 0
