"""ONNX Runtime backend for the detector network (CPU).

The StarDist U-Net is exported once per weights hash into the user cache dir (the same
folder as the classifier's exports, :mod:`leukcore.onnx_cache`), with dynamic
batch, height and width axes, so one session serves every tile and sub-window shape.  The
exported graph takes the normalised tiles as the tiler makes them (NHWC float32) and returns
the maps :meth:`~leukcore.detect.model.Detector.predict_maps` returns (sigmoid applied,
distances channel-last), so no layout copies are made in Python.

Why: on CPU eager torch reaches ~38 % of the machine's matmul rate on this network (half its
arithmetic is in 16-32-channel full-resolution layers, where ONNX Runtime's NCHWc kernels do
much better) and it does not scale to a second core; ONNX Runtime runs the same graph about
1.5x faster on one thread and ~2x on two (``benchmarks/bench_detect_vs_stardist.py``).

A new export is checked against torch on a probe tile (:func:`max_map_diff`); the caller
(:meth:`Detector.load`) falls back to torch with a warning when the two disagree.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from ..onnx_cache import cache_dir, onnx_available

__all__ = [
    "onnx_available",
    "cache_dir",
    "detector_onnx_path",
    "export_detector_onnx",
    "softplus",
    "DetectorOnnxRunner",
    "default_threads",
    "max_map_diff",
    "PROBE_TOL",
    "OPSET",
    "MEMORY_MODES",
    "MEMORY",
]

OPSET = 17
#: largest accepted difference to torch on the probe tile: probability (absolute) and distances
#: (relative to the largest distance).  ONNX Runtime and torch agree to ~1e-6 on this network; NMS
#: compares probabilities quantised to 2^-12 (2.4e-4), so 1e-4 still gives the same candidates.
PROBE_TOL = {"prob": 1e-4, "dist": 1e-4}
#: how ONNX Runtime gets the memory of a forward pass on CPU (measured: docs/detection.md, *ONNX Runtime's memory*):
#: ``"shrink"`` ONNX Runtime's memory arena, handing its free chunks back to the system at the end of every
#: run (run option ``memory.enable_memory_arena_shrinkage``): large activations are reused within a forward
#: pass instead of being mapped, faulted in and unmapped one by one, and the arena never keeps more than one
#: forward pass needs; ``"same"`` one arena per process that grows by exactly what is requested
#: (``kSameAsRequested``) and keeps it; ``"arena"`` ONNX Runtime's default arena (grows in powers of two, keeps
#: everything: 3.8 GB peak RSS on the full path); ``"off"`` no arena (every large tensor is mapped and faulted
#: in at each pass: 1.4x the CPU time on 1,152 px tiles, 28 % of it in the kernel)
MEMORY_MODES = ("shrink", "same", "arena", "off")
MEMORY = "shrink"
#: let idle intra-op threads spin (ONNX Runtime's own default; off here, see :class:`DetectorOnnxRunner`)
SPIN = False
_ENV_ARENA = []  # the process-wide kSameAsRequested arena, once registered


#: version of the exported graph (part of the cache name): ``logits`` = the distance head's output before its
#: softplus, which detection applies only at the candidate pixels (:func:`softplus`); a third of a forward
#: pass was the softplus over every pixel and ray
GRAPH = "logits"


def softplus(x: np.ndarray) -> np.ndarray:
    """The distance head's activation, ``log(1 + exp(x))`` in float32 (torch's ``softplus``; exact past 20)."""
    x = np.asarray(x, np.float32)
    return np.where(x > 20.0, x, np.logaddexp(np.float32(0.0), x)).astype(np.float32)


def default_threads() -> int:
    """Cores this process may run on (``len(os.sched_getaffinity(0))``; ``os.cpu_count()`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def detector_onnx_path(card: dict, key: str) -> Path:
    """Cache path of a detector export: architecture + weights hash + opset + torch version."""
    import torch

    arch = card.get("architecture", {}) or {}
    ch = "-".join(str(c) for c in arch.get("channels", (16, 32, 64)))
    tv = torch.__version__.split("+")[0]
    name = f"detector-{ch}-r{arch.get('n_rays', 32)}-{key}-op{OPSET}-t{tv}-{GRAPH}.onnx"
    return cache_dir() / "onnx" / name


class _MapsGraph:
    """Factory for the exported module (torch imported lazily)."""

    @staticmethod
    def build(net):
        import torch
        from torch import nn

        class Maps(nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, x):  # (N, H, W, 3) float32
                f = self.net.features_of(x.permute(0, 3, 1, 2))
                return torch.sigmoid(self.net.prob_head(f))[:, 0], self.net.dist_head(f).permute(0, 2, 3, 1)

        return Maps(net).eval()


def export_detector_onnx(net, path: Path) -> Path:
    """Export ``net`` (a :class:`~leukcore.detect.net.StarDistUNet`, eval, CPU, float32) atomically.

    Input ``tiles`` (N, H, W, 3); outputs ``prob`` (N, H, W) and ``dist`` (N, H, W, n_rays), the distance
    head's logits (:func:`softplus` of them are the distances); N, H and W are dynamic (H and W multiples of
    the network's downsampling).
    """
    import copy

    import torch

    from ..results import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    m = copy.deepcopy(net).float().cpu().eval().to(memory_format=torch.contiguous_format)
    model = _MapsGraph.build(m)
    x = torch.zeros(1, 64, 96, 3)
    axes = {0: "n", 1: "h", 2: "w"}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(
                model,
                (x,),
                str(tmp),
                input_names=["tiles"],
                output_names=["prob", "dist"],
                dynamic_axes={"tiles": axes, "prob": axes, "dist": axes},
                opset_version=OPSET,
                dynamo=False,
            )
    return path


class DetectorOnnxRunner:
    """An ``onnxruntime.InferenceSession`` of an exported detector; ``runner(tiles) -> (prob, dist)``.

    ``threads`` intra-op threads (default :func:`default_threads`), not spinning when idle; one inter-op
    thread (the graph is a chain); ``memory`` one of :data:`MEMORY_MODES` (default :data:`MEMORY`).  Dynamic shapes: the session is shape-agnostic, each new tile shape costs one
    planning pass inside ONNX Runtime.
    """

    def __init__(self, path: Path, threads: Optional[int] = None, memory: Optional[str] = None):
        import onnxruntime as ort

        self.path = Path(path)
        self.threads = int(threads) if threads else default_threads()
        self.memory = MEMORY if memory is None else memory
        if self.memory not in MEMORY_MODES:
            raise ValueError(f"memory must be one of {MEMORY_MODES}, got {self.memory!r}")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # idle intra-op threads sleep instead of spinning: with another runnable process (a shared machine,
        # or the pipeline's classifier running beside detection) a spinning thread burns the core its
        # partner needs (2 threads under load: 30 % less CPU time and 1.3x faster with spinning off)
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if SPIN else "0")
        self.run_options = None
        if self.memory == "off":
            so.enable_cpu_mem_arena = False
        elif self.memory == "shrink":
            self.run_options = ort.RunOptions()
            self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        elif self.memory == "same":
            _register_same_arena(ort)
            so.add_session_config_entry("session.use_env_allocators", "1")
        self.session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])

    def __call__(self, tiles: np.ndarray):
        """``(prob, dist)`` maps of a float32 batch ``(N, H, W, 3)``, as the torch network gives them."""
        prob, logits = self.logits(tiles)
        return prob, softplus(logits)

    def logits(self, tiles: np.ndarray):
        """``(prob, distance logits)``: :meth:`__call__` without the softplus over every pixel and ray."""
        x = np.ascontiguousarray(tiles, dtype=np.float32)
        prob, logits = self.session.run(None, {"tiles": x}, self.run_options)
        return prob, logits


def _register_same_arena(ort) -> None:
    """Register (once per process) a CPU arena that extends by exactly the requested size."""
    if _ENV_ARENA:
        return
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg({"arena_extend_strategy": 1}))
    _ENV_ARENA.append(info)


def probe_tiles(size: int = 192, n: int = 2, seed: int = 0) -> np.ndarray:
    """Smear-like probe input (white-balanced scale, smooth blobs on a bright background), NHWC float32."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, (n, size, size, 3)).astype(np.float32)
    x = ndi.gaussian_filter(x, (0, 3, 3, 0))
    x = (x - x.min()) / (np.ptp(x) + 1e-6)
    return (0.35 + 0.65 * x).astype(np.float32)


def max_map_diff(a, b) -> dict:
    """Largest probability difference and largest distance difference relative to the largest distance."""
    pa, da = a
    pb, db = b
    return {
        "prob": float(np.abs(np.asarray(pa, np.float64) - pb).max()),
        "dist": float(np.abs(np.asarray(da, np.float64) - db).max() / (np.abs(db).max() + 1e-12)),
    }
