"""``leuk train-detector --data DATA -o RUN_DIR``: train the WBC detector from the public data."""


def register(sub):
    """Add the ``leuk train-detector`` subcommand to ``sub``."""
    p = sub.add_parser(
        "train-detector",
        help="train the StarDist-method WBC detector",
        description="Reproduce the shipped wbc-stardist detector from ../shared/data: derives "
        "masks, trains on CPU/GPU, tunes thresholds on validation splits and writes "
        "RUN_DIR/wbc-stardist.{safetensors,yaml}.",
    )
    p.add_argument("--data", default=None, help="data folder (default $LEUK_DATA or <repo>/../shared/data)")
    p.add_argument("-o", "--out", required=True, help="run folder")
    p.add_argument("--minutes", type=float, default=32.0, help="training time budget (default 32)")
    p.add_argument("--steps", type=int, default=100000, help="maximum steps")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--mpp", type=float, default=0.5, help="working pixel size (um/px)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--n-fourclass", type=int, default=300, help="four-class fields per class")
    p.add_argument("--init-from", default=None, help="start from this model card (fine-tuning)")
    p.add_argument(
        "--channels",
        type=int,
        nargs="+",
        default=None,
        metavar="C",
        help="U-Net channels per level (default 16 32 64); with --init-from, wider channels widen its network "
        "(function-preserving: the new channels start silent, leukcore.detect.widen)",
    )
    p.add_argument("--lr", type=float, default=None, help="peak learning rate of the cosine schedule (default 3e-3)")
    p.add_argument(
        "--source-weight",
        action="append",
        default=[],
        metavar="SOURCE=W",
        help="share of a training source in each batch (repeatable); sources: four-class (0.5), "
        "bccd (0.25), pbc (0.2), pbc-platelet (0.05, the platelet negatives)",
    )
    p.add_argument(
        "--retune",
        default=None,
        metavar="CARD",
        help="do not train: re-tune this model's thresholds (probability, NMS, smallest cell) on the "
        "validation splits and write a copy with the new card to RUN_DIR",
    )
    p.add_argument(
        "--val-ignore-below",
        type=float,
        default=None,
        metavar="UM",
        help="when tuning thresholds (after training, or --retune): four-class validation instances "
        "smaller than a disc UM microns across "
        "(fragments of the derived masks) count neither as cells nor as false positives "
        "(default 7, the smallest white cell; 0 counts every instance)",
    )
    p.add_argument(
        "--train-ignore-below",
        type=float,
        default=None,
        metavar="UM",
        help="four-class training instances smaller than a disc UM microns across (fragments of the "
        "derived masks) are ignored instead of learnt as cells",
    )
    _recipe_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def _recipe_arguments(p) -> None:
    """The recipe's input and augmentation options (``--normalize``, ``--augment``, ``--mosaic``)."""
    p.add_argument(
        "--normalize",
        choices=["white-balance", "reinhard"],
        default="white-balance",
        help="network input: white balance only (v1-v3) or also the stained pixels moved to the "
        "training sources' colour template (Reinhard, per slide)",
    )
    p.add_argument(
        "--augment",
        choices=["mild", "strong", "mixed"],
        default="mild",
        help="training augmentation: mild (v1-v3 recipe) or strong (v4: scale 0.6-1.67x, region-wise "
        "Romanowsky re-colouring, glass tints, uneven light, blur, noise, JPEG) or mixed (each "
        "patch strong with probability 0.5, else mild)",
    )
    p.add_argument(
        "--mosaic",
        type=float,
        default=0.0,
        metavar="P",
        help="share of training patches laid out as mosaics of 2x2 or 3x3 fields of one source "
        "(cells cut at a field's edge next to another field, as in a mosaic of fields)",
    )
    p.add_argument(
        "--wide-scale",
        type=float,
        default=0.0,
        metavar="P",
        help="share of the mild (not re-coloured) patches drawn at 0.6-1.67x scale, as a wrong pixel-size "
        "estimate shows a slide of familiar colours",
    )
    p.add_argument(
        "--map-cell-share",
        type=float,
        default=0.0,
        metavar="S",
        help="with --normalize reinhard: a patch's colour map takes at most this share (drawn in [0.02, S]) of its "
        "stained pixels from white cells, as a slide's thumbnail does (0: the patch's own pixels)",
    )
    p.add_argument(
        "--std-ratio-low",
        type=float,
        nargs=3,
        default=None,
        metavar=("L", "A", "B"),
        help="with --normalize reinhard: the least each CIE Lab channel's spread may shrink to in the colour map "
        "(the most is 1: never stretched), written to the card; default 0.5 0.5 0.5 (v4-v7).  Higher a* and b* "
        "keep the hue gap between white and red cells",
    )
    p.add_argument(
        "--ignore-found-by",
        default=None,
        metavar="MODEL",
        help="four-class cells this detector finds and the colour-threshold masks lack are ignored, not learnt "
        "as background (the masks miss pale-pink and magenta white cells)",
    )


def run(args):
    """Run ``leuk train-detector`` with the parsed ``args``; the exit code."""
    from ..detect.data import default_data_dir
    from ..detect.train import DEFAULT_LR, VAL_IGNORE_BELOW_UM, DetectorTrainOptions, train_detector

    data = args.data or default_data_dir()
    weights = {}
    for kv in args.source_weight:
        k, sep, v = kv.partition("=")
        try:
            w = float(v)
        except ValueError:
            w = -1.0
        if not sep or w < 0:
            raise SystemExit(f"leuk train-detector: --source-weight wants SOURCE=W with W >= 0, got {kv!r}")
        weights[k.strip()] = w
    val_ignore = VAL_IGNORE_BELOW_UM if args.val_ignore_below is None else args.val_ignore_below
    if args.retune:
        from ..detect.tuning import retune_detector

        path = retune_detector(args.retune, data, args.out, device=args.device, val_ignore_below_um=val_ignore)
        print(f"model card: {path}")
        return 0
    options = DetectorTrainOptions(
        mpp=args.mpp,
        minutes=args.minutes,
        steps=args.steps,
        batch=args.batch,
        device=args.device,
        threads=args.threads,
        n_fourclass=args.n_fourclass,
        seed=args.seed,
        init_from=args.init_from,
        source_weights=weights,
        channels=args.channels,
        lr=DEFAULT_LR if args.lr is None else args.lr,
        train_ignore_below_um=args.train_ignore_below,
        val_ignore_below_um=val_ignore,
        augmentation=args.augment,
        normalize=args.normalize,
        mosaic=args.mosaic,
        wide_scale=args.wide_scale,
        ignore_found_by=args.ignore_found_by,
        map_cell_share=args.map_cell_share,
        std_ratio_bounds=None if args.std_ratio_low is None else (tuple(args.std_ratio_low), (1.0, 1.0, 1.0)),
    )
    path = train_detector(data, args.out, options)
    print(f"model card: {path}")
    return 0
