"""Training data and training loop of the ScaleNet pixel-size reader (:mod:`leukcore.mpp_net`).

Sources (each one pixel size, the folder value from red cells, :data:`SOURCE_MPP`):

* ``four-class`` fields (CC BY 4.0), 0.535 um/px; the burned-in scale bar (lower right) painted
  over with the local background;
* ``bccd`` fields (MIT), 0.092 um/px; ``ImageSets/Main/test.txt`` is never trained on;
* ``pbc`` single-cell images (CC BY 4.0), 0.108 um/px.

Zheng 2018 (GPL) is evaluation only and never read here.  Splits are image-level: a content-hash
fifth of four-class and PBC is ``test`` (and the bundled sample fields always are), BCCD uses its
own ``test.txt``.  Duplicates (content hash) are dropped.

Every training window is drawn at a random pixel size, log-uniform over the trained range
(0.15-0.6 um/px, 85 %) or a wider 0.1-1.2 (15 %, where the source's field of view allows), so
each source spans a continuous range and the network must read cell sizes; then stain /
glass / illumination (:func:`leukcore.detect.augment.romanowsky_jitter`), blur, noise and JPEG
(:func:`leukcore.detect.augment.degrade`), flips and 90-degree turns.

Sharpness is decorrelated from the pixel size (:func:`_optics`: blur or sharpening at every pixel size).
Windows are drawn once into banks (``--build-bank N --bank FILE``, one per source) and training reads
them (``--bank A,B,...``; flips and turns added); ``--init-from CARD`` continues a model.  The shipped
``mpp-scalenet`` is three 11.5-minute runs (recipe in its card)::

    python -m leukcore.mpp_train -o X --sources four-class --build-bank 6000 --bank bank2_four-class.npz --seed 3
    python -m leukcore.mpp_train -o RUN --minutes 11.5 --bank bank2_four-class.npz,bank2_bccd.npz,bank2_pbc.npz --init-from RUN1/mpp-scalenet.yaml --seed 2
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .mpp_net import TRAIN_RANGE, WINDOW, WORK_MPP, ScaleNet, window_input
from .mpp_sources import (
    SOURCE_MPP,
    SOURCES,
    WIDE_RANGE,
    load_source,
    read_source_image,
    source_files,
)

__all__ = [
    "SOURCE_MPP",
    "SOURCES",
    "load_source",
    "read_source_image",
    "source_files",
    "sample_window",
    "augment_window",
    "train_scalenet",
    "build_bank",
    "ScaleNetTrainOptions",
    "DEFAULT_LIMITS",
]


def sample_window(img: np.ndarray, base_mpp: float, tgt_mpp: float, rng):
    """``(window, mpp)``: a random 64 px window of ``img`` resampled from ``base_mpp`` to about
    ``tgt_mpp`` (random filter); ``mpp`` is the window's exact pixel size (integer crop side).
    """
    from PIL import Image

    h, w = img.shape[:2]
    side = WINDOW * tgt_mpp / base_mpp  # window side in base px
    s = int(math.ceil(side))
    s = min(s, h, w)
    y = int(rng.integers(0, h - s + 1))
    x = int(rng.integers(0, w - s + 1))
    crop = Image.fromarray(np.ascontiguousarray(img[y : y + s, x : x + s]))
    filt = [Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS, Image.Resampling.BOX][
        int(rng.integers(4))
    ]
    if s / WINDOW < 1 and filt == Image.Resampling.BOX:
        filt = Image.Resampling.BILINEAR
    out = np.asarray(crop.resize((WINDOW, WINDOW), filt))
    return out, s * base_mpp / WINDOW


def _fast_colour(win: np.ndarray, rng) -> np.ndarray:
    """Cheap global re-colouring in optical density: a random 3x3 stain mix, density, glass tint, gamma."""
    od = -np.log((win.astype(np.float32) + 1.0) / 256.0)
    m = np.diag(rng.uniform(0.6, 1.5, 3)) + rng.uniform(-0.25, 0.25, (3, 3)) * (1 - np.eye(3))
    od = np.clip(od @ m.astype(np.float32), 0, 6) * rng.uniform(0.7, 1.4)
    x = np.exp(-od) * rng.uniform(0.8, 1.05, 3).astype(np.float32)
    x = np.clip(x, 0, 1) ** rng.uniform(0.75, 1.35)
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


def _optics(win: np.ndarray, rng) -> np.ndarray:
    """Sharpness that says nothing about the pixel size: blur (60 %, sigma 0.5-2.5 px log-uniform) or
    sharpening (20 %), then noise and JPEG.  Without it the network reads the optics (a fine-pixel
    source is smooth at the pixel level, an upsampled coarse one blurred) instead of the cells.
    """
    from scipy import ndimage as ndi

    from .detect.augment import jpeg

    x = win.astype(np.float32)
    u = rng.random()
    if u < 0.6:
        s = float(np.exp(rng.uniform(np.log(0.5), np.log(2.5))))
        x = ndi.gaussian_filter(x, (s, s, 0))
    elif u < 0.8:
        b = ndi.gaussian_filter(x, (1.0, 1.0, 0))
        x = x + rng.uniform(0.5, 1.5) * (x - b)
    if rng.random() < 0.35:
        x = x + rng.normal(0, rng.uniform(1, 8), x.shape)
    out = np.clip(x + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.35:
        out = jpeg(np.ascontiguousarray(out), int(rng.integers(25, 90)))
    return out


def augment_window(win: np.ndarray, rng, p_region: float = 0.35, blur_decorrelate: bool = True) -> np.ndarray:
    """Stain / glass / light: region-wise Romanowsky re-colouring (``p_region``) or a cheap global
    optical-density re-mix; then blur or sharpening (:func:`_optics`), noise, JPEG, flips and 90-degree
    turns.  ``blur_decorrelate=False``: the detector's :func:`leukcore.detect.augment.degrade` instead
    (the stage-1 recipe).
    """
    from .detect.augment import degrade, romanowsky_jitter
    from .detect.colour import purple_measure

    u = rng.random()
    if u < p_region:
        lab = (purple_measure(win) > 40).astype(np.int32)
        win = romanowsky_jitter(win, lab, rng)
    elif u < 0.92:
        win = _fast_colour(win, rng)
    if rng.random() < 0.1:
        g = win.mean(axis=2, keepdims=True)
        win = np.repeat(g, 3, axis=2).astype(np.uint8)
    if blur_decorrelate:
        win = _optics(win, rng)
    else:
        win = degrade(win, rng)
    if rng.random() < 0.5:
        win = win[:, ::-1]
    win = np.rot90(win, int(rng.integers(4)))
    return np.ascontiguousarray(win)


def _draw_target(img_shape, base_mpp: float, native_mpp: float, rng) -> float:
    fov = min(img_shape[:2]) * base_mpp  # um
    hi_fov = fov / WINDOW * 0.98
    if rng.random() < 0.85:
        lo, hi = max(TRAIN_RANGE[0], native_mpp / 2.7), min(TRAIN_RANGE[1], hi_fov)
    else:
        lo, hi = max(WIDE_RANGE[0], native_mpp / 2.7, base_mpp), min(WIDE_RANGE[1], hi_fov)
    if hi <= lo:
        hi = lo * 1.01
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def make_batch(pools: dict, rng, n: int = 64):
    """``(x, y)``: n windows split evenly over the sources; y = log(mpp / WORK_MPP)."""
    names = list(pools)
    wins, ys = [], []
    for i in range(n):
        src = names[i % len(names)]
        imgs, base = pools[src]
        img = imgs[int(rng.integers(len(imgs)))]
        tgt = _draw_target(img.shape, base, SOURCE_MPP[src], rng)
        win, true_mpp = sample_window(img, base, tgt, rng)
        wins.append(augment_window(win, rng))
        ys.append(math.log(true_mpp / WORK_MPP))
    return window_input(np.stack(wins)), np.asarray(ys, np.float32)


#: images read per source when drawing windows (``None``: all)
DEFAULT_LIMITS = {"four-class": 1500, "bccd": None, "pbc": 800}


@dataclass(frozen=True)
class ScaleNetTrainOptions:
    """What a ScaleNet training run (or a window bank) is made from (``python -m leukcore.mpp_train`` builds one).

    Attributes
    ----------
    sources : sequence of str
        Training sources (:data:`SOURCES`).
    minutes : float
        Wall-clock training budget.
    seed : int
        Seed of the draws and the initialisation.
    batch : int
        Windows per batch.
    lr : float
        Peak learning rate.
    limits : dict, optional
        Images read per source (default :data:`DEFAULT_LIMITS`).
    cache_dir : path, optional
        Folder for decoded-image caches.
    threads : int
        torch CPU threads.
    name : str
        Model name.
    channels : tuple of int
        ScaleNet channels per level (a continued model keeps its own).
    init_from : path, optional
        A ScaleNet card to continue from.
    n_per_source : int
        Windows per source a bank holds (:func:`build_bank`).
    blur_decorrelate : bool
        Bank windows get the optics decorrelation (``False``: the detector's stage-1 blur / noise / JPEG).
    """

    sources: Sequence[str] = SOURCES
    minutes: float = 10.0
    seed: int = 0
    batch: int = 64
    lr: float = 2e-3
    limits: Optional[dict] = None
    cache_dir: Optional[str] = None
    threads: int = 1
    name: str = "mpp-scalenet"
    channels: tuple = (12, 24, 48, 96)
    init_from: Optional[str] = None
    n_per_source: int = 20000
    blur_decorrelate: bool = True


def build_bank(data, out, options: Optional[ScaleNetTrainOptions] = None, *, log=print) -> Path:
    """Draw ``options.n_per_source`` augmented training windows per source once (``.npz``: windows, y, source).

    The windows are drawn as :func:`make_batch` draws them (random pixel size, stain, blur, JPEG);
    training then adds flips / turns.  One bank serves the shipped and the leave-one-source-out runs.
    """
    o = options or ScaleNetTrainOptions()
    sources, n_per_source, seed, cache_dir = o.sources, o.n_per_source, o.seed, o.cache_dir
    rng = np.random.default_rng(seed)
    limits = o.limits or DEFAULT_LIMITS
    wins, ys, srcs = [], [], []
    for si, src in enumerate(sources):
        imgs, base = load_source(data, src, "train", limits.get(src), cache_dir=cache_dir, seed=seed)
        t = time.time()
        for _ in range(n_per_source):
            img = imgs[int(rng.integers(len(imgs)))]
            tgt = _draw_target(img.shape, base, SOURCE_MPP[src], rng)
            win, true_mpp = sample_window(img, base, tgt, rng)
            wins.append(augment_window(win, rng, blur_decorrelate=o.blur_decorrelate))
            ys.append(math.log(true_mpp / WORK_MPP))
            srcs.append(si)
        log(f"bank: {src} {n_per_source} windows in {time.time() - t:.0f} s")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        windows=np.stack(wins),
        y=np.asarray(ys, np.float32),
        source=np.asarray(srcs, np.int8),
        sources=np.asarray(list(sources)),
    )
    return out


def train_scalenet(data, out_dir, options: Optional[ScaleNetTrainOptions] = None, *, bank=None, log=print) -> Path:
    """Train on the ``train`` split of ``options.sources`` for ``options.minutes`` (wall clock); the card path.

    ``bank``: window bank(s) from :func:`build_bank` (a path or a list; windows of ``sources`` only;
    flips and turns added here) instead of drawing windows on the fly.  ``options.init_from``: a ScaleNet card
    to continue from (its architecture is kept).
    """
    import torch

    from .models.registry import save_model

    o = options or ScaleNetTrainOptions()
    sources, seed, batch, lr, minutes, name = o.sources, o.seed, o.batch, o.lr, o.minutes, o.name
    torch.set_num_threads(int(o.threads))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    limits = o.limits or DEFAULT_LIMITS
    t0 = time.time()
    if bank is not None:
        bank_w, bank_y, idx = _bank_windows(bank, sources)
        counts = {s: int(len(i)) for s, i in idx.items()}
        log(f"bank {bank}: {counts} windows")
    else:
        pools = {s: load_source(data, s, "train", limits.get(s), cache_dir=o.cache_dir, seed=seed) for s in sources}
        counts = {s: len(p[0]) for s, p in pools.items()}
        log(f"loaded {counts} in {time.time() - t0:.0f} s")
    net, channels = _initial_net(o.init_from, o.channels)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    if bank is not None:

        def draw():
            return _bank_batch(bank_w, bank_y, idx, sources, rng, batch)
    else:

        def draw():
            return make_batch(pools, rng, batch)

    step, hist = _train_for(net, opt, draw, lr, minutes * 60.0, log)
    net.eval()
    card = _scalenet_card(
        name,
        channels,
        sources,
        counts,
        dict(
            steps=step,
            batch=batch,
            minutes=minutes,
            seed=seed,
            lr=lr,
            bank=bank is not None,
            init_from=o.init_from is not None,
        ),
    )
    cpath = save_model(net.state_dict(), card, out_dir, name)
    Path(out_dir, "train_log.json").write_text(json.dumps({"steps": step, "abs_err": hist[::10]}))
    log(f"saved {cpath} after {step} steps")
    return cpath


def _bank_batch(bank_w, bank_y, idx: dict, sources, rng, batch: int) -> tuple:
    """A batch of bank windows (equal share per source), flipped and turned at random: ``(x, y)``."""
    sel = np.concatenate([rng.choice(idx[s], batch // len(sources)) for s in sources])
    w = bank_w[sel]
    if rng.random() < 0.5:
        w = w[:, :, ::-1]
    w = np.rot90(w, int(rng.integers(4)), axes=(1, 2))
    return window_input(np.ascontiguousarray(w)), bank_y[sel]


def _train_for(net, opt, draw, lr: float, budget: float, log) -> tuple[int, list]:
    """Steps on ``draw()`` batches for ``budget`` seconds (warm-up, cosine decay, beta-NLL); ``(steps, |err|s)``."""
    import torch

    t1 = time.time()
    step, hist = 0, []
    net.train()
    while True:
        frac = (time.time() - t1) / budget
        if frac >= 1.0:
            break
        cur = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        for g in opt.param_groups:
            g["lr"] = cur
        x, y = draw()
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        mu, lv = net(x)
        # beta-NLL (Seitzer et al. 2022, beta 0.5): the Gaussian NLL weighted by sigma^(2 beta), detached
        nll = 0.5 * (lv + (y - mu) ** 2 * torch.exp(-lv))
        loss = (nll * torch.exp(lv).detach() ** 0.5).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(float((mu - y).abs().mean().detach()))
        step += 1
        if step % 100 == 0:
            log(f"step {step} ({time.time() - t1:.0f} s): mean |log err| {np.mean(hist[-100:]):.3f} lr {cur:.2e}")
    return step, hist


def _bank_windows(bank, sources) -> tuple:
    """``(windows, targets, {source: indices})`` of the window bank(s), ``sources`` only."""
    ws, ys_, ss = [], [], []
    for b in [bank] if isinstance(bank, (str, Path)) else bank:
        z = np.load(b)
        names = [str(x) for x in z["sources"]]
        keep = np.isin(np.asarray(names)[z["source"]], list(sources))
        ws.append(z["windows"][keep])
        ys_.append(z["y"][keep])
        ss.extend(np.asarray(names)[z["source"][keep]])
    bank_w, bank_y, ss = np.concatenate(ws), np.concatenate(ys_), np.asarray(ss)
    return bank_w, bank_y, {s: np.flatnonzero(ss == s) for s in sources}


def _initial_net(init_from, channels) -> tuple:
    """``(network, channels)``: a new ScaleNet, or a copy of the ``init_from`` card's (its architecture kept)."""
    if init_from is None:
        return ScaleNet(tuple(channels)), channels
    from .mpp_net import load_scalenet

    base_net, base_card = load_scalenet(str(init_from))
    channels = tuple(base_card["architecture"]["channels"])
    net = ScaleNet(channels)
    net.load_state_dict(base_net.state_dict())
    for p_ in net.parameters():
        p_.requires_grad_(True)
    return net, channels


def _scalenet_card(name: str, channels, sources, counts: dict, run: dict) -> dict:
    """The model card of a trained ScaleNet (``run``: steps, batch, minutes, seed, lr, bank, init_from)."""
    bank, init_from = run["bank"], run["init_from"]
    minutes, seed, lr = run["minutes"], run["seed"], run["lr"]
    return {
        "name": name,
        "task": "pixel-size",
        "version": 1,
        "architecture": {
            "type": "scalenet",
            "channels": list(channels),
            "window": WINDOW,
            "output": "mu = log(mpp / work_mpp), log variance",
        },
        "input": {
            "work_mpp": WORK_MPP,
            "window": WINDOW,
            "normalization": "per-window channel mean removed, divided by the window's std + 0.02",
            "train_range_mpp": list(TRAIN_RANGE),
            "wide_range_mpp": list(WIDE_RANGE),
        },
        "training": {
            "sources": {s: {"mpp": SOURCE_MPP[s], ("windows" if bank else "images"): counts[s]} for s in sources},
            "split": "image-level (four-class, PBC: content-hash fifth held out as test, bundled "
            "sample fields always test; BCCD: ImageSets/Main/test.txt held out)",
            "steps": run["steps"],
            "batch": run["batch"],
            "minutes": minutes,
            "seed": seed,
            "lr": lr,
            "command": f"python -m leukcore.mpp_train --data DATA -o RUN --minutes {minutes:g} "
            f"--sources {','.join(sources)} --seed {seed} --lr {lr:g}"
            + (" --bank BANKS" if bank else "")
            + (" --init-from CARD" if init_from else ""),
        },
    }


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description="train the ScaleNet pixel-size reader")
    ap.add_argument("--data", default=None)
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--sources", default=",".join(SOURCES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="mpp-scalenet")
    ap.add_argument("--cache", default=None, help="folder for decoded-image caches")
    ap.add_argument(
        "--bank", default=None, help="window bank .npz (built with --build-bank N); comma-separated list to train"
    )
    ap.add_argument("--init-from", default=None, help="ScaleNet card to continue training from")
    ap.add_argument(
        "--stage1-optics",
        action="store_true",
        help="bank: the detector's blur/noise/JPEG (stage-1 recipe) instead of the optics decorrelation",
    )
    ap.add_argument("--channels", default="12,24,48,96")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--build-bank", type=int, default=0, metavar="N", help="write N windows per source to --bank")
    a = ap.parse_args(argv)
    from .paths import data_dir

    data = Path(a.data) if a.data else data_dir()
    srcs = [s for s in a.sources.split(",") if s]
    options = ScaleNetTrainOptions(
        sources=srcs,
        minutes=a.minutes,
        seed=a.seed,
        lr=a.lr,
        cache_dir=a.cache,
        name=a.name,
        channels=tuple(int(c) for c in a.channels.split(",")),
        init_from=a.init_from,
        n_per_source=a.build_bank,
        blur_decorrelate=not a.stage1_optics,
    )
    if a.build_bank:
        build_bank(data, a.bank, options, log=lambda s: print(s, flush=True))
        return
    train_scalenet(data, a.out, options, bank=a.bank.split(",") if a.bank else None, log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    main()
