"""ONNX Runtime backend: export once per weights hash into the user cache dir, then run.

On CPU ONNX Runtime runs depthwise networks (EfficientNet-Lite) several times faster
than eager torch.  The export is keyed by the weights' sha256 and the input size, so a
changed model never reuses a stale export.  Predictions are checked against torch on
a probe batch right after export.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["cache_dir", "export_onnx", "OnnxRunner", "onnx_available"]

# shared with the detector (leukcore.detect.onnx_backend)
from ..onnx_cache import cache_dir, onnx_available  # noqa: E402,F401


def export_onnx(model, size: int, path: Path, features: bool = False) -> Path:
    """Export ``model`` (eval, CPU) with a dynamic batch axis, atomically.

    ``features``: a second output ``features``, the pooled (pre-logits) features of a timm network
    (for the OOD score, :mod:`leukcore.classify.ood`).
    """
    import torch

    names = ["logits"]
    if features:
        model, names = _with_features(model), ["logits", "features"]

    from ..results import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(2, 3, size, size)
    import warnings

    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with torch.no_grad():
            torch.onnx.export(
                model,
                (x,),
                str(tmp),
                input_names=["input"],
                output_names=names,
                dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in names}},
                opset_version=17,
                dynamo=False,
            )
    return path


def _with_features(net):
    import torch

    class _LogitsAndFeatures(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            f = self.net.forward_head(self.net.forward_features(x), pre_logits=True)
            return self.net.get_classifier()(f), f

    return _LogitsAndFeatures(net).eval()


class OnnxRunner:
    """Holds an ``onnxruntime.InferenceSession`` and returns logits for float32 NCHW input."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = int(threads)
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The logits (the first output) for float32 NCHW ``x``."""
        return self.run_all(x)[0]

    def run_all(self, x: np.ndarray) -> list:
        """Every output (``[logits]``, or ``[logits, features]`` for an export with features)."""
        return self.session.run(None, {"input": np.ascontiguousarray(x, dtype=np.float32)})
