"""``leuk train CONFIG.yaml|toml``: train (and evaluate) a cell classifier from one config."""

from __future__ import annotations

from pathlib import Path


def register(sub):
    """Add the ``leuk train`` subcommand to ``sub``."""
    p = sub.add_parser(
        "train",
        help="train a cell classifier from a YAML/TOML config",
        description="Train a classifier (two-phase transfer learning) as the config says, then "
        "evaluate it on the held-out split. The run directory keeps the config, "
        "splits, checkpoints, metrics and the model card (model.yaml). "
        "Several GPUs: torchrun --nproc_per_node N -m leukcore.cli train CONFIG.",
    )
    p.add_argument(
        "config", help="YAML or TOML config (see docs/training.md), or a preset name: all-4class, all-binary"
    )
    p.add_argument("-o", "--out", default=None, help="run directory (default runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    p.add_argument("--device", default=None, help="override train.device (auto | cpu | cuda[:N])")
    p.add_argument(
        "--arch",
        default=None,
        metavar="NAME",
        help="override model.architecture with any timm architecture (e.g. resnet50, mobilenetv2_100, "
        "densenet121); ImageNet weights offline only for tf_efficientnet_lite0/1/2, others start "
        "from random weights unless model.imagenet names a local file",
    )
    p.add_argument(
        "--set",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        dest="overrides",
        help="override one config value by its dotted path, VALUE read as YAML (e.g. train.phase2.minutes=45, "
        "train.phase2.finetune_stages=all); repeatable",
    )
    p.add_argument(
        "--corrections",
        action="append",
        default=None,
        metavar="DIR",
        help="also train on a reviewer's corrected cells: a results folder with corrections.parquet, or a "
        "folder above several (adds {reader: corrections, root: DIR}; repeatable; docs/review.md)",
    )
    p.add_argument("--debug", action="store_true", help="full tracebacks")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``leuk train`` with the parsed ``args``; the exit code."""
    from ..train.config import load_config, preset_path
    from ..train.loop import train_classifier

    args.config = str(preset_path(args.config))
    cfg = load_config(args.config)
    cfg["_config_path"] = str(args.config)
    for root in args.corrections or ():
        cfg["data"]["datasets"].append({"reader": "corrections", "root": str(root)})
    if args.device:
        cfg["train"]["device"] = args.device
    if getattr(args, "overrides", None):
        from ..train.config import apply_overrides

        cfg = apply_overrides(cfg, args.overrides, source=args.config)
    if args.arch:
        from ..classify.network import build_network

        build_network(args.arch, 2)  # unknown names fail here, before any data is read
        cfg["model"]["architecture"] = args.arch
        if not args.arch.startswith("tf_efficientnet_lite") and cfg["model"].get("imagenet") == "auto":
            cfg["model"]["imagenet"] = "none"
    out = Path(args.out or Path("runs") / cfg["name"])
    cfg_clean = {k: v for k, v in cfg.items() if k != "_config_path"}
    cfg_clean["_config_path"] = cfg["_config_path"]
    try:
        train_classifier(cfg_clean, out, resume=args.resume, evaluate=not args.no_eval)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # torchrun (DDP): leave cleanly
            dist.destroy_process_group()
    print(f"run directory: {out}")
    return 0
