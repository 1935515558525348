"""Training the StarDist-method WBC detector on CPU or GPU.

``leuk train-detector --data ../shared/data -o RUN_DIR`` builds a :class:`DetectorTrainOptions` and calls
:func:`train_detector`. The run directory receives ``wbc-stardist.safetensors`` + ``wbc-stardist.yaml``
(the card) and ``train_log.json``.

What a batch holds (augmentation, targets, the stain template) is in :mod:`leukcore.detect.train_data`; the
threshold tuning after training, the validation sets and ``--retune`` in :mod:`leukcore.detect.tuning`. Their
public names are re-exported here (the import paths of earlier versions).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .data import TrainItem
from .train_data import (
    AUGMENTATIONS,
    NORMALIZE_CHOICES,
    Recipe,
    augment,
    make_targets,
    sample_batch,
    stain_card,
    training_template,
)
from .train_record import train_command, training_record
from .tuning import (
    TUNING_OBJECTIVES,
    VAL_IGNORE_BELOW_UM,
    VAL_SPLIT_NOTE,
    compare_tunings,
    fourclass_val_items,
    is_val_name,
    match_points_to_boxes,
    match_points_to_labels,
    restained_sets,
    retune_detector,
    training_draws,
    tune_thresholds,
    tuning_sets,
    validation_sets,
)

__all__ = [
    "augment",
    "make_targets",
    "sample_batch",
    "stardist_loss",
    "train_detector",
    "train_network",
    "tune_thresholds",
    "compare_tunings",
    "retune_detector",
    "validation_sets",
    "match_points_to_boxes",
    "match_points_to_labels",
    "DEFAULT_ARCH",
    "restained_sets",
    "DetectorTrainOptions",
    "train_command",
    "stain_card",
    "AUGMENTATIONS",
    "NORMALIZE_CHOICES",
    "TUNING_OBJECTIVES",
    "VAL_IGNORE_BELOW_UM",
    "VAL_SPLIT_NOTE",
    "fourclass_val_items",
    "training_draws",
    "training_template",
    "tuning_sets",
]

DEFAULT_ARCH = {"type": "stardist-unet", "n_rays": 32, "channels": [16, 32, 64], "head_channels": 32}
#: peak learning rate of the cosine schedule
DEFAULT_LR = 3e-3
#: share of each training source in a batch (each source's images share its weight equally)
DEFAULT_SOURCE_WEIGHTS = {"four-class": 0.5, "bccd": 0.25, "pbc": 0.2, "pbc-platelet": 0.05}


@dataclass(frozen=True)
class DetectorTrainOptions:
    """The options of a detector training run (``leuk train-detector`` builds one from its flags).

    Attributes
    ----------
    mpp : float
        Working pixel size (um/px) the images are scaled to.
    minutes : float, optional
        Training time budget; ``None``: only ``steps`` bounds the run.
    steps : int
        Maximum optimiser steps.
    batch, size : int
        Patches per batch and their side in pixels.
    device : str
        ``auto``, ``cpu`` or ``cuda[:N]``.
    threads : int, optional
        torch CPU threads (``None``: torch's default).
    n_fourclass, n_pbc, n_platelet : int
        Images drawn per four-class class, per PBC white-cell class and of PBC platelets (the negatives).
    seed : int
        Seed of the draws, the augmentation and the network's initialisation.
    name : str
        Model name (the card's and the files' name).
    init_from : str, optional
        Model card to start from (fine-tuning).  With the same ``seed`` and image caps the training draws are the
        same, so the held-out PBC validation set stays the same.
    lr : float
        Peak learning rate of the cosine schedule.
    source_weights : dict, optional
        Share of each source in a batch (``four-class``, ``bccd``, ``pbc``, ``pbc-platelet``); missing keys keep
        :data:`DEFAULT_SOURCE_WEIGHTS`.
    channels : sequence of int, optional
        U-Net channels per level (default ``DEFAULT_ARCH["channels"]``); with ``init_from``, channels wider
        than its network's widen it (:func:`~leukcore.detect.widen.widen_state`: the start computes what it did).
    train_ignore_below_um : float, optional
        Four-class training instances smaller than a disc this many microns across (fragments of the derived
        masks) are *ignore* instead of cells (see :func:`~leukcore.detect.data.load_training_items`).
    val_ignore_below_um : float, optional
        The same for the four-class fields thresholds are tuned on
        (:func:`~leukcore.detect.tuning.fourclass_val_items`).
    augmentation : {"mild", "strong", "mixed"}
        The augmentation recipe (:data:`~leukcore.detect.train_data.AUGMENTATIONS`).
    normalize : {"white-balance", "reinhard"}
        The network's input: white balance only, or also the stained pixels' colours moved to a template made
        from the training images (:mod:`leukcore.detect.stain`; written to the card).
    mosaic : float
        Share of patches laid out as mosaics of 2 x 2 or 3 x 3 fields of one source
        (:func:`~leukcore.detect.train_data.mosaic_patch`), as ``leuk detect`` sees fields laid edge to edge.
    wide_scale : float
        Share of the mild patches drawn at the strong recipe's 0.6-1.67x (:func:`~.train_data.augment`).
    ignore_found_by : str, optional
        A detector whose cells the four-class masks lack become *ignore* (:func:`~.masks.ignore_found`).
    map_cell_share : float
        With ``normalize="reinhard"``: the most of a patch's stained pixels its colour map's statistics take from
        labelled cells, as a slide's thumbnail (:func:`~.train_data.patch_input`); 0: the patch's own.
    std_ratio_bounds : tuple, optional
        With ``normalize="reinhard"``: the colour map's std-ratio bounds per Lab channel
        (:func:`~leukcore.detect.stain.ratio_bounds`), used in training and written to the card; ``None``: the
        default (:data:`~leukcore.detect.stain.STD_RATIO_BOUNDS`).
    """

    mpp: float = 0.5
    minutes: Optional[float] = 30.0
    steps: int = 100000
    batch: int = 8
    size: int = 128
    device: str = "auto"
    threads: Optional[int] = 1
    n_fourclass: int = 300
    n_pbc: int = 60
    n_platelet: int = 40
    seed: int = 0
    name: str = "wbc-stardist"
    init_from: Optional[str] = None
    lr: float = DEFAULT_LR
    source_weights: Optional[dict] = None
    channels: Optional[Sequence[int]] = None
    train_ignore_below_um: Optional[float] = None
    val_ignore_below_um: Optional[float] = VAL_IGNORE_BELOW_UM
    augmentation: str = "mild"
    normalize: str = "white-balance"
    mosaic: float = 0.0
    wide_scale: float = 0.0
    ignore_found_by: Optional[str] = None
    map_cell_share: float = 0.0
    std_ratio_bounds: Optional[tuple] = None

    def checked(self) -> DetectorTrainOptions:
        """These options with the source weights completed from the defaults; ``ValueError`` on unknown ones."""
        for key in ("mosaic", "wide_scale", "map_cell_share"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{key} is a share in [0, 1], got {getattr(self, key)}")
        if self.normalize not in NORMALIZE_CHOICES:
            raise ValueError(f"unknown normalize {self.normalize!r}; known: {NORMALIZE_CHOICES}")
        if self.map_cell_share and self.normalize != "reinhard":
            raise ValueError("map_cell_share shapes the stain map's statistics: it needs normalize='reinhard'")
        if self.std_ratio_bounds is not None:
            from .stain import ratio_bounds

            if self.normalize != "reinhard":
                raise ValueError("std_ratio_bounds bound the stain map: it needs normalize='reinhard'")
            high = ratio_bounds(self.std_ratio_bounds)[1]
            if any(v != 1.0 for v in high):  # the command that reproduces the run sets only the lower bounds
                raise ValueError(f"std_ratio_bounds: leuk train-detector trains with upper bounds 1, got {high}")
        sw = {**DEFAULT_SOURCE_WEIGHTS, **(self.source_weights or {})}
        unknown = sorted(set(sw) - set(DEFAULT_SOURCE_WEIGHTS))
        if unknown:
            raise ValueError(f"unknown training source(s) {unknown}; known: {sorted(DEFAULT_SOURCE_WEIGHTS)}")
        return replace(self, source_weights=sw)


def stardist_loss(prob_logit, dist, prob_t, dist_t, weight, dist_weight: float = 0.2, bg_reg: float = 1e-4):
    """BCE on probability + probability-weighted mean absolute error on distances (stardist's recipe)."""
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(prob_logit, prob_t, weight=weight)
    mask = prob_t * weight
    mae = (mask * (dist - dist_t).abs()).mean() / mask.mean().clamp_min(1e-6)
    reg = ((1 - prob_t.clamp(max=1)) * (prob_t == 0).float() * weight * dist.abs()).mean()
    return bce + dist_weight * mae + bg_reg * reg, {"bce": float(bce.detach()), "mae": float(mae.detach())}


# -------------------------------------------------------------------- training
def item_weights(items: Sequence[TrainItem], source_weights: Optional[dict]) -> np.ndarray:
    """Each item's probability of being drawn: each source contributes its weight in total, not per image."""
    sw = source_weights or {}
    w = np.array([sw.get(it.source, 1.0) for it in items], dtype=np.float64)
    counts: dict = {}
    for it in items:
        counts[it.source] = counts.get(it.source, 0) + 1
    w = w / np.array([counts[it.source] for it in items])
    return w / w.sum()


def train_network(
    items: Sequence[TrainItem],
    options: Optional[DetectorTrainOptions] = None,
    *,
    arch: Optional[dict] = None,
    init_state: Optional[dict] = None,
    template: Optional[np.ndarray] = None,
    log: Optional[Callable[[str], None]] = None,
):
    """Train a :class:`StarDistUNet` on ``items``; stops after ``options.steps`` or ``options.minutes``.

    ``options`` gives steps, minutes, batch, size, lr, device, seed, threads, source weights and the
    augmentation (:class:`DetectorTrainOptions`); ``template``: the stain template of the input.

    Returns ``(net, history)``.
    """
    import torch

    from ..device import device_settings, resolve_device
    from .net import build_network

    o = options or DetectorTrainOptions()
    arch = dict(arch or DEFAULT_ARCH)
    if o.threads:
        torch.set_num_threads(int(o.threads))
    torch.manual_seed(o.seed)
    rng = np.random.default_rng(o.seed)
    dev = resolve_device(o.device)
    settings = device_settings(dev)
    net = build_network(arch).to(dev)
    if init_state:
        net.load_state_dict(init_state)
    opt = torch.optim.AdamW(net.parameters(), lr=o.lr, weight_decay=1e-4)
    w = item_weights(items, o.source_weights)
    scaler = torch.amp.GradScaler("cuda") if settings["amp"] else None
    history = []
    t0 = time.time()
    say = log or (lambda s: None)
    step = 0
    net.train()
    while True:
        elapsed = (time.time() - t0) / 60
        if step >= o.steps or (o.minutes is not None and elapsed >= o.minutes):
            break
        frac = min(1.0, max(step / max(o.steps, 1), elapsed / o.minutes if o.minutes else 0.0))
        for g in opt.param_groups:
            g["lr"] = o.lr * (0.03 + 0.97 * 0.5 * (1 + math.cos(math.pi * frac)))
        x, p, d, wt = sample_batch(
            items,
            w,
            rng,
            o.batch,
            o.size,
            arch["n_rays"],
            Recipe(o.augmentation, o.mosaic, o.wide_scale, o.map_cell_share, o.std_ratio_bounds),
            template=template,
        )
        x, p, d, wt = (torch.from_numpy(a).to(dev) for a in (x, p, d, wt))
        with torch.autocast(dev.type, dtype=torch.float16, enabled=bool(settings["amp"])):
            logit, dist = net(x)
        loss, parts = stardist_loss(logit.float(), dist.float(), p, d, wt)
        opt.zero_grad(set_to_none=True)
        if scaler:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        step += 1
        history.append({"step": step, "loss": float(loss.detach()), **parts})
        if step % 50 == 0 or step == 1:
            recent = np.mean([h["loss"] for h in history[-50:]])
            say(
                f"step {step} loss {recent:.4f} bce {parts['bce']:.3f} mae {parts['mae']:.2f} "
                f"lr {opt.param_groups[0]['lr']:.2e} {(time.time() - t0) / 60:.1f} min"
            )
    net.eval()
    return net, history


def val_split(items: Sequence[TrainItem], frac: float = 0.1):
    """Deterministic image-level split of four-class items by name hash (others all train)."""
    tr, va = [], []
    for it in items:
        (va if it.source == "four-class" and is_val_name(it.name, frac) else tr).append(it)
    return tr, va


def train_detector(
    data_dir, out_dir, options: Optional[DetectorTrainOptions] = None, *, log: Optional[Callable[[str], None]] = print
) -> Path:
    """Build the training set, train, tune thresholds on validation data, write weights + card.

    Parameters
    ----------
    data_dir, out_dir : path
        The public data folder and the run folder.
    options : DetectorTrainOptions, optional
        What to train (default ``DetectorTrainOptions()``); unknown sources or normalisations raise
        ``ValueError`` before any data is read.
    log : callable, optional
        Receives progress lines (default ``print``; ``None``: quiet).

    Returns the card path in ``out_dir``.
    """
    from ..models.registry import save_model
    from .model import Detector

    o = (options or DetectorTrainOptions()).checked()
    t_start = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    say = log or (lambda s: None)
    train_items, info = _training_items(data_dir, o, say, t_start)
    arch, init_card, init_state = _architecture(o)
    template = training_template(train_items, seed=o.seed) if o.normalize == "reinhard" else None
    net, hist = train_network(train_items, o, arch=arch, init_state=init_state, template=template, log=say)
    card = _new_card(o, arch, template)
    det = Detector.from_network(net, card, device=o.device)
    tuned = _tune_after_training(card, det, data_dir, o, say)
    run = {
        "minutes": round((time.time() - t_start) / 60, 1),
        "device": str(det.device),
        "params": int(sum(p.numel() for p in net.parameters())),
        "command": train_command(data_dir, out_dir, replace(o, channels=_channels_flag(o, arch, init_card))),
    }
    card["training"] = training_record(o, info, hist, run, init_card)
    cpath = save_model(net.state_dict(), card, out_dir, o.name)
    log_text = json.dumps({"history": hist[::10], "tuning": tuned, "info": info}, default=float)
    (out_dir / "train_log.json").write_text(log_text)
    say(f"wrote {cpath} ({(time.time() - t_start) / 60:.1f} min)")
    return cpath


def _training_items(data_dir, o: DetectorTrainOptions, say, t_start: float):
    """The training items (the four-class validation fields left out) and the sources' description."""
    from .data import load_training_items

    items, info = load_training_items(
        data_dir,
        o.mpp,
        n_fourclass=o.n_fourclass,
        n_pbc=o.n_pbc,
        n_platelet=o.n_platelet,
        seed=o.seed,
        log=say,
        fourclass_ignore_below_um=o.train_ignore_below_um,
    )
    train_items, val_items = val_split(items)
    if o.ignore_found_by:
        from .masks import ignore_found
        from .model import Detector

        det = Detector.load(o.ignore_found_by, threads=o.threads)
        train_items = [ignore_found(it, det, o.mpp) if it.source == "four-class" else it for it in train_items]
    say(
        f"{len(train_items)} training images ({len(val_items)} drawn four-class fields are validation fields, "
        f"left out; tuning uses every validation field) "
        f"({(time.time() - t_start) / 60:.1f} min to build)"
    )
    return train_items, info


def _architecture(o: DetectorTrainOptions):
    """``(arch, init card or None, init weights or None)``: the network to train, fresh or from ``init_from``."""
    from ..models.registry import load_card, load_state_dict

    arch = dict(DEFAULT_ARCH)
    if o.channels:
        arch["channels"] = [int(c) for c in o.channels]
    if not o.init_from:
        return arch, None, None
    c0 = load_card(o.init_from)
    old = dict(c0["architecture"])
    if not o.channels or [int(c) for c in o.channels] == list(old["channels"]):
        return old, c0, load_state_dict(c0)
    from .widen import widen_state

    wide = dict(old, channels=[int(c) for c in o.channels])
    return wide, c0, widen_state(load_state_dict(c0), old, wide, seed=o.seed)


def _channels_flag(o: DetectorTrainOptions, arch: dict, init_card: Optional[dict]):
    """The channels the command names: a fresh network's, or a widened one's (``None`` when the init's)."""
    if init_card is None:
        return arch["channels"]
    return None if list(arch["channels"]) == list(init_card["architecture"]["channels"]) else arch["channels"]


def _new_card(o: DetectorTrainOptions, arch: dict, template: Optional[np.ndarray]) -> dict:
    """The card of a freshly trained detector before tuning (default thresholds)."""
    card = {
        "name": o.name,
        "task": "detection",
        "version": 1,
        "description": "White-blood-cell (nucleus + cytoplasm) detector for Romanowsky-stained peripheral "
        "blood smears: StarDist method (star-convex polygons) in PyTorch.",
        "architecture": arch,
        "input": {
            "mpp": o.mpp,
            "patch": o.size,
            "max_cell_um": 25.0,
            "min_cell_um": 4.0,
            "normalization": {
                "type": "background-white-balance",
                "detail": "RGB divided by the slide's background colour (median of the "
                "brightest 10% of a thumbnail), clipped to [0, 1.25]",
            },
        },
        "thresholds": {"prob": 0.5, "nms": 0.4},
    }
    if template is not None:
        card["input"]["normalization"] = stain_card(template, o.std_ratio_bounds)
    return card


def _tune_after_training(card: dict, det, data_dir, o: DetectorTrainOptions, say) -> Optional[dict]:
    """Tune the thresholds on the validation sets (re-stained too, worst set first, with strong augmentation)."""
    from .tuning import apply_tuning, restained_sets, tuning_sets

    draws = {"seed": o.seed, "n_pbc": o.n_pbc, "n_platelet": o.n_platelet}
    val_sets = tuning_sets(data_dir, o.mpp, draws, log=say, ignore_below_um=o.val_ignore_below_um)
    objective = "mean"
    if o.augmentation != "mild":
        val_sets.update(restained_sets(val_sets))
        objective = "worst"
    return apply_tuning(card, det, val_sets, say, o.val_ignore_below_um, objective)
