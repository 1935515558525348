"""The :class:`Classifier`: a timm network plus its crop geometry, classes and backend."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from .geometry import CropSpec
from .inputs import preprocess
from .network import architecture_of, build_network

__all__ = ["Classifier", "softmax", "crop_features"]

BACKENDS = ("auto", "torch", "onnx")


def softmax(z: np.ndarray) -> np.ndarray:
    """The row-wise softmax of logits ``z`` (N, C) as float32 probabilities (computed in float64)."""
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class Classifier:
    """A cell classifier: network, :class:`CropSpec`, class names, device and backend.

    Use :meth:`load` for shipped or user models; :meth:`from_network` wraps a network in training.

    Attributes
    ----------
    classes : list of str
    spec : CropSpec
    card : dict
    device : torch.device
    backend : str
        ``"torch"`` or ``"onnx"`` (the one actually used).
    """

    def __init__(
        self,
        network,
        classes: Sequence[str],
        spec: CropSpec,
        card: Optional[dict] = None,
        device="cpu",
        backend: str = "torch",
    ):
        import torch

        from ..device import device_settings, resolve_device

        self.classes = list(classes)
        self.spec = spec
        self.card = dict(card or {})
        self.device = resolve_device(device)
        self.settings = device_settings(self.device)
        self.network = network.eval().to(self.device)
        if self.settings["channels_last"] and self.device.type == "cuda":
            self.network = self.network.to(memory_format=torch.channels_last)
        self._onnx = None
        self._ood_stats = False  # not read yet (see :attr:`ood`)
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
        self.backend = "torch"
        if backend == "onnx" or (backend == "auto" and self.device.type == "cpu"):
            self._try_onnx(required=backend == "onnx")

    @property
    def review_threshold(self) -> float:
        """Confidence below which a cell is left for review: the card's ``review.confidence``
        (chosen on validation data when the model was trained), else
        :data:`~leukcore.results.DEFAULT_REVIEW_THRESHOLD`.
        """
        from ..results import DEFAULT_REVIEW_THRESHOLD

        v = (self.card.get("review") or {}).get("confidence")
        return float(v) if v is not None else DEFAULT_REVIEW_THRESHOLD

    @property
    def ood_threshold(self) -> Optional[float]:
        """OOD score above which a cell is left for review (the card's ``review.ood.threshold``, chosen
        on validation data); ``None`` when the card has no OOD statistics (no OOD rule).
        """
        from .ood import ood_block

        b = ood_block(self.card)
        return float(b["threshold"]) if b and b.get("threshold") is not None else None

    @property
    def ood(self):
        """The card's :class:`~leukcore.classify.ood.OodStats`, read (and sha256-checked) on first use;
        ``None`` without any, or for a network whose pooled features cannot be read.
        """
        if self._ood_stats is False:
            from .ood import load_ood

            self._ood_stats = load_ood(self.card) if self._wants_features() else None
        return self._ood_stats

    def _wants_features(self) -> bool:
        from .ood import ood_block

        return (
            ood_block(self.card) is not None
            and hasattr(self.network, "forward_head")
            and hasattr(self.network, "forward_features")
        )

    @property
    def blast_threshold(self) -> Optional[float]:
        """Confidence a blast call needs (the card's ``review.blast_confidence``, chosen so that few
        normal validation cells of any source are called a blast); below it the cell is left for
        review.  ``None``: the same as :attr:`review_threshold`.
        """
        v = (self.card.get("review") or {}).get("blast_confidence")
        return float(v) if v is not None else None

    # ------------------------------------------------------------------ build
    @classmethod
    def load(cls, name_or_card: Any = "all-binary", device: str = "auto", backend: str = "auto") -> "Classifier":
        """Load a shipped model by name, a card ``.yaml`` path, a run directory, or a card dict.

        Weights are read with safetensors (no pickled code) and their sha256 is checked
        against the card.
        """
        from ..models.registry import ModelError, load_card, load_state_dict

        card = name_or_card if isinstance(name_or_card, dict) else load_card(name_or_card)
        if card.get("task") != "classification":
            raise ModelError(
                f"{card.get('_card_path', name_or_card)}: task is {card.get('task')!r}, not a classification model"
            )
        classes = card.get("classes")
        if not classes:
            raise ModelError(f"{card.get('_card_path')}: model card lists no classes")
        arch = architecture_of(card)
        net = build_network(arch["name"], len(classes))
        sd = load_state_dict(card)
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise ModelError(
                f"{card.get('_card_path')}: weights do not fit {arch['name']}: {str(e).splitlines()[0]}"
            ) from None
        spec = CropSpec.from_card(card.get("input", {}))
        return cls(net, classes, spec, card=card, device=device, backend=backend)

    @classmethod
    def from_network(cls, network, classes, spec: CropSpec, device="cpu", backend="torch", card=None):
        """A classifier around an already built ``network`` (training, tests): no card needed, no weights read."""
        return cls(network, classes, spec, card=card or {}, device=device, backend=backend)

    @property
    def name(self) -> str:
        """The model card's name (``"classifier"`` without one)."""
        return str(self.card.get("name", "classifier"))

    def __repr__(self) -> str:
        return (
            f"<Classifier {self.name}: {self.card.get('architecture', {}).get('name', '?')} "
            f"classes={self.classes} input={self.spec.size}px/{self.spec.crop_um}um mode={self.spec.mode} "
            f"device={self.device} backend={self.backend}>"
        )

    # ---------------------------------------------------------------- pickling (dask workers)
    def __getstate__(self) -> dict:
        """Everything but the ONNX Runtime session (not picklable): a batch ships a loaded classifier to dask
        workers, where :meth:`__setstate__` opens the session again (exported from the weights when the worker's
        cache has none).
        """
        state = dict(self.__dict__)
        state["_onnx"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.backend == "onnx":
            self.backend = "torch"
            self._try_onnx()

    # ---------------------------------------------------------------- backend
    def _weights_key(self) -> str:
        w = self.card.get("weights", {}) if self.card else {}
        if w.get("sha256"):
            return w["sha256"][:16]
        import hashlib

        h = hashlib.sha256()
        for k, v in self.network.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def _try_onnx(self, required: bool = False) -> None:
        from . import onnx_backend as ob

        if not ob.onnx_available():
            if required:
                raise RuntimeError("backend='onnx' requested but onnxruntime is not installed")
            return
        feats = self._wants_features()
        path = self._onnx_path(feats)
        try:
            self._onnx = self._onnx_runner(feats)[0]
            self.backend = "onnx"
        except Exception as e:
            if required:
                raise
            import warnings

            warnings.warn(f"ONNX backend unavailable ({e}); using torch", RuntimeWarning, stacklevel=3)
            try:
                path.unlink()
            except OSError:
                pass

    def _onnx_path(self, feats: bool):
        from . import onnx_backend as ob

        arch = self.card.get("architecture", {}).get("name", "net") if self.card else "net"
        # an export that also outputs the pooled features (for the OOD score) has its own cache key
        return (
            ob.cache_dir()
            / "onnx"
            / (
                f"{arch}-{len(self.classes)}c-{self.spec.size}px-{self._weights_key()}"
                + ("-feat" if feats else "")
                + ".onnx"
            )
        )

    def _onnx_runner(self, feats: bool) -> tuple:
        """``(OnnxRunner, path)``: the cached export (made on first use), probed against torch."""
        from . import onnx_backend as ob

        path = self._onnx_path(feats)
        if not path.exists():
            ob.export_onnx(self.network.cpu(), self.spec.size, path, features=feats)
            self.network.to(self.device)
        runner = ob.OnnxRunner(path)
        # probe: ONNX must give the torch predictions (and features)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(4, 3, self.spec.size, self.spec.size)).astype(np.float32)
        got = runner.run_all(x)
        want = self._torch_forward(x, features=feats)
        want = want if feats else (want,)
        if len(got) != len(want):
            raise RuntimeError(f"ONNX export {path} has {len(got)} outputs, expected {len(want)}")
        for a, b in zip(got, want, strict=True):
            if not np.allclose(a, b, atol=1e-3 * max(1.0, np.abs(b).max())):
                raise RuntimeError(f"ONNX export {path} disagrees with torch (max diff {np.abs(a - b).max():.3g})")
        return runner, path

    # -------------------------------------------------------------- inference
    def _torch_logits(self, x: np.ndarray) -> np.ndarray:
        return self._torch_forward(x)

    def _torch_forward(self, x: np.ndarray, features: bool = False):
        """Logits, or ``(logits, pooled features)`` with ``features``."""
        import torch

        t = torch.from_numpy(np.ascontiguousarray(x))
        if self.settings["pin_memory"]:
            t = t.pin_memory()
        t = t.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            t = t.to(memory_format=torch.channels_last)
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=torch.float16, enabled=bool(self.settings["amp"])),
        ):
            if not features:
                out = self.network(t)
                return out.float().cpu().numpy()
            net = self.network
            f = net.forward_head(net.forward_features(t), pre_logits=True)
            out = net.get_classifier()(f)
        return out.float().cpu().numpy(), f.float().cpu().numpy()

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits for preprocessed float32 NCHW input."""
        if self._onnx is not None:
            return self._onnx(x)
        return self._torch_logits(x)

    def logits_and_features(self, x: np.ndarray) -> tuple:
        """``(logits, pooled features)`` for preprocessed float32 NCHW input (a card with OOD statistics)."""
        if self._onnx is not None:
            out = self._onnx.run_all(x)
            if len(out) >= 2:
                return out[0], out[1]
        return self._torch_forward(x, features=True)

    def predict_crops_ood(self, crops: np.ndarray, batch_size: int = 64, tta: Optional[str] = None) -> tuple:
        """``(probabilities (N, C), OOD scores (N,) or None)``: :meth:`predict_crops` plus the score of
        :mod:`~leukcore.classify.ood` (of the crop as it is, not its TTA views; ``None`` when the card has
        no OOD statistics).
        """
        stats = self.ood
        if stats is None:
            return self.predict_crops(crops, batch_size=batch_size, tta=tta), None
        crops = self._as_input_crops(crops)
        probs = np.zeros((len(crops), len(self.classes)), np.float32)
        feats = np.zeros((len(crops), stats.dim), np.float32)
        for i in range(0, len(crops), batch_size):
            z, f = self.logits_and_features(preprocess(crops[i : i + batch_size], self.spec))
            probs[i : i + batch_size], feats[i : i + batch_size] = softmax(z), f
        if tta is not None:
            from .fields import TTA_MODES

            if tta not in TTA_MODES:
                raise ValueError(f"unknown tta {tta!r}; expected one of {TTA_MODES}")
            views = [(0, True)] if tta == "flip" else [(k, f) for k in range(4) for f in (False, True)][1:]
            acc = probs.copy()
            for k, f in views:
                v = np.rot90(crops, k, axes=(1, 2))
                acc += self.predict_crops(np.ascontiguousarray(v[:, :, ::-1] if f else v), batch_size=batch_size)
            probs = (acc / (len(views) + 1)).astype(np.float32)
        return probs, stats.score(feats)

    def _as_input_crops(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise ValueError(f"predict_crops expects uint8 (N, H, W, 3), got {crops.dtype} {crops.shape}")
        if crops.shape[1:3] != (self.spec.size, self.spec.size):
            from .crops import resize_rgb

            crops = (
                np.stack([resize_rgb(c, self.spec.size) for c in crops])
                if len(crops)
                else np.zeros((0, self.spec.size, self.spec.size, 3), np.uint8)
            )
        return crops

    def predict_crops(self, crops: np.ndarray, batch_size: int = 64, tta: Optional[str] = None) -> np.ndarray:
        """Class probabilities ``(N, C)`` float32 for ``uint8 (N, H, W, 3)`` crops of the spec's size.

        Crops of another size are resampled to the input size.  ``tta`` (test-time augmentation):
        ``None`` (default, one pass), ``"flip"`` (+ horizontal flip) or ``"d4"`` (the 8 flips and
        90-degree rotations); the probabilities are averaged over the views.
        """
        from .fields import TTA_MODES

        if tta not in TTA_MODES:
            raise ValueError(f"unknown tta {tta!r}; expected one of {TTA_MODES}")
        if tta is not None:
            crops = np.asarray(crops)
            if crops.ndim == 3:
                crops = crops[None]
            views = [(0, False), (0, True)] if tta == "flip" else [(k, f) for k in range(4) for f in (False, True)]
            acc = None
            for k, f in views:
                v = np.rot90(crops, k, axes=(1, 2)) if crops.ndim == 4 else crops
                if f and crops.ndim == 4:
                    v = v[:, :, ::-1]
                p = self.predict_crops(np.ascontiguousarray(v), batch_size=batch_size)
                acc = p if acc is None else acc + p
            return (acc / len(views)).astype(np.float32)
        crops = self._as_input_crops(crops)
        out = np.zeros((len(crops), len(self.classes)), np.float32)
        for i in range(0, len(crops), batch_size):
            x = preprocess(crops[i : i + batch_size], self.spec)
            out[i : i + batch_size] = softmax(self.logits(x))
        return out


def crop_features(clf: Classifier, crops: np.ndarray, batch_size: int = 128, onnx: bool = False) -> tuple:
    """``(probabilities (N, C), pooled features (N, D))`` of uint8 crops, one pass (no TTA).

    ``onnx``: through an ONNX export with a features output (cached; several times faster on CPU).
    """
    crops = clf._as_input_crops(crops)
    run = clf.logits_and_features
    if onnx and clf.device.type == "cpu":
        from . import onnx_backend as ob

        if ob.onnx_available():
            runner = clf._onnx_runner(True)[0]
            run = runner.run_all
    P, F = [], []
    for i in range(0, len(crops), batch_size):
        z, f = run(preprocess(crops[i : i + batch_size], clf.spec))[:2]
        P.append(softmax(z))
        F.append(np.asarray(f, np.float32))
    if not P:
        return np.zeros((0, len(clf.classes)), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(P), np.concatenate(F)
