"""``leuk explain IMAGE... --model NAME -o OUT``: Grad-CAM overlays (PNG) for the cells of each image."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def register(sub):
    """Add the ``leuk explain`` subcommand to ``sub``."""
    p = sub.add_parser(
        "explain",
        help="Grad-CAM overlays for the cells of images",
        description="Detect the cells of each image (or take it as one cell crop, as leuk classify "
        "does), compute Grad-CAM for the predicted (or --target) class and write "
        "OUT/<image>_gradcam.png: each cell's crop above its heat-map overlay.",
    )
    p.add_argument("images", nargs="+")
    p.add_argument("--model", default="all-binary")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--target", default=None, help="class to explain (default: each cell's predicted class)")
    p.add_argument("--mpp", type=float, default=None)
    p.add_argument("--detector", default="wbc-stardist")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-cells", type=int, default=24, help="cells per image in the overlay")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``leuk explain`` with the parsed ``args``; the exit code."""
    from PIL import Image

    from ..classify import Classifier, extract_crops, gradcam
    from ..classify.cam import overlay
    from ..field import find_cells, letterbox, load_field
    from ..io.slide import Slide
    from ..results import atomic_path

    clf = Classifier.load(args.model, device=args.device, backend="torch")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        img, _ = load_field(path)
        table, m, _ = find_cells(img, args.mpp, args.detector, args.device)
        if len(table):
            crops = extract_crops(Slide.from_array(np.ascontiguousarray(img), mpp=m), table, clf)[: args.max_cells]
        else:
            crops = letterbox(img, clf.spec.size)[None]
        heat = gradcam(clf, crops, target=args.target)
        probs = clf.predict_crops(crops)
        tiles = [np.concatenate([c, overlay(c, h)], axis=0) for c, h in zip(crops, heat, strict=False)]
        grid = np.concatenate(tiles, axis=1)
        dst = out / f"{Path(path).stem}_gradcam.png"
        with atomic_path(dst) as tmp:
            Image.fromarray(grid).save(tmp, format="PNG")
        labels = ", ".join(clf.classes[i] for i in probs.argmax(1))
        print(f"{dst}\t{len(crops)} cell(s): {labels}")
    return 0
