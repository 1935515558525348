"""Stain-robustness ablation: the same training recipe with and without the stain measures.

Variants (all from one base config, default the shipped ``all-4class`` preset):

``rgb``            RGB input, no stain augmentation
``rgb+hed``        RGB input, HED stain jitter
``lstd+hed``       per-crop standardised lightness input + HED jitter (the shipped recipe)

Each variant is trained and evaluated on the same held-out split (image-level for the four-class
set); the table shows CNN accuracy on held-out cells / fields, on stain-swapped held-out fields,
and the colour baseline.  Crops are shared (cached) between variants.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_classify_ablation.py [--config all-4class] [--variants rgb lstd+hed]

Writes ``benchmarks/results/bench_classify_ablation.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

VARIANTS = {
    "rgb": {"mode": "rgb", "stain_aug": None},
    "rgb+hed": {"mode": "rgb", "stain_aug": {"hed_sigma": 0.08, "hed_bias": 0.08}},
    "lstd": {"mode": "lstd", "stain_aug": None},
    "lstd+hed": {"mode": "lstd", "stain_aug": {"hed_sigma": 0.08, "hed_bias": 0.08}},
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="all-4class")
    ap.add_argument("--variants", nargs="+", default=["rgb", "rgb+hed", "lstd+hed"])
    ap.add_argument("--runs", default="runs/ablation")
    ap.add_argument("--phase2-epochs", type=int, default=None, help="override phase-2 epochs (0: frozen only)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_classify_ablation.json"))
    args = ap.parse_args(argv)

    from leukcore.train.config import load_config, preset_path
    from leukcore.train.evaluate import headline
    from leukcore.train.loop import train_classifier

    base = load_config(preset_path(args.config))
    out = Path(args.out)
    table = json.loads(out.read_text()) if out.exists() else {"config": args.config, "variants": {}}
    for v in args.variants:
        cfg = copy.deepcopy(base)
        cfg["name"] = f"{base['name']}-{v}"
        cfg["model"]["input"]["mode"] = VARIANTS[v]["mode"]
        cfg["train"]["stain_aug"] = VARIANTS[v]["stain_aug"]
        if args.phase2_epochs is not None:
            cfg["train"]["phase2"]["epochs"] = args.phase2_epochs
        cfg["eval"]["n_boot"] = 200
        run = train_classifier(cfg, Path(args.runs) / cfg["name"])
        res = json.loads((run / "metrics.json").read_text())
        table["variants"][v] = {"run": str(run), **headline(res)}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(table, indent=1))
    print(
        f"{'variant':10} {'split':12} {'cells':>7} {'fields':>7} {'swap cells':>10} {'swap fields':>11} "
        f"{'colour fields':>13} {'colour swap':>11}"
    )
    for v, h in table["variants"].items():
        print(
            f"{v:10} {h['split_type']:12} {h['cnn_cells_accuracy']:>7.4f} {h['cnn_images_accuracy']:>7.4f} "
            f"{h.get('stain_swap_cnn_cells_accuracy', float('nan')):>10.4f} "
            f"{h.get('stain_swap_cnn_images_accuracy', float('nan')):>11.4f} "
            f"{h['colour_baseline_images_accuracy']:>13.4f} "
            f"{h.get('stain_swap_colour_baseline_images_accuracy', float('nan')):>11.4f}"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
