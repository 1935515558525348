"""``leuk classify IMAGE... --model NAME [--json]``: class and probabilities per image.

Rule for an image (``--kind auto``, the default):

1. the pixel size is ``--mpp``, else estimated from the red cells (``leukcore.mpp.estimate_mpp``);
2. with a pixel size, the detector finds the white cells and each is classified from its crop;
   the image's label comes from **all** its cells by the model card's field rule (``inference``:
   test-time augmentation and ``mean_prob`` / ``mean_log_prob`` aggregation, chosen on the
   validation split; default: mean probability without TTA); ``n_cells`` is reported;
3. when no pixel size can be found or no cell is detected, the image is taken as one cell crop
   (C-NMC / PBC style) and classified whole, resized to the model's input (``rule: whole-image``).

``--kind cell`` forces rule 3 (centre crop of the model's crop size when ``--mpp`` is given);
``--kind field`` forces rule 2 (an image with no detected cell gets ``label: null``).
The rule is :func:`leukcore.field.classify_image` (the web demo uses it too).
"""
from __future__ import annotations

import json
import sys


def register(sub):
    p = sub.add_parser("classify", help="classify single images, fields or cell crops",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
                       formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, TIFF)")
    p.add_argument("--model", default="all-binary", help="all-binary | all-4class | model card .yaml | run dir")
    p.add_argument("--json", action="store_true", help="one JSON object per line (path, label, probabilities)")
    p.add_argument("--kind", choices=["auto", "cell", "field"], default="auto",
                   help="auto: detect cells, fall back to whole image; cell: one cell per image; field: detect")
    p.add_argument("--mpp", type=float, default=None, help="microns per pixel of the images")
    p.add_argument("--detector", default="wbc-stardist", help="detector model for fields")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"], help="inference backend")
    p.add_argument("--debug", action="store_true", help="full tracebacks")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..classify import Classifier
    from ..field import classify_image

    clf = Classifier.load(args.model, device=args.device, backend=args.backend)
    rc = 0
    for path in args.images:
        try:
            rec = classify_image(path, clf, kind=args.kind, mpp=args.mpp, detector=args.detector, device=args.device)
        except (ValueError, FileNotFoundError) as e:
            print(f"leuk classify: error: {e}", file=sys.stderr)
            rc = 2
            continue
        if args.json:
            print(json.dumps(rec), flush=True)
        else:
            probs = "  ".join(f"{c}={v:.3f}" for c, v in rec["probabilities"].items() if v is not None)
            print(f"{rec['path']}\t{rec['label']}\t{probs}\t({rec['rule']}, {rec['n_cells']} cell(s))", flush=True)
    return rc
