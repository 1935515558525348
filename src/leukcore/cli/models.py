"""``leuk models``: shipped models and the key facts of their cards."""

from __future__ import annotations

import json


def register(sub):
    """Add the ``leuk models`` subcommand to ``sub``."""
    p = sub.add_parser(
        "models",
        help="list shipped models with their cards' key facts",
        description="List the models known by name: those in the folders of $LEUK_MODEL_PATH "
        "(searched first) and the shipped ones, with their cards' key facts.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per model and line")
    p.add_argument("--task", default=None, choices=["detection", "classification", "pixel-size"])
    p.set_defaults(func=run)


def facts(card: dict) -> dict:
    """What ``leuk models`` shows of a model card: name, task, version, architecture, input and headline metrics."""
    inp = card.get("input", {})
    arch = card.get("architecture", {})
    m = card.get("metrics", {}) or {}
    return {
        "name": card.get("name"),
        "task": card.get("task"),
        "version": card.get("version"),
        "architecture": arch.get("name") if isinstance(arch, dict) else arch,
        "classes": card.get("classes"),
        "input": {k: inp.get(k) for k in ("size", "crop_um", "mode", "mpp", "patch") if inp.get(k) is not None},
        "weights_mb": round(card.get("weights", {}).get("bytes", 0) / 1e6, 2),
        "card": card.get("_card_path"),
        "split_type": m.get("split_type"),
        "metrics": {k: v for k, v in m.items() if not isinstance(v, (list, dict))},
    }


def run(args) -> int:
    """Run ``leuk models`` with the parsed ``args``; the exit code."""
    from ..models.registry import list_models, load_card

    names = list_models(args.task)
    if not names:
        print("no shipped models found")
        return 0
    for n in names:
        f = facts(load_card(n))
        if args.json:
            print(json.dumps(f, default=str))
            continue
        print(f"{f['name']}  ({f['task']}, v{f['version']}, {f['architecture']}, {f['weights_mb']} MB)")
        print(f"    card: {f['card']}")
        if f["classes"]:
            print(f"    classes: {', '.join(f['classes'])}")
        if f["input"]:
            print("    input: " + ", ".join(f"{k}={v}" for k, v in f["input"].items()))
        pref = [
            "cnn_images_accuracy",
            "cnn_cells_accuracy",
            "colour_baseline_images_accuracy",
            "stain_swap_cnn_images_accuracy",
            "stain_swap_colour_baseline_images_accuracy",
            "pbc_false_positive_rate_cnn",
        ]
        keys = [k for k in pref if k in f["metrics"]] or [
            k
            for k in f["metrics"]
            if any(s in k for s in ("accuracy", "false_positive", "f1", "ap", "recall")) and "ci95" not in k
        ][:8]
        if keys:
            print(f"    held-out ({f['split_type']}): " + ", ".join(f"{k}={f['metrics'][k]}" for k in keys))
    return 0
