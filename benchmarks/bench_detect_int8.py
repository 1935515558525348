"""int8 (ONNX Runtime static QDQ quantisation) of the detector network: speed and cells against float32.

Issue 17 allows int8 only if the cells stay the same within the seam test's tolerance (1e-3 px).  The
float32 export (the one ``Detector.load`` makes) is quantised with ``quantize_static`` (QDQ, per-channel
int8 weights, uint8 activations, calibrated on 6 real 256 px tiles of the bundled sample slide), then:
the network alone on a 512 px tile (CPU seconds, 1 thread) and ``detect_cells`` on a 1,860 px square of
the sample slide with either session (cells matched one to one).

Usage::

    .venv/bin/python benchmarks/bench_detect_int8.py      # -> benchmarks/results/bench_detect_int8.json
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _session(path, threads=1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _cpu_seconds(sess, x, reps=3):
    sess.run(None, {"tiles": x})
    out = []
    for _ in range(reps):
        ru = resource.getrusage(resource.RUSAGE_SELF)
        c0 = ru.ru_utime + ru.ru_stime
        sess.run(None, {"tiles": x})
        ru = resource.getrusage(resource.RUSAGE_SELF)
        out.append(ru.ru_utime + ru.ru_stime - c0)
    return float(np.median(out))


def main():
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    from leukcore.detect import Detector, detect_cells
    from leukcore.detect import onnx_backend as ob
    from leukcore.detect.data import normalize_image
    from leukcore.io import open_slide
    from leukcore.sample import sample_slide_path

    det = Detector.load("wbc-stardist", device="cpu", backend="onnx", threads=1)
    fp32 = ob.detector_onnx_path(det.card, det._weights_key())
    with open_slide(sample_slide_path()) as s:
        tiles = [
            normalize_image(s.read_region(1, y, x, 256, 256)) for y in (0, 700, 1400) for x in (0, 900, 1800, 2700)
        ]

    class Calib(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"tiles": t[None]} for t in tiles[::2]])

        def get_next(self):
            return next(self.it, None)

    tmp = Path(tempfile.mkdtemp())
    quant_pre_process(str(fp32), str(tmp / "pre.onnx"), skip_symbolic_shape=True)
    quantize_static(
        str(tmp / "pre.onnx"),
        str(tmp / "int8.onnx"),
        Calib(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    f, q = _session(fp32), _session(tmp / "int8.onnx")
    x = np.stack(tiles[1::2][:4])
    (pf, df), (pq, dq) = f.run(None, {"tiles": x}), q.run(None, {"tiles": x})
    big = np.tile(x[:1], (1, 2, 2, 1))
    cpu = {"fp32": _cpu_seconds(f, big), "int8": _cpu_seconds(q, big)}
    reg = (0, 0, 1860, 1860)
    with open_slide(sample_slide_path()) as s:
        a = detect_cells(s, det, region=reg)
        det._onnx.session = q
        b = detect_cells(s, det, region=reg)
    A, B = (t.df[["centroid_y", "centroid_x"]].to_numpy() for t in (a, b))
    d = cdist(A, B)
    r, c = linear_sum_assignment(d)
    dd = d[r, c]
    m = dd < 16  # 4 um at 0.25 um/px
    out = {
        "maps_4x256px": {
            "prob_max_abs_diff": round(float(np.abs(pf - pq).max()), 4),
            "prob_mean_abs_diff": round(float(np.abs(pf - pq).mean()), 5),
            "dist_max_rel_diff": round(float(np.abs(df - dq).max() / np.abs(df).max()), 4),
        },
        "network_512px_cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "network_cpu_speedup": round(cpu["fp32"] / cpu["int8"], 2),
        "cells_region": list(reg),
        "cells_fp32": len(A),
        "cells_int8": len(B),
        "matched_4um": int(m.sum()),
        "centroid_shift_px": {"median": round(float(np.median(dd[m])), 3), "max": round(float(dd[m].max()), 3)},
        "same_within_seam_tolerance_1e-3px": int((dd < 1e-3).sum()),
        "verdict": "dropped: the cells move (seam tolerance 1e-3 px)" if (dd < 1e-3).sum() < len(A) else "same",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_detect_int8.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    t0 = time.time()
    main()
