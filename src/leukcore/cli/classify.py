"""``leuk classify IMAGE... --model NAME [--json]``: class and probabilities per image.

The rule (detect the white cells and classify each, else take the image as one cell crop) is
:func:`leukcore.field.classify_image`'s; its module doc, shown by ``leuk classify --help``,
states it once for the library, the web demo and this command.
"""

from __future__ import annotations

import json
import sys


def register(sub):
    """Add the ``leuk classify`` subcommand to ``sub``."""
    from .. import field
    from .analyze import TRUST_HELP

    rule = field.__doc__.split("\n\n", 1)[1] if field.__doc__ else ""
    p = sub.add_parser(
        "classify",
        help="classify single images, fields or cell crops",
        description=rule + "\nThe kind is --kind, the pixel size --mpp.",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, TIFF)")
    p.add_argument("--model", default="all-binary", help="all-binary | all-4class | model card .yaml | run dir")
    p.add_argument("--json", action="store_true", help="one JSON object per line (path, label, probabilities)")
    p.add_argument(
        "--kind",
        choices=["auto", "cell", "field"],
        default="auto",
        help="auto: detect cells, fall back to whole image; cell: one cell per image; field: detect",
    )
    p.add_argument("--mpp", type=float, default=None, help="microns per pixel of the images")
    p.add_argument("--detector", default="wbc-stardist", help="detector model for fields")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"], help="inference backend")
    p.add_argument("--trust-unverified", action="store_true", help=TRUST_HELP)
    p.add_argument("--debug", action="store_true", help="full tracebacks")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``leuk classify`` with the parsed ``args``; the exit code."""
    from ..classify import Classifier
    from ..field import classify_image
    from ..io.errors import SlideError
    from ..models.registry import load_card

    trust = args.trust_unverified
    clf = Classifier.load(load_card(args.model, trust_unverified=trust), device=args.device, backend=args.backend)
    detector = args.detector
    if args.kind != "cell" and trust:  # the detector's card is held to the same rule
        from ..pipeline import load_detector

        detector = load_detector(args.detector, device=args.device, trust_unverified=True)
    rc = 0
    for path in args.images:
        try:
            rec = classify_image(path, clf, kind=args.kind, mpp=args.mpp, detector=detector, device=args.device)
        except (ValueError, FileNotFoundError, SlideError) as e:
            if getattr(args, "debug", False):
                raise
            print(f"leuk classify: error: {e}", file=sys.stderr)
            rc = 2
            continue
        if args.json:
            print(json.dumps(rec), flush=True)
        elif rec["label"] is None:
            print(
                f"{rec['path']}\tNone\t{rec.get('reason', '')}\t({rec['rule']}, {rec['n_cells']} cell(s))", flush=True
            )
        else:
            probs = "  ".join(f"{c}={v:.3f}" for c, v in rec["probabilities"].items() if v is not None)
            why = f" ({rec['review_reason']})" if rec.get("review") and rec.get("review_reason") else ""
            print(f"{rec['path']}\t{rec['label']}{why}\t{probs}\t({rec['rule']}, {rec['n_cells']} cell(s))", flush=True)
    return rc
