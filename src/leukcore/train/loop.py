"""Two-phase transfer learning of a cell classifier (``leuk train`` / :func:`train_classifier`).

phase 1  head on the frozen ImageNet backbone (from cached pooled features: fast on CPU)
phase 2  the top stages + ``conv_head`` + head unfrozen at a lower learning rate, trained from
         cached trunk features of ``views`` augmented views per crop (flips, rotations, HED jitter)

Class-balanced loss weights (or sampling), early stopping on validation macro-F1, deterministic
seeds, tqdm progress, a checkpoint after every epoch (``--resume`` continues), CUDA with AMP and
channels_last when present, several GPUs with ``torchrun --nproc_per_node N -m leukcore.cli train``
(DDP over the trainable top; rank 0 writes).  The run directory keeps ``config.yaml``,
``splits.csv``, ``checkpoint.pt``, ``history.json``, ``model.safetensors`` + ``model.yaml`` (the card)
and, after evaluation, ``metrics.json`` and plots.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .config import dump_config
from .metrics import macro_f1

__all__ = ["train_classifier", "seed_everything", "build_card", "weights_digest"]


def _print(*a):
    print(*a, flush=True)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _dist():
    """(rank, world, local_rank); initialises torch.distributed under torchrun."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def weights_digest(module) -> str:
    """sha256 of a module's state (names, shapes, values): equal on every DDP rank after training."""
    import hashlib

    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        t = v.detach().cpu().contiguous()
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _shard(batches: list, rank: int, world: int) -> list:
    """The share of an epoch's batches for this rank; every rank gets the same number of steps (DDP needs it):
    the list is padded with its first batches up to a multiple of ``world``.
    """
    if world <= 1 or not batches:
        return batches
    pad = (-len(batches)) % world
    full = batches + batches[:pad] if pad <= len(batches) else batches * (1 + pad // len(batches))
    full = full[: len(batches) + pad]
    return full[rank::world]


def _broadcast(obj, world: int):
    """Rank 0's value of ``obj`` on every rank (DDP); ``obj`` unchanged when not distributed."""
    if world <= 1:
        return obj
    import torch.distributed as dist
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _class_weights(y: np.ndarray, C: int) -> np.ndarray:
    cnt = np.bincount(y, minlength=C).astype(np.float64)
    w = np.where(cnt > 0, len(y) / (C * np.maximum(cnt, 1)), 0.0)
    return w.astype(np.float32)


def _batches(n: int, bs: int, rng: np.random.Generator, y=None, balance: str = "loss", C: int = 1):
    if balance == "sampler" and y is not None:
        p = _class_weights(y, C)[y].astype(np.float64)
        idx = rng.choice(n, size=n, replace=True, p=p / p.sum())
    else:
        idx = rng.permutation(n)
    return [idx[i:i + bs] for i in range(0, n, bs)]


def ck_exists_before(path: Path, t0: float) -> bool:
    """True when ``path`` existed before this run reached ``t0`` (features read, not computed)."""
    return path.exists() and path.stat().st_mtime < time.time() - (time.perf_counter() - t0) - 1


def _save_ckpt(path: Path, state: dict) -> None:
    import torch

    from ..results import atomic_path
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_ckpt(path: Path) -> Optional[dict]:
    import torch

    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def build_card(cfg: dict, classes, spec, extra: dict | None = None) -> dict:
    card = {
        "name": cfg["name"], "task": "classification", "version": cfg.get("version", 1),
        "architecture": {"name": cfg["model"]["architecture"], "num_classes": len(classes),
                         "library": "timm"},
        "input": spec.to_card(),
        "classes": list(classes),
        "training": {"config": {k: v for k, v in cfg.items() if k != "eval"}},
    }
    card.update(extra or {})
    return card


def train_classifier(cfg: dict, out_dir: str | os.PathLike, *, resume: bool = False, evaluate: bool = True,
                     log=_print) -> Path:
    """Train a classifier from a resolved config into ``out_dir`` and evaluate it on the held-out split.

    Returns the run directory (its ``model.yaml`` loads with ``Classifier.load(run_dir)``).
    """
    import torch

    from ..classify.network import build_network
    from ..device import device_settings, resolve_device
    from ..models.imagenet import load_imagenet_weights
    from .features import augment_crops, pooled_features, split_network, trunk_features
    from .prepare import prepare

    tr = cfg["train"]
    rank, world, local = _dist()
    if tr.get("threads"):
        torch.set_num_threads(int(tr["threads"]))
    device = resolve_device(tr["device"] if world == 1 else f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    st = device_settings(device)
    seed_everything(int(tr["seed"]))
    run = Path(out_dir)
    if rank == 0:                     # only rank 0 writes the run directory
        run.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, run / "config.yaml")
    t0 = time.perf_counter()
    report: dict = {}
    df, classes, spec, cells = prepare(cfg, device="cpu", report=report)
    if rank == 0:
        df.drop(columns=[c for c in ("cell_type",) if c not in df]).to_csv(run / "splits.csv", index=False)
    C = len(classes)
    log(f"[train] {cfg['name']}: {len(df)} images, {report['cells']} cells, classes={classes}, "
        f"split={report['split_type']} {report['cells_per_split']} ({time.perf_counter() - t0:.0f}s)")
    timings: dict = {"prepare_s": round(time.perf_counter() - t0, 1)}

    net = build_network(cfg["model"]["architecture"], C)
    origin = load_imagenet_weights(net, cfg["model"]["architecture"], cfg["model"].get("imagenet", "auto"))
    net.to(device)
    if st["channels_last"] and device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    p2 = tr["phase2"]
    trunk, top = split_network(net, int(p2.get("finetune_stages", 2)))

    tri = np.flatnonzero(cells["split"] == "train")
    vai = np.flatnonzero(cells["split"] == "val")
    ytr, yva = cells["label"][tri], cells["label"][vai]
    V = max(1, int(tr.get("views", 1)))

    # ---------------------------------------------------------------- cached trunk features
    fpath = run / "features.npz"
    t1 = time.perf_counter()
    if fpath.exists():
        z = np.load(fpath)
        ftr, fva = z["train"], z["val"]
    else:
        rng = np.random.default_rng(int(tr["seed"]))
        stain = tr.get("stain_aug") or None
        from .features import onnx_runner
        runner = onnx_runner(trunk, spec.size) if device.type == "cpu" else None
        trunk.to(device)
        views = [trunk_features(trunk, cells["crops"][tri], spec, device, desc="train view 0", runner=runner,
                                amp=st["amp"], channels_last=device.type == "cuda")]
        for v in range(1, V):
            views.append(trunk_features(trunk, cells["crops"][tri], spec, device, desc=f"train view {v}",
                                        augment=lambda c: augment_crops(c, rng, stain), amp=st["amp"], runner=runner,
                                        channels_last=device.type == "cuda"))
        ftr = np.stack(views)                       # (V, N, C, h, w)
        fva = trunk_features(trunk, cells["crops"][vai], spec, device, desc="val", amp=st["amp"], runner=runner)
        if rank == 0:
            from ..results import atomic_path
            with atomic_path(fpath) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, train=ftr, val=fva)
    n_feat = V * len(tri) + len(vai)
    if resume and ck_exists_before(fpath, t1):
        timings["features"] = "read from the run's cache (resumed run)"
    else:
        timings["features_s"] = round(time.perf_counter() - t1, 1)
        timings["frozen_images_per_s"] = round(n_feat / max(timings["features_s"], 1e-9), 2)

    ckpt_path = run / "checkpoint.pt"
    ck = _load_ckpt(ckpt_path) if resume else None
    history = ck["history"] if ck else []
    wts = torch.from_numpy(_class_weights(ytr, C) if tr["balance"] == "loss" else np.ones(C, np.float32)).to(device)
    loss_fn = torch.nn.CrossEntropyLoss(weight=wts)
    head = net.get_classifier()
    with torch.no_grad():             # zero-init the new head: phase 1 starts at loss log(C)
        head.weight.zero_()
        head.bias.zero_()

    # ---------------------------------------------------------------- phase 1: head
    p1 = tr["phase1"]
    if ck is None or ck["phase"] == 1:
        t2 = time.perf_counter()
        Ptr = np.concatenate([pooled_features(top, ftr[v], device) for v in range(V)])
        Ytr = np.tile(ytr, V)
        Pva = pooled_features(top, fva, device)
        opt = torch.optim.AdamW(head.parameters(), lr=p1["lr"], weight_decay=p1["weight_decay"])
        start, best, best_state, bad = 0, -1.0, None, 0
        if ck is not None:
            net.load_state_dict(ck["state"])
            opt.load_state_dict(ck["opt"])
            start, best, best_state, bad = ck["epoch"] + 1, ck["best"], ck["best_state"], ck["bad"]
        rng = np.random.default_rng(int(tr["seed"]) + 1)
        for _ in range(start):
            _batches(len(Ytr), p1["batch_size"], rng, Ytr, tr["balance"], C)  # replay the RNG for resume
        Pt, Yt = torch.from_numpy(Ptr).to(device), torch.from_numpy(Ytr).long().to(device)
        Pv = torch.from_numpy(Pva).to(device)
        for ep in range(start, p1["epochs"]):
            head.train()
            tot = 0.0
            for b in _batches(len(Ytr), p1["batch_size"], rng, Ytr, tr["balance"], C):
                bi = torch.from_numpy(b).to(device)
                loss = loss_fn(head(Pt[bi]), Yt[bi])
                opt.zero_grad()
                loss.backward()
                opt.step()
                tot += float(loss.detach()) * len(b)
            head.eval()
            with torch.no_grad():
                f1 = macro_f1(yva, head(Pv).argmax(1).cpu().numpy(), C) if len(yva) else 0.0
            history.append({"phase": 1, "epoch": ep, "loss": tot / len(Ytr), "val_macro_f1": f1})
            if f1 > best:
                best, bad = f1, 0
                best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            else:
                bad += 1
            if rank == 0:
                _save_ckpt(ckpt_path, {"phase": 1, "epoch": ep, "state": net.state_dict(), "opt": opt.state_dict(),
                                       "best": best, "best_state": best_state, "bad": bad, "history": history})
            if bad >= p1["patience"]:
                break
        net.load_state_dict(best_state)
        log(f"[train] phase 1 (head, frozen backbone): best val macro-F1 {best:.4f} after {len(history)} epochs")
        timings["phase1_s"] = round(time.perf_counter() - t2, 1)
        ck = None
        p2_start, p2_best, p2_state, p2_bad, p2_opt = 0, best, best_state, 0, None
    else:
        net.load_state_dict(ck["state"])
        p2_start, p2_best, p2_state, p2_bad, p2_opt = ck["epoch"] + 1, ck["best"], ck["best_state"], ck["bad"], ck["opt"]

    # ---------------------------------------------------------------- phase 2: top stages
    t3 = time.perf_counter()
    for p_ in trunk.parameters():     # the trunk is frozen (its features are cached); DDP must not wait for it
        p_.requires_grad_(False)
    params = [p for p in top.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=p2["lr"], weight_decay=p2["weight_decay"])
    if p2_opt is not None:
        opt.load_state_dict(p2_opt)
    model = top
    if world > 1:                     # DDP broadcasts rank 0's weights, then averages gradients every step
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(top, device_ids=[device.index] if device.type == "cuda" else None)
    scaler = torch.amp.GradScaler(enabled=bool(st["amp"]))
    rng = np.random.default_rng(int(tr["seed"]) + 2)
    n_seen = 0
    sched = p2.get("schedule", "constant")
    if sched not in ("constant", "cosine"):
        raise ValueError(f"config: train.phase2.schedule must be constant | cosine, got {sched!r}")
    for ep in range(p2_start, int(p2["epochs"])):
        if sched == "cosine":         # per-epoch cosine decay from lr towards 0 over the planned epochs
            for g in opt.param_groups:
                # math.cos keeps it a plain float: checkpoints then load with weights_only
                g["lr"] = float(p2["lr"]) * 0.5 * (1 + math.cos(math.pi * ep / max(1, int(p2["epochs"]))))
        top.train()
        for m in top.modules():       # keep BatchNorm statistics frozen (small batches, small data)
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        view = rng.integers(0, V, size=len(tri))
        batches = _batches(len(tri), p2["batch_size"], rng, ytr, tr["balance"], C)
        batches = _shard(batches, rank, world)
        from tqdm import tqdm
        tot = 0.0
        for b in tqdm(batches, desc=f"phase 2 epoch {ep}", unit="batch", mininterval=10, leave=False):
            x = torch.from_numpy(ftr[view[b], b].astype(np.float32)).to(device, non_blocking=True)
            y = torch.from_numpy(ytr[b]).long().to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=bool(st["amp"])):
                loss = loss_fn(model(x), y)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            tot += float(loss.detach()) * len(b)
            n_seen += len(b)
        top.eval()
        from .features import pooled_features as _pf  # noqa: F401  (keeps import cost out of the loop)
        with torch.inference_mode():
            pv = np.concatenate([top(torch.from_numpy(fva[i:i + 256].astype(np.float32)).to(device)).float().cpu().numpy()
                                 for i in range(0, len(fva), 256)]) if len(fva) else np.zeros((0, C))
        f1 = _broadcast(macro_f1(yva, pv.argmax(1), C) if len(yva) else 0.0, world)   # one decision for all ranks
        history.append({"phase": 2, "epoch": ep, "loss": tot / max(1, len(tri)), "val_macro_f1": f1,
                        "lr": float(opt.param_groups[0]["lr"])})
        log(f"[train] phase 2 epoch {ep}: loss {tot / max(1, len(tri)):.4f} val macro-F1 {f1:.4f}")
        if f1 > p2_best:
            p2_best, p2_bad = f1, 0
            p2_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        else:
            p2_bad += 1
        if rank == 0:
            _save_ckpt(ckpt_path, {"phase": 2, "epoch": ep, "state": net.state_dict(), "opt": opt.state_dict(),
                                   "best": p2_best, "best_state": p2_state, "bad": p2_bad, "history": history})
        if p2_bad >= int(p2["patience"]):
            break
    net.load_state_dict(p2_state)
    for p_ in trunk.parameters():
        p_.requires_grad_(True)
    timings["phase2_s"] = round(time.perf_counter() - t3, 1)
    if world > 1:
        import torch.distributed as dist
        digest = weights_digest(net)
        log(f"[train] rank {rank}/{world} weights sha256 {digest}")
        every = [None] * world
        dist.all_gather_object(every, digest)
        if len(set(every)) != 1:
            raise RuntimeError(f"DDP ranks ended with different weights: {every}")
        timings["ddp"] = {"world_size": world, "backend": dist.get_backend(), "ranks_agree_on_weights": True}
    if resume:
        timings["resumed"] = True
    if n_seen:
        timings["finetune_images_per_s"] = round(n_seen / max(timings["phase2_s"], 1e-9), 2)
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    if rank != 0:
        return run

    from ..models.registry import save_model
    finder_name = cfg["data"]["finder"]
    extra = {"training": {
        "config": {k: v for k, v in cfg.items() if k != "eval"},
        "imagenet_init": origin,
        "data": report,
        "cells": ("Per-cell crops from the project's own detector "
                  f"({cfg['data'].get('detector')}) run on each image (Slide.from_array at the dataset's mpp); "
                  "every crop of a field takes its field's label (label noise: a field's other cells).")
        if finder_name == "detector" else f"Per-cell crops from the {finder_name!r} finder.",
        "split_type": report["split_type"],
        "best_val_macro_f1": float(p2_best),
        "timings": timings,
        "command": f"leuk train {cfg.get('_config_path', 'CONFIG.yaml')}",
    }}
    card = build_card(cfg, classes, spec, extra)
    save_model({k: v for k, v in net.state_dict().items()}, card, run, "model")
    (run / "history.json").write_text(json.dumps(history, indent=1))
    log(f"[train] model written to {run / 'model.yaml'} ({timings})")
    if evaluate:
        from .evaluate import evaluate_model
        evaluate_model(run / "model.yaml", cfg, out_dir=run, stain_swap=cfg["eval"].get("stain_swap", True),
                       n_boot=cfg["eval"].get("n_boot", 1000), prepared=(df, classes, spec, cells), log=log,
                       tta_modes=tuple(cfg["eval"].get("tta") or (None,)))
    return run
