"""Phase 2 of classifier training: the trainable top (or the whole network) from the cached trunk features.

``train.phase2`` keys read here: ``epochs``, ``lr``, ``batch_size``, ``weight_decay``, ``patience``,
``schedule`` (``constant`` | ``cosine``) and ``minutes`` (optional): a wall-clock budget.  With ``minutes`` the
run stops at the first batch past the budget (that epoch is validated and the best epoch kept) and the cosine
schedule decays over the budget's time instead of over the planned epochs, per batch, so that architectures
compared at one budget each get a whole schedule.  BatchNorm statistics stay frozen when only the top stages
train (small batches, pretrained statistics) and are learned when the whole network trains
(``finetune_stages: all``, e.g. from random weights).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .ddp import broadcast, shard
from .metrics import macro_f1

__all__ = ["Budget", "run_phase2", "class_weights", "make_batches", "snapshot"]


def snapshot(net) -> dict:
    """A detached CPU copy of ``net``'s state dict (the best epoch kept while training goes on)."""
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def class_weights(y: np.ndarray, C: int) -> np.ndarray:
    """Class-balanced loss weights ``n / (C * count)`` (0 for an absent class), float32."""
    cnt = np.bincount(y, minlength=C).astype(np.float64)
    w = np.where(cnt > 0, len(y) / (C * np.maximum(cnt, 1)), 0.0)
    return w.astype(np.float32)


def make_batches(n: int, bs: int, rng: np.random.Generator, y=None, balance: str = "loss", C: int = 1) -> list:
    """One epoch's index batches: a permutation, or class-balanced sampling with replacement (``sampler``)."""
    if balance == "sampler" and y is not None:
        p = class_weights(y, C)[y].astype(np.float64)
        idx = rng.choice(n, size=n, replace=True, p=p / p.sum())
    else:
        idx = rng.permutation(n)
    return [idx[i : i + bs] for i in range(0, n, bs)]


@dataclass
class Budget:
    """The learning-rate schedule and the optional wall-clock budget of phase 2.

    Attributes
    ----------
    lr : float
        Starting learning rate.
    epochs : int
        Planned epochs (the cosine period without ``minutes``).
    schedule : str
        ``constant`` or ``cosine``.
    minutes : float or None
        Wall-clock budget of phase 2; None: no budget.
    spent_s : float
        Seconds already spent (a resumed run continues its budget).
    """

    lr: float
    epochs: int
    schedule: str = "constant"
    minutes: Optional[float] = None
    spent_s: float = 0.0

    def __post_init__(self):
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"config: train.phase2.schedule must be constant | cosine, got {self.schedule!r}")
        if self.minutes is not None and not float(self.minutes) > 0:
            raise ValueError(f"config: train.phase2.minutes must be > 0, got {self.minutes!r}")
        self._t0 = time.perf_counter() - float(self.spent_s)

    def elapsed_s(self) -> float:
        """Seconds of phase 2 so far (with the resumed run's earlier share)."""
        return time.perf_counter() - self._t0

    def over(self) -> bool:
        """True once the wall-clock budget is spent (never without one)."""
        return self.minutes is not None and self.elapsed_s() >= 60.0 * float(self.minutes)

    def lr_at(self, epoch: int) -> float:
        """The learning rate now: constant, cosine over the planned epochs, or cosine over the budget's time."""
        if self.schedule == "constant":
            return float(self.lr)
        if self.minutes is not None:
            frac = min(1.0, self.elapsed_s() / (60.0 * float(self.minutes)))
        else:
            frac = epoch / max(1, int(self.epochs))
        # math.cos keeps it a plain float: checkpoints then load with weights_only
        return float(self.lr) * 0.5 * (1 + math.cos(math.pi * frac))


def _set_lr(opt, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def run_phase2(t) -> None:
    """Phase 2 of the training ``t`` (a ``loop._Training`` after phase 1): best epoch's weights into ``t.net``."""
    import torch

    p2 = t.p2
    t3 = time.perf_counter()
    for p_ in t.trunk.parameters():  # the trunk is frozen (its features are cached); DDP must not wait for it
        p_.requires_grad_(False)
    params = [p for p in t.top.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=p2["lr"], weight_decay=p2["weight_decay"])
    if t.p2_opt is not None:
        opt.load_state_dict(t.p2_opt)
    model = t.top
    if t.world > 1:  # DDP broadcasts rank 0's weights, then averages gradients every step
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(t.top, device_ids=[t.device.index] if t.device.type == "cuda" else None)
    scaler = torch.amp.GradScaler(enabled=bool(t.st["amp"]))
    rng = np.random.default_rng(int(t.tr["seed"]) + 2)
    t.n_seen = 0
    done = [h for h in t.history if h.get("phase") == 2]
    budget = Budget(
        lr=float(p2["lr"]),
        epochs=int(p2["epochs"]),
        schedule=p2.get("schedule", "constant"),
        minutes=p2.get("minutes"),
        spent_s=float(done[-1].get("elapsed_s", 0.0)) if done else 0.0,
    )
    for ep in range(t.p2_start, int(p2["epochs"])):
        tot = _epoch(t, ep, model, opt, scaler, rng, budget)
        if _validate(t, ep, tot, opt, budget) or budget.over():
            break
    t.net.load_state_dict(t.p2_state)
    for p_ in t.trunk.parameters():
        p_.requires_grad_(True)
    t.timings["phase2_s"] = round(time.perf_counter() - t3, 1)
    if budget.minutes is not None:
        t.timings["phase2_budget_min"] = float(budget.minutes)


def _train_mode(top, whole: bool) -> None:
    import torch

    top.train()
    if whole:
        return
    for m in top.modules():  # keep BatchNorm statistics frozen (small batches, small data)
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def _epoch(t, ep: int, model, opt, scaler, rng, budget: Budget) -> float:
    """One epoch of phase 2 (stops early when the budget is spent); the summed loss."""
    import torch
    from tqdm import tqdm

    device, tri, ytr = t.device, t.tri, t.ytr
    _train_mode(t.top, str(t.p2.get("finetune_stages")) == "all")
    view = rng.integers(0, t.V, size=len(tri))
    batches = shard(make_batches(len(tri), t.p2["batch_size"], rng, ytr, t.tr["balance"], t.C), t.rank, t.world)
    tot = 0.0
    _set_lr(opt, budget.lr_at(ep))
    for b in tqdm(batches, desc=f"phase 2 epoch {ep}", unit="batch", mininterval=10, leave=False):
        if budget.minutes is not None:
            _set_lr(opt, budget.lr_at(ep))
        x = torch.from_numpy(t.ftr[view[b], b].astype(np.float32)).to(device, non_blocking=True)
        y = torch.from_numpy(ytr[b]).long().to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=bool(t.st["amp"])):
            loss = t.loss_fn(model(x), y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        tot += float(loss.detach()) * len(b)
        t.n_seen += len(b)
        if budget.minutes is not None and broadcast(budget.over(), t.world):  # every rank stops at the same step
            break
    return tot


def _val_logits(top, fva: np.ndarray, device, C: int) -> np.ndarray:
    import torch

    top.eval()
    if not len(fva):
        return np.zeros((0, C))
    with torch.inference_mode():
        return np.concatenate(
            [
                top(torch.from_numpy(fva[i : i + 256].astype(np.float32)).to(device)).float().cpu().numpy()
                for i in range(0, len(fva), 256)
            ]
        )


def _validate(t, ep: int, tot: float, opt, budget: Budget) -> bool:
    """Validation macro-F1 of the epoch, the best state kept, the checkpoint; True to stop early."""
    pv = _val_logits(t.top, t.fva, t.device, t.C)
    f1 = broadcast(macro_f1(t.yva, pv.argmax(1), t.C) if len(t.yva) else 0.0, t.world)  # one decision for all
    t.history.append(
        {
            "phase": 2,
            "epoch": ep,
            "loss": tot / max(1, len(t.tri)),
            "val_macro_f1": f1,
            "lr": float(opt.param_groups[0]["lr"]),
            "elapsed_s": round(budget.elapsed_s(), 1),
        }
    )
    t.log(f"[train] phase 2 epoch {ep}: loss {tot / max(1, len(t.tri)):.4f} val macro-F1 {f1:.4f}")
    if f1 > t.p2_best:
        t.p2_best, t.p2_bad = f1, 0
        t.p2_state = snapshot(t.net)
    else:
        t.p2_bad += 1
    t._checkpoint(2, ep, opt, t.p2_best, t.p2_state, t.p2_bad)
    return t.p2_bad >= int(t.p2["patience"])
