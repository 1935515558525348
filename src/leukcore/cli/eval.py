"""``leuk eval``: held-out metrics, colour baseline and the stain-swap test for a classifier."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(sub):
    """Add the ``leuk eval`` subcommand to ``sub``."""
    p = sub.add_parser(
        "eval",
        help="evaluate a classifier on its held-out split (+ colour baseline, stain swap)",
        description="Rebuild the held-out split from the config (given, or the one recorded in "
        "the model card), then report accuracy, balanced accuracy, per-class P/R/F1, "
        "macro/weighted F1, ROC AUC (+PNG), confusion matrix (PNG+JSON), bootstrap "
        "95%% CIs and ECE, beside a colour-only baseline; --stain-swap re-stains "
        "every held-out field to another class's stain.",
    )
    p.add_argument("--model", default="all-4class", help="all-binary | all-4class | card .yaml | run dir")
    p.add_argument("--config", default=None, help="config defining the data and split (default: the card's)")
    p.add_argument(
        "--stain-swap", dest="stain_swap", action="store_true", default=True, help="run the stain-swap test (default)"
    )
    p.add_argument("--no-stain-swap", dest="stain_swap", action="store_false")
    p.add_argument("-o", "--out", default=None, help="folder for metrics.json and plots")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")
    p.add_argument(
        "--field-rule",
        choices=["card", "select"],
        default="card",
        help="how a field's cells make its label: the card's inference rule (default) or re-select "
        "TTA x aggregation on the validation split",
    )
    p.add_argument(
        "--tta",
        nargs="+",
        choices=["none", "flip", "d4"],
        default=None,
        help="with --field-rule select: the TTA modes to choose from (default: the config's eval.tta)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    p.add_argument(
        "--cross-source",
        action="store_true",
        help="instead: run the model as `leuk classify` does (no --mpp) on every other source: Zheng 2018 "
        "normal cells (evaluation only), PBC normal cells per type, held-out four-class fields as "
        "they are and re-stained; blast-call rates, accuracy and ECE per source",
    )
    p.add_argument(
        "--data", default=None, help="with --cross-source: data folder (default $LEUK_DATA or ../shared/data)"
    )
    p.add_argument("--n-per-type", type=int, default=None, help="with --cross-source: images per cell type")
    p.add_argument("--n-fields", type=int, default=None, help="with --cross-source: held-out four-class fields")
    p.add_argument("--json", action="store_true", help="print the full metrics JSON")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``leuk eval`` with the parsed ``args``; the exit code."""
    from ..models.registry import load_card
    from ..train.config import load_config, resolve_config
    from ..train.evaluate import EvalOptions, evaluate_model, headline

    if args.cross_source:
        return _cross_source(args)
    card = load_card(args.model)
    if args.config:
        cfg = load_config(args.config)
    else:
        c = card.get("training", {}).get("config")
        if not c:
            raise ValueError(f"{card['_card_path']}: the card records no training config; pass --config")
        cfg = resolve_config({k: v for k, v in c.items() if not k.startswith("_")})
    out = Path(args.out) if args.out else None
    tta = tuple(None if t == "none" else t for t in args.tta) if args.tta else tuple(cfg["eval"].get("tta") or (None,))
    options = EvalOptions(
        stain_swap=args.stain_swap,
        n_boot=args.n_boot,
        device=args.device,
        backend=args.backend,
        update_card=False,
        field_rule=args.field_rule,
        tta_modes=tta,
    )
    res = evaluate_model(card, cfg, out, options, log=lambda *a: None)
    if args.json:
        print(json.dumps(res, indent=1, default=float))
        return 0
    h = headline(res)
    print(
        f"model {res['model']}  split: {res['split_type']}  held-out images {res['test_images']} "
        f"cells {res['test_cells']}  backend {res['backend']}"
    )
    print(f"{'':34}{'cells':>10}{'images':>10}")
    rows = [
        ("CNN accuracy", "cnn_cells_accuracy", "cnn_images_accuracy"),
        ("CNN macro-F1", "cnn_cells_macro_f1", "cnn_images_macro_f1"),
        ("colour baseline accuracy", "colour_baseline_cells_accuracy", "colour_baseline_images_accuracy"),
        ("stain-swap CNN accuracy", "stain_swap_cnn_cells_accuracy", "stain_swap_cnn_images_accuracy"),
        (
            "stain-swap colour accuracy",
            "stain_swap_colour_baseline_cells_accuracy",
            "stain_swap_colour_baseline_images_accuracy",
        ),
    ]
    for name, a, b in rows:
        if a in h:
            print(f"{name:34}{h[a]:>10.4f}{h.get(b, float('nan')):>10.4f}")
    if "images_rule" in h:
        print(f"images: {h['images_rule']}")
    if "pbc_false_positive_rate_cnn" in h:
        print(
            f"PBC false-positive rate (ALL on normal cells): CNN {h['pbc_false_positive_rate_cnn']:.4f}  "
            f"colour {h['pbc_false_positive_rate_colour_baseline']:.4f}"
        )
    if out:
        print(f"metrics and plots in {out}", file=sys.stderr)
    return 0


def _cross_source(args) -> int:
    from ..paths import data_dir
    from ..train.config import load_config
    from ..train.crosssource import CrossSourceOptions, cross_source_eval, format_table

    options = CrossSourceOptions(n_per_type=args.n_per_type, n_fields=args.n_fields, device=args.device)
    res = cross_source_eval(
        args.model,
        Path(args.data) if args.data else data_dir(),
        options,
        cfg=load_config(args.config) if args.config else None,
        log=lambda s: print(s, file=sys.stderr),
    )
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "cross_source.json").write_text(json.dumps(res, indent=1, default=float))
    if args.json:
        print(json.dumps({k: v for k, v in res.items()}, indent=1, default=float))
    else:
        print(format_table(res))
    return 0
