"""Split a timm network into a frozen trunk and a trainable top; cache trunk features.

On CPU the frozen part of the network is run once per crop (and per augmented view);
both phases of transfer learning then train from the cache:

phase 1  head only, from pooled features (the frozen top run once more over the cache);
phase 2  the top ``finetune_stages`` stages + ``conv_head`` + head, from the trunk features.

The split works for timm's EfficientNet / MobileNet family (``conv_stem``, ``bn1``, ``blocks``,
``conv_head``, ``bn2``, ``forward_head``).  ``finetune_stages="all"`` trains the whole network of any timm
architecture (ResNet, DenseNet, ...): the trunk is the identity and the cache holds the preprocessed crops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..classify.geometry import CropSpec
from ..classify.inputs import preprocess

__all__ = [
    "split_network",
    "trunk_features",
    "TrunkRun",
    "augment_crops",
    "degrade_crop",
    "CameraQuality",
    "pooled_features",
    "TopModel",
    "onnx_runner",
]


def _check(net):
    for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "forward_head"):
        if not hasattr(net, a):
            raise ValueError(
                f"{type(net).__name__}: feature caching needs a timm EfficientNet/MobileNet-style "
                f"network (missing {a!r}); choose e.g. tf_efficientnet_lite0 or efficientnet_b0, or set "
                "train.phase2.finetune_stages: all to train the whole network"
            )


def split_network(net, finetune_stages: int = 2):
    """``(trunk, top)`` torch modules sharing ``net``'s parameters; ``top(trunk(x)) == net(x)``.

    ``finetune_stages="all"``: the trunk is the identity and the top the whole network (any timm architecture).
    """
    import torch

    if finetune_stages == "all":
        return torch.nn.Identity(), _whole_model_cls()(net)
    _check(net)
    k = len(net.blocks) - int(finetune_stages)
    if not 0 <= k <= len(net.blocks):
        raise ValueError(f"finetune_stages={finetune_stages} outside 0..{len(net.blocks)}")
    trunk = torch.nn.Sequential(net.conv_stem, net.bn1, *list(net.blocks[:k]))
    return trunk, TopModel(net, k)


def _top_model_cls():
    import torch

    class _Top(torch.nn.Module):
        def __init__(self, net, k):
            super().__init__()
            self.net = net
            self.k = k

        def features(self, f):
            for b in self.net.blocks[self.k :]:
                f = b(f)
            return self.net.bn2(self.net.conv_head(f))

        def pooled(self, f):
            return self.net.forward_head(self.features(f), pre_logits=True)

        def forward(self, f):
            return self.net.forward_head(self.features(f))

    return _Top


def _whole_model_cls():
    import torch

    class _Whole(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def features(self, x):
            return self.net.forward_features(x)

        def pooled(self, x):
            return self.net.forward_head(self.net.forward_features(x), pre_logits=True)

        def forward(self, x):
            return self.net(x)

    return _Whole


def TopModel(net, k):
    """The head of ``net`` above its first ``k`` stages, over cached trunk features (a torch module)."""
    return _top_model_cls()(net, k)


def augment_crops(crops: np.ndarray, rng: np.random.Generator, stain: Optional[dict] = None) -> np.ndarray:
    """Random flips / 90-degree rotations, optionally HED stain jitter, per crop (uint8 in, uint8 out).

    ``stain["quality"]`` (a dict of :class:`CameraQuality` fields) adds zoom, resolution loss, JPEG, blur and
    noise: what separates labs' cameras more than their cells do.
    """
    from .stain import hed_jitter

    out = np.empty_like(crops)
    quality = (stain or {}).get("quality")
    for i, c in enumerate(crops):
        c = np.rot90(c, int(rng.integers(4)))
        if rng.random() < 0.5:
            c = c[:, ::-1]
        if stain and stain.get("hed_sigma"):
            c = hed_jitter(
                np.ascontiguousarray(c), rng, sigma=stain.get("hed_sigma", 0.05), bias=stain.get("hed_bias", 0.05)
            )
        if quality is not None:
            c = degrade_crop(np.ascontiguousarray(c), rng, CameraQuality(**quality))
        out[i] = c
    return out


@dataclass(frozen=True)
class CameraQuality:
    """The recipe of :func:`degrade_crop` (a config's ``stain.quality`` block): ranges and probabilities.

    ``zoom``: the crop is magnified by a factor drawn in this range (the pixel size misjudged by it);
    ``res``: with probability ``p_res`` the crop is resampled to this many pixels and back, so sharp
    high-magnification cells (PBC, CellaVision) also appear as a low-resolution camera shows them, and
    image quality cannot tell one source's class from another's; ``jpeg`` quality with ``p_jpeg``, Gaussian
    ``blur`` sigma with ``p_blur``, ``noise`` sigma with ``p_noise``.
    """

    zoom: tuple = (0.8, 1.25)
    p_res: float = 0.6
    res: tuple = (24, 72)
    p_jpeg: float = 0.4
    jpeg: tuple = (30, 90)
    p_blur: float = 0.3
    blur: tuple = (0.3, 1.5)
    p_noise: float = 0.3
    noise: tuple = (1.0, 6.0)


def degrade_crop(c: np.ndarray, rng: np.random.Generator, quality: CameraQuality = CameraQuality()) -> np.ndarray:
    """One crop through another lab's optics (:class:`CameraQuality`): zoom (pixel-size error), lower
    resolution, JPEG, blur, noise.  uint8 in, uint8 out.
    """
    q = quality
    zoom, p_res, res, p_jpeg, jpeg = q.zoom, q.p_res, q.res, q.p_jpeg, q.jpeg
    p_blur, blur, p_noise, noise = q.p_blur, q.blur, q.p_noise, q.noise
    import io

    from PIL import Image
    from scipy import ndimage as ndi

    S = c.shape[0]
    im = Image.fromarray(c)
    z = float(np.exp(rng.uniform(np.log(zoom[0]), np.log(zoom[1])))) if zoom else 1.0
    if z > 1.0:
        s = max(8, int(round(S / z)))
        o = (S - s) // 2
        im = im.crop((o, o, o + s, o + s)).resize((S, S), Image.BILINEAR)
    elif z < 1.0:
        s = max(8, int(round(S * z)))
        border = np.median(np.concatenate([c[0], c[-1], c[:, 0], c[:, -1]]), axis=0).astype(np.uint8)
        canvas = Image.new("RGB", (S, S), tuple(int(v) for v in border))
        canvas.paste(im.resize((s, s), Image.BILINEAR), ((S - s) // 2, (S - s) // 2))
        im = canvas
    low = rng.random() < p_res
    if low:
        r = int(rng.integers(res[0], res[1] + 1))
        im = im.resize((r, r), Image.BILINEAR, reducing_gap=None)
    if rng.random() < p_jpeg:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(rng.integers(jpeg[0], jpeg[1] + 1)))
        buf.seek(0)
        im = Image.open(buf).convert("RGB")
    if low:
        im = im.resize((S, S), Image.BILINEAR)
    x = np.asarray(im).astype(np.float32)
    if rng.random() < p_blur:
        sg = rng.uniform(*blur)
        x = ndi.gaussian_filter(x, (sg, sg, 0))
    if rng.random() < p_noise:
        x = x + rng.normal(0, rng.uniform(*noise), x.shape)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def onnx_runner(trunk, size: int):
    """ONNX Runtime session of the frozen trunk (CPU: several times faster than eager for depthwise nets)."""
    import tempfile
    from pathlib import Path

    from ..classify.onnx_backend import OnnxRunner, export_onnx, onnx_available

    if not onnx_available() or not any(True for _ in trunk.parameters()):
        return None  # a trunk without weights (finetune_stages: all) only passes the preprocessed crops on
    try:
        d = Path(tempfile.mkdtemp(prefix="leuk-trunk-"))
        path = export_onnx(trunk.cpu().eval(), size, d / "trunk.onnx")
        import torch

        return OnnxRunner(path, threads=torch.get_num_threads())
    except Exception:  # pragma: no cover - fall back to torch
        return None


@dataclass(frozen=True)
class TrunkRun:
    """How :func:`trunk_features` runs the trunk.

    Attributes
    ----------
    batch_size : int
        Crops per forward pass.
    amp : bool
        Autocast to float16 (torch path).
    channels_last : bool
        Inputs in channels-last memory format (torch path).
    runner : "auto", callable or None
        On CPU the trunk runs in ONNX Runtime when available (``"auto"``); ``None`` for torch, or a runner from
        a previous call (:func:`onnx_runner`) to reuse its export.
    """

    batch_size: int = 64
    amp: bool = False
    channels_last: bool = False
    runner: object = "auto"


def trunk_features(
    trunk,
    crops: np.ndarray,
    spec: CropSpec,
    device,
    *,
    run: Optional[TrunkRun] = None,
    augment: Optional[Callable] = None,
    desc: str = "features",
) -> np.ndarray:
    """Run the frozen ``trunk`` over crops (optionally augmented) -> float16 features (N, C, h, w).

    ``run``: batch size, AMP, memory format and the ONNX runner (:class:`TrunkRun`; default ``TrunkRun()``: on
    CPU the trunk runs in ONNX Runtime when available).  ``desc``: the progress bar's label.
    """
    import torch
    from tqdm import tqdm

    r = run or TrunkRun()
    batch_size, amp, channels_last, runner = r.batch_size, r.amp, r.channels_last, r.runner
    trunk.eval()
    if runner == "auto":
        runner = onnx_runner(trunk, spec.size) if device.type == "cpu" else None
    out = None
    with torch.inference_mode():
        for i in tqdm(range(0, len(crops), batch_size), desc=desc, unit="batch", mininterval=10, leave=False):
            c = crops[i : i + batch_size]
            if augment is not None:
                c = augment(c)
            if runner is not None:
                f = runner(preprocess(c, spec)).astype(np.float16)
                if out is None:
                    out = np.empty((len(crops),) + f.shape[1:], np.float16)
                out[i : i + len(f)] = f
                continue
            x = torch.from_numpy(preprocess(c, spec)).to(device)
            if channels_last:
                x = x.to(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                f = trunk(x).float().cpu().numpy().astype(np.float16)
            if out is None:
                out = np.empty((len(crops),) + f.shape[1:], np.float16)
            out[i : i + len(f)] = f
    if out is None:
        out = np.zeros((0, 1, 1, 1), np.float16)
    return out


def pooled_features(top, feats: np.ndarray, device, batch_size: int = 256) -> np.ndarray:
    """Pooled pre-logit features of the frozen top over cached trunk features -> float32 (N, D)."""
    import torch

    top.eval()
    res = []
    with torch.inference_mode():
        for i in range(0, len(feats), batch_size):
            f = torch.from_numpy(feats[i : i + batch_size].astype(np.float32)).to(device)
            res.append(top.pooled(f).float().cpu().numpy())
    return np.concatenate(res) if res else np.zeros((0, 1), np.float32)
