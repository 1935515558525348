"""The :class:`Detector`: a loaded StarDist-method network with its model card."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .postprocess import instances_from_maps

__all__ = ["Detector", "DEFAULT_DETECTOR"]

DEFAULT_DETECTOR = "wbc-stardist"


def disc_area_px(diameter_um: float, mpp: float) -> float:
    """Area in pixels (of size ``mpp`` um) of a disc ``diameter_um`` across: the smallest polygon kept."""
    return float(np.pi * (diameter_um / 2 / mpp) ** 2)


#: test-time augmentations in the order :attr:`Detector.tta` takes them: (transpose, flip rows, flip columns)
_DIHEDRAL = ((0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1))
TTA_CHOICES = (1, 2, 4, 8)


def _transform(x, t: int, v: int, h: int):
    """Transpose (if ``t``), then flip rows (``v``) and columns (``h``) of NCHW ``x``."""
    if t:
        x = x.transpose(2, 3)
    dims = [d for d, on in ((2, v), (3, h)) if on]
    return x.flip(dims) if dims else x


def _untransform(y, t: int, v: int, h: int):
    """Inverse of :func:`_transform` on the spatial axes of NCHW ``y``."""
    dims = [d for d, on in ((2, v), (3, h)) if on]
    if dims:
        y = y.flip(dims)
    return y.transpose(2, 3) if t else y


def _untransform_rays(d, t: int, v: int, h: int):
    """Inverse of :func:`_transform` on NCHW ray distances: the spatial axes, then the ray order.

    stardist's ray k points at angle 2 pi k / n (dy = sin, dx = cos); undoing a column flip maps
    ray k to n/2 - k, a row flip to -k, a transpose to n/4 - k (checked against ``star_dist``
    in ``tests/test_detect_tta.py``)."""
    import torch

    n = d.shape[1]
    k = torch.arange(n, device=d.device)
    d = _untransform(d, t, v, h)
    for on, perm in ((h, (n // 2 - k) % n), (v, (-k) % n), (t, (n // 4 - k) % n)):
        if on:
            d = d[:, perm]
    return d


@dataclass
class Detector:
    """A WBC detector ready for tiled prediction.

    Attributes
    ----------
    net : torch.nn.Module
        :class:`~leukcore.detect.net.StarDistUNet` in eval mode on ``device``.
    card : dict
        The model card (architecture, input mpp, thresholds, metrics...).
    device : torch.device
    """

    net: Any
    card: dict
    device: Any
    settings: dict = field(default_factory=dict)
    #: test-time augmentation: average the maps over this many of the 8 flips / transposes of
    #: each tile (1 = none, 2 = + left-right flip, 4 = all flips, 8 = flips and transposes)
    tta: int = 1

    # ------------------------------------------------------------ loading
    @classmethod
    def load(cls, name_or_card: "str | dict" = DEFAULT_DETECTOR, device: str = "auto") -> "Detector":
        """Load a shipped detector by name, a card ``.yaml`` path, or a run directory.

        Raises
        ------
        leukcore.models.ModelError
            Unknown model, missing or corrupt weights, or a card that is not a detector.
        """
        import torch

        from ..device import device_settings, resolve_device
        from ..models.registry import ModelError, load_card, load_state_dict
        from .net import build_network

        card = dict(name_or_card) if isinstance(name_or_card, dict) else load_card(name_or_card)
        if card.get("task") != "detection":
            raise ModelError(f"{card.get('_card_path', card.get('name'))}: model card task is "
                             f"{card.get('task')!r}, not 'detection'")
        dev = resolve_device(device)
        net = build_network(card["architecture"])
        sd = load_state_dict(card)
        try:
            net.load_state_dict({k: v for k, v in sd.items()})
        except RuntimeError as e:
            raise ModelError(f"{card.get('_card_path')}: weights do not fit the card's architecture: {e}") from None
        settings = device_settings(dev)
        net.eval().to(dev)
        if settings.get("channels_last"):   # ~1.5x faster convolutions on CPU too
            net = net.to(memory_format=torch.channels_last)
        return cls(net=net, card=card, device=dev, settings=settings)

    @classmethod
    def from_network(cls, net, card: dict, device: str = "cpu") -> "Detector":
        """Wrap an in-memory network (training / tests)."""
        from ..device import device_settings, resolve_device

        import torch

        dev = resolve_device(device)
        settings = device_settings(dev)
        net = net.eval().to(dev)
        if settings.get("channels_last"):
            net = net.to(memory_format=torch.channels_last)
        return cls(net=net, card=card, device=dev, settings=settings)

    # ------------------------------------------------------------ properties
    @property
    def mpp(self) -> float:
        """Working pixel size (microns per pixel) the network expects."""
        return float(self.card["input"]["mpp"])

    @property
    def name(self) -> str:
        return str(self.card.get("name", "detector"))

    @property
    def n_rays(self) -> int:
        return int(self.card["architecture"].get("n_rays", 32))

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.card["architecture"].get("channels", (16, 32, 64))) - 1)

    @property
    def prob_thresh(self) -> float:
        return float(self.card.get("thresholds", {}).get("prob", 0.5))

    @property
    def nms_thresh(self) -> float:
        return float(self.card.get("thresholds", {}).get("nms", 0.4))

    @property
    def max_cell_um(self) -> float:
        """Largest white cell the detector is meant for (sets the minimum halo)."""
        return float(self.card.get("input", {}).get("max_cell_um", 25.0))

    @property
    def min_area_px(self) -> float:
        """Smallest polygon kept, in working pixels (cells < ~4 um across are debris)."""
        return disc_area_px(float(self.card.get("input", {}).get("min_cell_um", 4.0)), self.mpp)

    def info(self) -> dict:
        return {"name": self.name, "version": self.card.get("version"), "mpp": self.mpp,
                "prob_thresh": self.prob_thresh, "nms_thresh": self.nms_thresh, "device": str(self.device),
                "tta": self.tta}

    # ------------------------------------------------------------ inference
    def predict_maps(self, batch: np.ndarray):
        """Probability and distance maps for a batch of normalised tiles.

        Parameters
        ----------
        batch : (N, H, W, 3) float32
            White-balanced tiles (see :func:`leukcore.detect.data.normalize_image`);
            H and W multiples of :attr:`multiple`.

        Returns
        -------
        prob : (N, H, W) float32
        dist : (N, H, W, n_rays) float32
        """
        import torch

        if self.tta not in TTA_CHOICES:
            raise ValueError(f"tta must be one of {TTA_CHOICES}, got {self.tta!r}")
        if self.tta > 1 and self.n_rays % 4:
            raise ValueError(f"tta needs a number of rays divisible by 4, the model has {self.n_rays}")
        x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
        if self.settings.get("pin_memory"):
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True)
        if self.settings.get("channels_last"):
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            prob = dist = None
            for t, v, h in _DIHEDRAL[:self.tta]:
                xt = _transform(x, t, v, h)
                if self.settings.get("amp"):
                    with torch.autocast(self.device.type, dtype=torch.float16):
                        logit, d = self.net(xt)
                else:
                    logit, d = self.net(xt)
                p = torch.sigmoid(logit.float())
                p, d = _untransform(p, t, v, h), _untransform_rays(d.float(), t, v, h)
                prob, dist = (p, d) if prob is None else (prob + p, dist + d)
            if self.tta > 1:
                prob, dist = prob / self.tta, dist / self.tta
            prob = prob[:, 0]
            dist = dist.permute(0, 2, 3, 1)
        return prob.cpu().numpy(), dist.cpu().numpy()

    def predict_image(self, image: np.ndarray, *, bg=None, prob_thresh: Optional[float] = None,
                      nms_thresh: Optional[float] = None):
        """Detect cells in one in-memory RGB image that is already at the working pixel size.

        Returns ``(points, scores, polys)`` in the image's pixels (see
        :func:`~leukcore.detect.postprocess.instances_from_maps`).
        """
        from .data import normalize_image

        img = np.asarray(image)
        H, W = img.shape[:2]
        m = self.multiple
        Hp, Wp = -(-H // m) * m, -(-W // m) * m
        x = normalize_image(img, bg)
        if (Hp, Wp) != (H, W):
            x = np.pad(x, ((0, Hp - H), (0, Wp - W), (0, 0)), mode="constant", constant_values=1.0)
        prob, dist = self.predict_maps(x[None])
        pts, sc, polys = instances_from_maps(prob[0, :H, :W], dist[0, :H, :W],
                                             prob_thresh=self.prob_thresh if prob_thresh is None else prob_thresh,
                                             nms_thresh=self.nms_thresh if nms_thresh is None else nms_thresh,
                                             min_area=self.min_area_px)
        return pts, sc, polys
