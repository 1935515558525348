"""Two-phase transfer learning of a cell classifier (``leuk train`` / :func:`train_classifier`).

phase 1  head on the frozen ImageNet backbone (from cached pooled features: fast on CPU)
phase 2  the top stages + ``conv_head`` + head unfrozen at a lower learning rate, trained from
         cached trunk features of ``views`` augmented views per crop (flips, rotations, HED jitter)
         (:mod:`leukcore.train.phase2`).  ``finetune_stages: all`` trains the whole network (any timm
         architecture, e.g. from random weights; ``phase1.epochs: 0`` skips the head phase).

Class-balanced loss weights (or sampling), early stopping on validation macro-F1, deterministic
seeds, tqdm progress, a checkpoint after every epoch (``--resume`` continues), CUDA with AMP and
channels_last when present, several GPUs with ``torchrun --nproc_per_node N -m leukcore.cli train``
(DDP over the trainable top; rank 0 writes).  The run directory keeps ``config.yaml``,
``splits.csv``, ``checkpoint.pt``, ``history.json``, ``model.safetensors`` + ``model.yaml`` (the card)
and, after evaluation, ``metrics.json`` and plots.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .config import dump_config
from .ddp import dist_context, weights_digest
from .metrics import macro_f1
from .phase2 import class_weights as _class_weights
from .phase2 import make_batches as _batches
from .phase2 import snapshot

__all__ = ["train_classifier", "seed_everything", "build_card", "weights_digest"]


def _print(*a):
    print(*a, flush=True)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's (CPU and CUDA) random generators."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


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
    """The model card of a classifier trained with ``cfg`` (``extra`` merged in: metrics, thresholds, weights)."""
    card = {
        "name": cfg["name"],
        "task": "classification",
        "version": cfg.get("version", 1),
        "architecture": {"name": cfg["model"]["architecture"], "num_classes": len(classes), "library": "timm"},
        "input": spec.to_card(),
        "classes": list(classes),
        "training": {"config": {k: v for k, v in cfg.items() if k != "eval"}},
    }
    card.update(extra or {})
    return card


def train_classifier(
    cfg: dict, out_dir: str | os.PathLike, *, resume: bool = False, evaluate: bool = True, log=_print
) -> Path:
    """Train a classifier from a resolved config into ``out_dir`` and evaluate it on the held-out split.

    Returns the run directory (its ``model.yaml`` loads with ``Classifier.load(run_dir)``).
    """
    t = _Training(cfg, Path(out_dir), resume, log)
    t.prepare()
    t.build_network()
    t.cache_features()
    t.init_training()
    t.phase1()
    t.phase2()
    t.finish_timings()
    if t.rank != 0:  # only rank 0 writes the model
        return t.run
    t.save()
    if evaluate:
        t.evaluate()
    return t.run


class _Training:
    """One run of :func:`train_classifier`, step by step (the state the steps share)."""

    def __init__(self, cfg: dict, run: Path, resume: bool, log):
        import torch

        from ..device import device_settings, resolve_device

        self.cfg, self.run, self.resume, self.log = cfg, run, resume, log
        self.tr = tr = cfg["train"]
        self.rank, self.world, local = dist_context()
        if tr.get("threads"):
            torch.set_num_threads(int(tr["threads"]))
        self.device = resolve_device(
            tr["device"] if self.world == 1 else f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        )
        self.st = device_settings(self.device)
        seed_everything(int(tr["seed"]))
        if self.rank == 0:  # only rank 0 writes the run directory
            run.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, run / "config.yaml")
        self.t0 = time.perf_counter()

    # ------------------------------------------------------------ data and network
    def prepare(self) -> None:
        from .prepare import prepare

        self.report: dict = {}
        df, classes, spec, cells = prepare(self.cfg, device="cpu", report=self.report)
        self.df, self.classes, self.spec, self.cells = df, classes, spec, cells
        if self.rank == 0:
            df.drop(columns=[c for c in ("cell_type",) if c not in df]).to_csv(self.run / "splits.csv", index=False)
        self.C = len(classes)
        report, t0 = self.report, self.t0
        self.log(
            f"[train] {self.cfg['name']}: {len(df)} images, {report['cells']} cells, classes={classes}, "
            f"split={report['split_type']} {report['cells_per_split']} ({time.perf_counter() - t0:.0f}s)"
        )
        self.timings: dict = {"prepare_s": round(time.perf_counter() - t0, 1)}

    def build_network(self) -> None:
        import torch

        from ..classify.network import build_network
        from ..models.imagenet import load_imagenet_weights
        from .features import split_network

        cfg, device = self.cfg, self.device
        net = build_network(cfg["model"]["architecture"], self.C)
        self.origin = load_imagenet_weights(net, cfg["model"]["architecture"], cfg["model"].get("imagenet", "auto"))
        net.to(device)
        if self.st["channels_last"] and device.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.p2 = self.tr["phase2"]
        stages = self.p2.get("finetune_stages", 2)
        self.trunk, self.top = split_network(net, stages if stages == "all" else int(stages))
        cells = self.cells
        self.tri = np.flatnonzero(cells["split"] == "train")
        self.vai = np.flatnonzero(cells["split"] == "val")
        self.ytr, self.yva = cells["label"][self.tri], cells["label"][self.vai]
        self.V = max(1, int(self.tr.get("views", 1)))

    def cache_features(self) -> None:
        """Trunk features of ``V`` views of the training crops and of the validation crops (``features.npz``)."""
        from .features import TrunkRun, augment_crops, onnx_runner, trunk_features

        tr, device, st, spec, cells, V = self.tr, self.device, self.st, self.spec, self.cells, self.V
        fpath = self.run / "features.npz"
        t1 = time.perf_counter()
        if fpath.exists():
            z = np.load(fpath)
            self.ftr, self.fva = z["train"], z["val"]
        else:
            rng = np.random.default_rng(int(tr["seed"]))
            stain = tr.get("stain_aug") or None
            runner = onnx_runner(self.trunk, spec.size) if device.type == "cpu" else None
            self.trunk.to(device)
            tri = self.tri
            trunk_run = TrunkRun(amp=st["amp"], channels_last=device.type == "cuda", runner=runner)
            views = [trunk_features(self.trunk, cells["crops"][tri], spec, device, run=trunk_run, desc="train view 0")]
            for v in range(1, V):
                views.append(
                    trunk_features(
                        self.trunk,
                        cells["crops"][tri],
                        spec,
                        device,
                        run=trunk_run,
                        desc=f"train view {v}",
                        augment=lambda c: augment_crops(c, rng, stain),
                    )
                )
            self.ftr = np.stack(views)  # (V, N, C, h, w)
            self.fva = trunk_features(
                self.trunk,
                cells["crops"][self.vai],
                spec,
                device,
                desc="val",
                run=TrunkRun(amp=st["amp"], runner=runner),
            )
            if self.rank == 0:
                from ..results import atomic_path

                with atomic_path(fpath) as tmp:
                    with open(tmp, "wb") as f:
                        np.savez(f, train=self.ftr, val=self.fva)
        n_feat = V * len(self.tri) + len(self.vai)
        if self.resume and ck_exists_before(fpath, t1):
            self.timings["features"] = "read from the run's cache (resumed run)"
        else:
            self.timings["features_s"] = round(time.perf_counter() - t1, 1)
            self.timings["frozen_images_per_s"] = round(n_feat / max(self.timings["features_s"], 1e-9), 2)

    def init_training(self) -> None:
        """Checkpoint (a resumed run), history, the class-weighted loss, the zeroed head."""
        import torch

        self.ckpt_path = self.run / "checkpoint.pt"
        self.ck = _load_ckpt(self.ckpt_path) if self.resume else None
        self.history = self.ck["history"] if self.ck else []
        C = self.C
        w = _class_weights(self.ytr, C) if self.tr["balance"] == "loss" else np.ones(C, np.float32)
        self.loss_fn = torch.nn.CrossEntropyLoss(weight=torch.from_numpy(w).to(self.device))
        self.head = self.net.get_classifier()
        with torch.no_grad():  # zero-init the new head: phase 1 starts at loss log(C)
            self.head.weight.zero_()
            self.head.bias.zero_()

    def _checkpoint(self, phase: int, ep: int, opt, best, best_state, bad) -> None:
        if self.rank == 0:
            _save_ckpt(
                self.ckpt_path,
                {
                    "phase": phase,
                    "epoch": ep,
                    "state": self.net.state_dict(),
                    "opt": opt.state_dict(),
                    "best": best,
                    "best_state": best_state,
                    "bad": bad,
                    "history": self.history,
                },
            )

    # ------------------------------------------------------------ phase 1: head
    def phase1(self) -> None:
        """Phase 1 (or the phase-2 state of a resumed run): sets the starting point of phase 2."""
        ck = self.ck
        if ck is not None and ck["phase"] != 1:
            self.net.load_state_dict(ck["state"])
            self.p2_start, self.p2_best, self.p2_state = ck["epoch"] + 1, ck["best"], ck["best_state"]
            self.p2_bad, self.p2_opt = ck["bad"], ck["opt"]
            return
        t2 = time.perf_counter()
        if int(self.tr["phase1"]["epochs"]) <= 0:  # no head phase (e.g. a network trained whole from random weights)
            self.ck = None
            self.p2_start, self.p2_best, self.p2_state, self.p2_bad, self.p2_opt = 0, -1.0, snapshot(self.net), 0, None
            return
        best, best_state = self._phase1_epochs()
        self.net.load_state_dict(best_state)
        self.log(
            f"[train] phase 1 (head, frozen backbone): best val macro-F1 {best:.4f} after {len(self.history)} epochs"
        )
        self.timings["phase1_s"] = round(time.perf_counter() - t2, 1)
        self.ck = None
        self.p2_start, self.p2_best, self.p2_state, self.p2_bad, self.p2_opt = 0, best, best_state, 0, None

    def _phase1_epochs(self):
        import torch

        from .features import pooled_features

        tr, device, top, head, ck, C, V = self.tr, self.device, self.top, self.head, self.ck, self.C, self.V
        p1, ytr, yva = tr["phase1"], self.ytr, self.yva
        Ptr = np.concatenate([pooled_features(top, self.ftr[v], device) for v in range(V)])
        Ytr = np.tile(ytr, V)
        Pva = pooled_features(top, self.fva, device)
        opt = torch.optim.AdamW(head.parameters(), lr=p1["lr"], weight_decay=p1["weight_decay"])
        start, best, best_state, bad = 0, -1.0, None, 0
        if ck is not None:
            self.net.load_state_dict(ck["state"])
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
                loss = self.loss_fn(head(Pt[bi]), Yt[bi])
                opt.zero_grad()
                loss.backward()
                opt.step()
                tot += float(loss.detach()) * len(b)
            head.eval()
            with torch.no_grad():
                f1 = macro_f1(yva, head(Pv).argmax(1).cpu().numpy(), C) if len(yva) else 0.0
            self.history.append({"phase": 1, "epoch": ep, "loss": tot / len(Ytr), "val_macro_f1": f1})
            if f1 > best:
                best, bad = f1, 0
                best_state = snapshot(self.net)
            else:
                bad += 1
            self._checkpoint(1, ep, opt, best, best_state, bad)
            if bad >= p1["patience"]:
                break
        return best, best_state

    # ------------------------------------------------------------ phase 2: top stages
    def phase2(self) -> None:
        """Phase 2 (:mod:`leukcore.train.phase2`): the top stages, or the whole network, from the cached features."""
        from .phase2 import run_phase2

        run_phase2(self)

    # ------------------------------------------------------------ the end
    def finish_timings(self) -> None:
        """DDP: every rank ended with the same weights (checked); throughput and total time."""
        timings, world = self.timings, self.world
        if world > 1:
            import torch.distributed as dist

            digest = weights_digest(self.net)
            self.log(f"[train] rank {self.rank}/{world} weights sha256 {digest}")
            every = [None] * world
            dist.all_gather_object(every, digest)
            if len(set(every)) != 1:
                raise RuntimeError(f"DDP ranks ended with different weights: {every}")
            timings["ddp"] = {"world_size": world, "backend": dist.get_backend(), "ranks_agree_on_weights": True}
        if self.resume:
            timings["resumed"] = True
        if self.n_seen:
            timings["finetune_images_per_s"] = round(self.n_seen / max(timings["phase2_s"], 1e-9), 2)
        timings["total_s"] = round(time.perf_counter() - self.t0, 1)

    def save(self) -> None:
        """``model.safetensors`` + ``model.yaml`` (the card) and ``history.json``."""
        from ..models.registry import save_model

        cfg, report, run = self.cfg, self.report, self.run
        finder_name = cfg["data"]["finder"]
        extra = {
            "training": {
                "config": {k: v for k, v in cfg.items() if k != "eval"},
                "imagenet_init": self.origin,
                "data": report,
                "cells": (
                    "Per-cell crops from the project's own detector "
                    f"({cfg['data'].get('detector')}) run on each image (Slide.from_array at the dataset's mpp); "
                    "every crop of a field takes its field's label (label noise: a field's other cells)."
                )
                if finder_name == "detector"
                else f"Per-cell crops from the {finder_name!r} finder.",
                "split_type": report["split_type"],
                "best_val_macro_f1": float(self.p2_best),
                "timings": self.timings,
                "command": f"leuk train {cfg.get('_config_path', 'CONFIG.yaml')}",
            }
        }
        card = build_card(cfg, self.classes, self.spec, extra)
        save_model({k: v for k, v in self.net.state_dict().items()}, card, run, "model")
        (run / "history.json").write_text(json.dumps(self.history, indent=1))
        self.log(f"[train] model written to {run / 'model.yaml'} ({self.timings})")

    def evaluate(self) -> None:
        from .evaluate import EvalOptions, evaluate_model

        cfg = self.cfg
        options = EvalOptions(
            stain_swap=cfg["eval"].get("stain_swap", True),
            n_boot=cfg["eval"].get("n_boot", 1000),
            tta_modes=tuple(cfg["eval"].get("tta") or (None,)),
        )
        evaluate_model(
            self.run / "model.yaml",
            cfg,
            self.run,
            options,
            prepared=(self.df, self.classes, self.spec, self.cells),
            log=self.log,
        )
