"""The :class:`Detector`: a loaded StarDist-method network with its model card."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .postprocess import instances_from_maps

__all__ = ["Detector", "DEFAULT_DETECTOR", "BACKENDS"]

DEFAULT_DETECTOR = "wbc-stardist"
#: ``"auto"``: ONNX Runtime on CPU when installed and it agrees with torch on a probe tile, else torch
BACKENDS = ("auto", "torch", "onnx")


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
    in ``tests/test_detect_tta.py``).
    """
    import torch

    n = d.shape[1]
    k = torch.arange(n, device=d.device)
    d = _untransform(d, t, v, h)
    for on, perm in ((h, (n // 2 - k) % n), (v, (-k) % n), (t, (n // 4 - k) % n)):
        if on:
            d = d[:, perm]
    return d


def _transform_np(x: np.ndarray, t: int, v: int, h: int) -> np.ndarray:
    """:func:`_transform` on NHWC (or NHW) numpy arrays."""
    if t:
        x = np.swapaxes(x, 1, 2)
    if v:
        x = x[:, ::-1]
    if h:
        x = x[:, :, ::-1]
    return x


def _untransform_np(y: np.ndarray, t: int, v: int, h: int) -> np.ndarray:
    if v:
        y = y[:, ::-1]
    if h:
        y = y[:, :, ::-1]
    return np.swapaxes(y, 1, 2) if t else y


def _untransform_rays_np(d: np.ndarray, t: int, v: int, h: int) -> np.ndarray:
    """:func:`_untransform_rays` on NHWR numpy distances."""
    n = d.shape[-1]
    k = np.arange(n)
    d = _untransform_np(d, t, v, h)
    for on, perm in ((h, (n // 2 - k) % n), (v, (-k) % n), (t, (n // 4 - k) % n)):
        if on:
            d = d[..., perm]
    return d


def _set_torch_threads(n: int) -> None:
    import torch

    if n and torch.get_num_threads() != n:
        torch.set_num_threads(int(n))


@dataclass(eq=False)  # hashable by identity: per-detector caches (receptive field) can key on it
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
    #: ``"torch"`` or ``"onnx"``: the backend actually used (see :meth:`load`)
    backend: str = "torch"
    #: CPU threads for the network (ONNX Runtime intra-op threads, torch threads); 0 = every core
    #: this process may use (``len(os.sched_getaffinity(0))``)
    threads: int = 0
    _onnx: Any = field(default=None, repr=False)
    #: one-core ONNX Runtime session (opened on first use) for windows run side by side: see :meth:`map_workers`
    _onnx_one: Any = field(default=None, repr=False)
    _onnx_one_lock: Any = field(default_factory=threading.Lock, repr=False)
    #: probe comparison of the ONNX export with torch (max differences), when the ONNX backend was tried
    backend_check: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        from .onnx_backend import default_threads

        self.threads = int(self.threads) if self.threads else default_threads()

    # ------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        name_or_card: "str | dict" = DEFAULT_DETECTOR,
        device: str = "auto",
        backend: str = "auto",
        threads: Optional[int] = None,
    ) -> "Detector":
        """Load a shipped detector by name, a card ``.yaml`` path, or a run directory.

        Parameters
        ----------
        device : str
            ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda[:N]"``.
        backend : str
            ``"auto"`` (default): on CPU the network runs in ONNX Runtime (exported once per weights
            hash into the user cache dir; checked against torch on a probe tile, torch with a warning
            when it disagrees or onnxruntime is missing); on CUDA torch.  ``"torch"``; ``"onnx"``
            (raises when the export cannot be made or disagrees).  The one used is ``.backend``.
        threads : int, optional
            CPU threads for the network (ONNX Runtime intra-op threads; torch's thread count is set to
            it whenever torch runs the network).  Default: every core this process may use.

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
            raise ModelError(
                f"{card.get('_card_path', card.get('name'))}: model card task is {card.get('task')!r}, not 'detection'"
            )
        dev = resolve_device(device)
        net = build_network(card["architecture"])
        sd = load_state_dict(card)
        try:
            net.load_state_dict({k: v for k, v in sd.items()})
        except RuntimeError as e:
            raise ModelError(f"{card.get('_card_path')}: weights do not fit the card's architecture: {e}") from None
        settings = device_settings(dev)
        net.eval().to(dev)
        if settings.get("channels_last"):  # ~1.5x faster convolutions on CPU too
            net = net.to(memory_format=torch.channels_last)
        det = cls(net=net, card=card, device=dev, settings=settings, threads=threads or 0)
        det._choose_backend(backend)
        from .receptive import receptive_radius

        receptive_radius(det)  # measured once with the model (cached), not inside the first slide's run
        return det

    @classmethod
    def from_network(
        cls, net, card: dict, device: str = "cpu", backend: str = "torch", threads: Optional[int] = None
    ) -> "Detector":
        """Wrap an in-memory network (training / tests); ``backend`` as in :meth:`load` (default torch)."""
        import torch

        from ..device import device_settings, resolve_device

        dev = resolve_device(device)
        settings = device_settings(dev)
        net = net.eval().to(dev)
        if settings.get("channels_last"):
            net = net.to(memory_format=torch.channels_last)
        det = cls(net=net, card=card, device=dev, settings=settings, threads=threads or 0)
        det._choose_backend(backend)
        return det

    # ------------------------------------------------------------ pickling (dask workers)
    def __getstate__(self) -> dict:
        """All but the ONNX sessions and lock: a batch pickles a loaded detector to dask workers (reopened there)."""
        state = dict(self.__dict__)
        state.update(_onnx=None, _onnx_one=None, _onnx_one_lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._onnx_one_lock = threading.Lock()
        if self.backend == "onnx":
            self.backend = "torch"
            self._try_onnx()

    # ------------------------------------------------------------ backend
    def _choose_backend(self, backend: str) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
        self.backend, self._onnx = "torch", None
        if backend == "onnx" or (backend == "auto" and self.device.type == "cpu"):
            self._try_onnx(required=backend == "onnx")

    def _weights_key(self) -> str:
        w = self.card.get("weights", {}) if self.card else {}
        if w.get("sha256"):
            return str(w["sha256"])[:16]
        import hashlib

        h = hashlib.sha256()
        for k, v in self.net.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def _try_onnx(self, required: bool = False) -> None:
        """Export (once per weights hash) and open the ONNX Runtime session; keep it only if it gives
        torch's maps on a probe tile (:data:`~leukcore.detect.onnx_backend.PROBE_TOL`).
        """
        import warnings

        from . import onnx_backend as ob

        if not ob.onnx_available():
            if required:
                raise RuntimeError("backend='onnx' requested but onnxruntime is not installed")
            warnings.warn("onnxruntime is not installed; the detector runs in torch", RuntimeWarning, stacklevel=3)
            return
        path = ob.detector_onnx_path(self.card, self._weights_key())
        try:
            if not path.exists():
                ob.export_detector_onnx(self.net, path)
            runner = ob.DetectorOnnxRunner(path, threads=self.threads)
            x = ob.probe_tiles()
            diff = ob.max_map_diff(runner(x), self._torch_maps(x))
            self.backend_check = {**diff, "tol": dict(ob.PROBE_TOL), "export": str(path)}
            bad = {k: v for k, v in diff.items() if not v <= ob.PROBE_TOL[k]}
            if bad:
                raise RuntimeError(
                    f"ONNX export {path} disagrees with torch on the probe tile "
                    f"(max differences {bad}, tolerance {ob.PROBE_TOL})"
                )
            self._onnx = runner
            self.backend = "onnx"
            if self.threads > 1:  # the side-by-side windows' session, opened with the model, not in a first run
                self._onnx_runner(one_core=True)
        except Exception as e:  # noqa: BLE001 - any export / runtime failure falls back to torch
            if required:
                raise
            warnings.warn(f"ONNX backend unavailable for the detector ({e}); using torch", RuntimeWarning, stacklevel=3)
            try:
                path.unlink()
            except OSError:
                pass

    # ------------------------------------------------------------ properties
    @property
    def mpp(self) -> float:
        """Working pixel size (microns per pixel) the network expects."""
        return float(self.card["input"]["mpp"])

    @property
    def name(self) -> str:
        """The model's name (from its card)."""
        return str(self.card.get("name", "detector"))

    @property
    def n_rays(self) -> int:
        """Star-convex polygon rays per cell."""
        return int(self.card["architecture"].get("n_rays", 32))

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (2 ** U-Net depth)."""
        return 2 ** (len(self.card["architecture"].get("channels", (16, 32, 64))) - 1)

    @property
    def prob_thresh(self) -> float:
        """Object probability threshold (the card's tuned value)."""
        return float(self.card.get("thresholds", {}).get("prob", 0.5))

    @property
    def nms_thresh(self) -> float:
        """Polygon overlap threshold of non-maximum suppression (the card's tuned value)."""
        return float(self.card.get("thresholds", {}).get("nms", 0.4))

    @property
    def max_cell_um(self) -> float:
        """Largest white cell the detector is meant for (sets the minimum halo)."""
        return float(self.card.get("input", {}).get("max_cell_um", 25.0))

    @property
    def stain_template(self) -> Optional[np.ndarray]:
        """The card's colour template (2, 3), or None (white balance only): :func:`.stain.card_template`."""
        from .stain import card_template

        return card_template(self.card, self.name)

    @property
    def stain_bounds(self) -> tuple:
        """The colour map's std-ratio bounds per Lab channel: :func:`.stain.card_bounds`."""
        from .stain import card_bounds

        return card_bounds(self.card, self.name)

    def stain_normalizer(self, sample: np.ndarray, bg):
        """The colour map (a lookup table) of the slide that ``sample`` (its thumbnail) shows; None when the
        model uses none.  One in-memory field: :func:`leukcore.detect.inputs.field_input`.
        """
        from .stain import StainNormalizer

        tpl = self.stain_template
        return None if tpl is None else StainNormalizer.for_image(sample, bg, tpl, bounds=self.stain_bounds)

    @property
    def min_area_px(self) -> float:
        """Smallest polygon kept, in working pixels (cells < ~4 um across are debris)."""
        return disc_area_px(float(self.card.get("input", {}).get("min_cell_um", 4.0)), self.mpp)

    def info(self) -> dict:
        """What a run records about the detector: name, version, pixel size, thresholds, device, TTA, backend."""
        return {
            "name": self.name,
            "version": self.card.get("version"),
            "mpp": self.mpp,
            "prob_thresh": self.prob_thresh,
            "nms_thresh": self.nms_thresh,
            "device": str(self.device),
            "tta": self.tta,
            "backend": self.backend,
        }

    # ------------------------------------------------------------ inference
    def predict_maps(self, batch: np.ndarray):
        """Probability and distance maps for a batch of normalised tiles.

        Parameters
        ----------
        batch : (N, H, W, 3) float32
            White-balanced tiles (see :func:`leukcore.detect.inputs.normalize_image`);
            H and W multiples of :attr:`multiple`.

        Returns
        -------
        prob : (N, H, W) float32
        dist : (N, H, W, n_rays) float32
        """
        if self.tta not in TTA_CHOICES:
            raise ValueError(f"tta must be one of {TTA_CHOICES}, got {self.tta!r}")
        if self.tta > 1 and self.n_rays % 4:
            raise ValueError(f"tta needs a number of rays divisible by 4, the model has {self.n_rays}")
        if self._onnx is not None:
            return self._onnx_maps(batch)
        return self._torch_maps(batch)

    def map_workers(self) -> int:
        """How many small inputs may go through the network side by side, each on one core.

        ``threads`` with ONNX Runtime on CPU (a one-core session run from several threads: small per-cell
        windows keep every core busy that way, where one run's intra-op threads mostly wait for each other),
        else 1.  The maps are the same as :meth:`predict_maps` gives (the per-pixel arithmetic does not
        depend on the thread count; ``tests/test_detect_windows.py`` checks the cells).
        """
        return self.threads if (self._onnx is not None and self.threads > 1) else 1

    @property
    def dist_logits(self) -> bool:
        """Whether :meth:`predict_maps_raw` gives the distance head's logits (ONNX Runtime, no TTA) rather than
        distances: detection then applies the softplus only at the candidate pixels
        (:func:`leukcore.detect.postprocess.instances_from_maps`, ``dist_logits=True``).
        """
        return self._onnx is not None and self.tta == 1

    def predict_maps_raw(self, batch: np.ndarray, one_core: bool = False):
        """``(prob, dist)`` as :meth:`predict_maps` (``one_core``: :meth:`predict_maps_one_core`), but with
        ``dist`` the distance logits when :attr:`dist_logits` (the softplus over every pixel and ray was a third
        of a forward pass).
        """
        if not self.dist_logits:
            return self.predict_maps_one_core(batch) if one_core else self.predict_maps(batch)
        return self._onnx_runner(one_core).logits(np.asarray(batch, dtype=np.float32))

    def _onnx_runner(self, one_core: bool = False):
        """The ONNX Runtime session: every thread, or (``one_core``) the one-core one, opened on first use."""
        if not one_core or self.threads <= 1:
            return self._onnx
        with self._onnx_one_lock:  # the side-by-side threads ask at once: open one session, not one each
            if self._onnx_one is None:
                from .onnx_backend import DetectorOnnxRunner

                self._onnx_one = DetectorOnnxRunner(self._onnx.path, threads=1, memory=self._onnx.memory)
        return self._onnx_one

    def predict_maps_one_core(self, batch: np.ndarray):
        """:meth:`predict_maps` on one core (thread-safe: for :meth:`map_workers` threads side by side)."""
        if self._onnx is None or self.threads <= 1:
            return self.predict_maps(batch)
        return self._onnx_maps(batch, self._onnx_runner(one_core=True))

    def _onnx_maps(self, batch: np.ndarray, runner=None):
        run = self._onnx if runner is None else runner
        batch = np.asarray(batch, dtype=np.float32)
        if self.tta == 1:
            return run(batch)
        prob = dist = None
        for t, v, h in _DIHEDRAL[: self.tta]:
            p, d = run(np.ascontiguousarray(_transform_np(batch, t, v, h)))
            p, d = _untransform_np(p, t, v, h), _untransform_rays_np(d, t, v, h)
            prob, dist = (p.astype(np.float32), d.astype(np.float32)) if prob is None else (prob + p, dist + d)
        return prob / self.tta, dist / self.tta

    def _torch_maps(self, batch: np.ndarray):
        """:meth:`predict_maps` in torch (the reference the ONNX export is checked against)."""
        import torch

        if self.device.type == "cpu":
            _set_torch_threads(self.threads)
        x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
        if self.settings.get("pin_memory"):
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True)
        if self.settings.get("channels_last"):
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            prob = dist = None
            for t, v, h in _DIHEDRAL[: self.tta]:
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

    def predict_image(
        self, image: np.ndarray, *, bg=None, prob_thresh: Optional[float] = None, nms_thresh: Optional[float] = None
    ):
        """Detect cells in one in-memory RGB image that is already at the working pixel size.

        Returns ``(points, scores, polys)`` in the image's pixels (see
        :func:`~leukcore.detect.postprocess.instances_from_maps`).
        """
        from .inputs import field_input

        img = np.asarray(image)
        H, W = img.shape[:2]
        m = self.multiple
        Hp, Wp = -(-H // m) * m, -(-W // m) * m
        x = field_input(img, self.stain_template, bg, self.stain_bounds)
        if (Hp, Wp) != (H, W):
            x = np.pad(x, ((0, Hp - H), (0, Wp - W), (0, 0)), mode="constant", constant_values=1.0)
        prob, dist = self.predict_maps(x[None])
        pts, sc, polys = instances_from_maps(
            prob[0, :H, :W],
            dist[0, :H, :W],
            prob_thresh=self.prob_thresh if prob_thresh is None else prob_thresh,
            nms_thresh=self.nms_thresh if nms_thresh is None else nms_thresh,
            min_area=self.min_area_px,
        )
        return pts, sc, polys
