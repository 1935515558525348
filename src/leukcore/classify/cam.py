"""Grad-CAM heat maps for any timm CNN classifier (Selvaraju et al., 2017).

The heat map is taken on the last feature map (``forward_features``), weighted by
the spatially averaged gradient of the target logit, rectified, upsampled to the
crop size and scaled to [0, 1] per crop.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from .inputs import preprocess

__all__ = ["gradcam", "overlay"]


def gradcam(
    classifier, crops: np.ndarray, target: Optional[Union[int, str, Sequence]] = None, batch_size: int = 32
) -> np.ndarray:
    """Grad-CAM heat maps ``(N, H, W)`` float32 in [0, 1] for ``uint8 (N, H, W, 3)`` crops.

    Parameters
    ----------
    classifier : Classifier
        Any classifier whose network has timm's ``forward_features`` / ``forward_head``.
    crops : ndarray
        Crops of the classifier's input size (others are resampled).
    target : int, str, sequence or None
        Class index or name for all crops, one per crop, or ``None`` for each crop's predicted class.
    """
    import torch
    import torch.nn.functional as F

    net = classifier.network
    if not (hasattr(net, "forward_features") and hasattr(net, "forward_head")):
        raise TypeError(f"{type(net).__name__} has no forward_features/forward_head; Grad-CAM needs a timm CNN")
    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    S = classifier.spec.size
    if crops.shape[1:3] != (S, S):
        from .crops import resize_rgb

        crops = np.stack([resize_rgb(c, S) for c in crops])
    n = len(crops)
    if target is None:
        tgt = None
    elif isinstance(target, (str, int, np.integer)):
        tgt = np.full(n, _class_index(classifier, target))
    else:
        tgt = np.array([_class_index(classifier, t) for t in target])
        if len(tgt) != n:
            raise ValueError(f"target has {len(tgt)} entries for {n} crops")
    out = np.zeros((n, S, S), np.float32)
    dev = classifier.device
    was_training = net.training
    net.eval()
    try:
        for i in range(0, n, batch_size):
            x = torch.from_numpy(preprocess(crops[i : i + batch_size], classifier.spec)).to(dev)
            with torch.enable_grad():
                feats = net.forward_features(x)
                feats.retain_grad()
                logits = net.forward_head(feats)
                idx = logits.argmax(1) if tgt is None else torch.as_tensor(tgt[i : i + batch_size], device=dev)
                logits.gather(1, idx.view(-1, 1)).sum().backward()
            w = feats.grad.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((w * feats).sum(1, keepdim=True))
            cam = F.interpolate(cam, size=(S, S), mode="bilinear", align_corners=False)[:, 0]
            cam = cam.detach().float().cpu().numpy()
            mx = cam.reshape(len(cam), -1).max(1).reshape(-1, 1, 1)
            out[i : i + batch_size] = np.where(mx > 0, cam / np.maximum(mx, 1e-12), 0.0)
            net.zero_grad(set_to_none=True)
    finally:
        net.train(was_training)
    return out


def _class_index(classifier, t) -> int:
    if isinstance(t, str):
        if t not in classifier.classes:
            raise ValueError(f"unknown class {t!r}; classes are {classifier.classes}")
        return classifier.classes.index(t)
    t = int(t)
    if not 0 <= t < len(classifier.classes):
        raise ValueError(f"class index {t} out of range for {len(classifier.classes)} classes")
    return t


def overlay(crop: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a heat map (jet colour map) onto an RGB uint8 crop."""
    from matplotlib import colormaps

    rgb = (colormaps["jet"](np.clip(heat, 0, 1))[..., :3] * 255).astype(np.float32)
    return (crop.astype(np.float32) * (1 - alpha) + rgb * alpha).clip(0, 255).astype(np.uint8)
