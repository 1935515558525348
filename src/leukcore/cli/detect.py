"""``leuk detect SLIDE -o OUT``: find white blood cells, write OUT/cells.csv (+ cells.parquet, meta,
optionally the label image OUT/labels.ome.zarr).
"""


def register(sub):
    """Add the ``leuk detect`` subcommand to ``sub``."""
    from .analyze import TRUST_HELP

    p = sub.add_parser(
        "detect",
        help="find white blood cells in a slide or field image",
        description="Detect white blood cells (StarDist method) in a whole slide or a single "
        "field image; writes OUT/cells.csv (centroid_y, centroid_x in level-0 "
        "pixels, score, polygon...), OUT/cells.parquet and OUT/detect_meta.json.",
    )
    p.add_argument("slide", help="slide or image file (OME-TIFF, SVS, NDPI, TIFF, OME-Zarr, JPEG, PNG...)")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument(
        "--mpp",
        type=float,
        default=None,
        help="pixel size of level 0 in microns (overrides metadata / the red-cell estimate)",
    )
    p.add_argument("--model", default="wbc-stardist", help="detector name or model card .yaml")
    p.add_argument("--tile-size", type=int, default=1024, help="tile core size at the working resolution")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "onnx", "torch"],
        help="network runtime: auto (ONNX Runtime on CPU when it agrees with torch, else torch), onnx or torch",
    )
    p.add_argument(
        "--threads",
        type=_threads,
        default=None,
        metavar="N",
        help="CPU threads for the network (ONNX Runtime intra-op threads / torch threads); "
        "default every core this process may use",
    )
    p.add_argument("--no-skip", action="store_true", help="run the network on every tile (no empty-tile skipping)")
    p.add_argument(
        "--region", type=int, nargs=4, metavar=("Y0", "X0", "Y1", "X1"), default=None, help="only this level-0 region"
    )
    p.add_argument(
        "--labels",
        action="store_true",
        help="also write OUT/labels.ome.zarr: the cell-id label image (OME-NGFF pyramid aligned with "
        "level 0), rasterised from the polygons chunk by chunk, never whole in memory",
    )
    p.add_argument("--trust-unverified", action="store_true", help=TRUST_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _threads(text: str) -> int:
    import argparse

    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--threads must be a whole number >= 1, got {text!r}")
    return n


def run(args):
    """Run ``leuk detect`` with the parsed ``args``; the exit code."""
    import json
    import sys
    from pathlib import Path

    from ..caveats import run_caveats
    from ..detect import Detector, detect_cells
    from ..export.kinds import DETECT_META_NAME, FILE_NAMES, write_output
    from ..io import open_slide
    from ..models.registry import load_card
    from ..results import _json_default, atomic_path

    out = Path(args.out)

    det = Detector.load(
        load_card(args.model, trust_unverified=args.trust_unverified),
        device=args.device,
        backend=args.backend,
        threads=args.threads,
    )
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=0, unit="tile", file=sys.stderr, desc="detect")

    def progress(ev):
        if bar is None:
            return
        if bar.total != ev.total:
            bar.total = ev.total
        bar.n = ev.done
        bar.set_postfix(cells=ev.cells)
        bar.refresh()

    with open_slide(args.slide, mpp=args.mpp) as slide:
        table = detect_cells(
            slide,
            det,
            tile_size=args.tile_size,
            batch_size=args.batch_size,
            region=tuple(args.region) if args.region else None,
            skip_empty=not args.no_skip,
            progress=progress,
            device=args.device,
        )
        shape, mpp = tuple(slide.shape[:2]), slide.mpp
    if bar is not None:
        bar.close()
    table.meta["slide"] = str(args.slide)
    out.mkdir(parents=True, exist_ok=True)
    write_output("csv", table, out)
    write_output("parquet", table, out)
    if args.labels:
        from ..export.labels import write_labels_zarr

        write_labels_zarr(table, shape, out / FILE_NAMES["labels"], mpp=mpp or table.meta.get("mpp"))
    with atomic_path(out / DETECT_META_NAME) as tmp:
        Path(tmp).write_text(json.dumps(table.meta, default=_json_default, indent=2))
    m = table.meta
    mpp_txt = f"{m.get('mpp'):.3f} um/px ({m.get('mpp_source')})" if m.get("mpp") else "unknown"
    est = None
    if m.get("mpp_source") == "estimated":
        est = {**m["mpp_estimate"], "source": "estimated"}
        mpp_txt += f", {est.get('method', 'estimated')}, spread {est['spread']:.2f}"
    for c in run_caveats(est, m.get("stain")):
        print(f"leuk detect: warning: {args.slide}: {c}", file=sys.stderr)
    print(
        f"{len(table)} cells; pixel size {mpp_txt}; {m.get('tiles_run')}/{m.get('n_tiles')} tiles run "
        f"in {m['timings']['detect_s']:.1f} s -> {out / FILE_NAMES['csv']}"
    )
    return 0
