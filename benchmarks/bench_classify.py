"""Classification inference and training throughput (a benchmark, not a test).

For each shipped classifier (or ``--model`` cards): crops per second at batch sizes
1, 16 and 64 for eager torch, eager + channels_last, ``torch.compile`` and ONNX Runtime
(the exported model the ``auto`` backend uses on CPU), the achieved GFLOP/s of each
(model FLOPs counted with ``torch.utils.flop_counter``) beside a raw fp32 matmul
GFLOP/s measured in the same run, and whether every backend gives the same predictions.
Training throughput (images/s of the frozen feature pass and of the fine-tune phase)
is measured on random crops with the training code's own pieces.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_classify.py [--threads 1] [--model all-4class ...]

Writes ``benchmarks/results/bench_classify.json`` and prints a table.  The machine is
shared, so numbers are indicative; compare backends within one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

MIN_TIME = 1.5


def _timeit(fn, min_time=None, min_reps=3):
    min_time = MIN_TIME if min_time is None else min_time
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        el = time.perf_counter() - t0
        if el >= min_time and n >= min_reps:
            return el / n


def matmul_gflops(n=1024):
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    t = _timeit(lambda: a @ b)
    return 2 * n**3 / t / 1e9


def model_flops(net, size):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, size, size)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(x)
    return fc.get_total_flops()


def bench_model(name, batches, threads, compile_=True):
    import torch

    from leukcore.classify import Classifier
    from leukcore.classify.inputs import preprocess

    clf_t = Classifier.load(name, device="cpu", backend="torch")
    size = clf_t.spec.size
    net = clf_t.network.eval()
    flops = model_flops(net, size)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (max(batches), size, size, 3)).astype(np.uint8)
    x_all = preprocess(crops, clf_t.spec)
    ref = None
    rows = []
    backends = {}
    backends["eager"] = lambda x: net(torch.from_numpy(x))
    import copy

    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)  # a copy: eager keeps contiguous weights
    backends["channels_last"] = lambda x: net_cl(torch.from_numpy(x).to(memory_format=torch.channels_last))
    if compile_:
        try:
            comp = torch.compile(net)
            backends["torch.compile"] = lambda x: comp(torch.from_numpy(x))
        except Exception as e:  # pragma: no cover
            rows.append({"model": name, "backend": "torch.compile", "error": str(e)[:200]})
    else:
        rows.append({"model": name, "backend": "torch.compile", "error": "skipped (--no-compile)"})
    try:
        clf_o = Classifier.load(name, device="cpu", backend="onnx")
        from leukcore.classify.onnx_backend import OnnxRunner

        ort1 = OnnxRunner(clf_o._onnx.path, threads=threads)  # same thread count as torch
        backends["onnxruntime"] = lambda x: ort1(x)
    except Exception as e:  # pragma: no cover
        rows.append({"model": name, "backend": "onnxruntime", "error": str(e)[:200]})
    compile_s = {}
    for bname, fn in backends.items():
        for bs in batches:
            x = x_all[:bs]
            try:
                if bname == "torch.compile":  # first call at this batch size compiles (inductor, CPU)
                    t0 = time.perf_counter()
                    with torch.inference_mode():
                        fn(x)
                    compile_s[bs] = round(time.perf_counter() - t0, 1)
                with torch.inference_mode():
                    out = np.asarray(fn(x_all[:16]))
                    same = None
                    if ref is None:
                        ref = out
                    same = bool((out.argmax(1) == ref.argmax(1)).all() and np.allclose(out, ref, atol=1e-3))
                    t = _timeit(lambda fn=fn, x=x: fn(x))
            except Exception as e:
                msg = (str(e).splitlines() or [type(e).__name__])[0][:300]
                rows.append({"model": name, "backend": bname, "batch": bs, "error": f"{type(e).__name__}: {msg}"})
                continue
            row = {
                "model": name,
                "backend": bname,
                "batch": bs,
                "crops_per_s": round(bs / t, 1),
                "gflops_per_s": round(flops * bs / t / 1e9, 2),
                "same_predictions_as_eager": same,
            }
            if bname == "torch.compile":
                row["first_call_s"] = compile_s.get(bs)
            rows.append(row)
    # end to end: preprocess + the auto backend through predict_crops
    clf_a = Classifier.load(name, device="cpu", backend="auto")
    t = _timeit(lambda: clf_a.predict_crops(crops[:64]))
    rows.append(
        {
            "model": name,
            "backend": f"predict_crops[{clf_a.backend}] (incl. preprocessing)",
            "batch": 64,
            "crops_per_s": round(64 / t, 1),
        }
    )
    return {"model": name, "input_size": size, "gflop_per_crop": round(flops / 1e9, 4), "rows": rows}


def bench_training(size=96, n=128):
    import torch

    from leukcore.classify.geometry import CropSpec
    from leukcore.classify.network import build_network
    from leukcore.train.features import pooled_features, split_network, trunk_features

    spec = CropSpec(size=size)
    net = build_network("tf_efficientnet_lite0", 4)
    trunk, top = split_network(net, 2)
    crops = np.random.default_rng(0).integers(0, 255, (n, size, size, 3)).astype(np.uint8)
    dev = torch.device("cpu")
    t0 = time.perf_counter()
    f = trunk_features(trunk, crops, spec, dev)
    frozen = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    pooled_features(top, f, dev)
    pooled = n / (time.perf_counter() - t0)
    opt = torch.optim.AdamW(top.parameters(), lr=1e-4)
    y = torch.zeros(64, dtype=torch.long)
    top.train()
    t0 = time.perf_counter()
    for i in range(0, n, 64):
        loss = torch.nn.functional.cross_entropy(
            top(torch.from_numpy(f[i : i + 64].astype(np.float32))), y[: len(f[i : i + 64])]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    fine = n / (time.perf_counter() - t0)
    # full-network fine-tune (no cache), for comparison
    opt2 = torch.optim.AdamW(net.parameters(), lr=1e-4)
    from leukcore.classify.inputs import preprocess

    x = torch.from_numpy(preprocess(crops[:32], spec))
    t0 = time.perf_counter()
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(net(x), torch.zeros(32, dtype=torch.long))
        opt2.zero_grad()
        loss.backward()
        opt2.step()
    full = 64 / (time.perf_counter() - t0)
    return {
        "input_size": size,
        "frozen_trunk_features_images_per_s": round(frozen, 1),
        "frozen_top_pooled_images_per_s": round(pooled, 1),
        "finetune_top_from_cache_images_per_s": round(fine, 1),
        "finetune_full_network_images_per_s": round(full, 1),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="model name or card (default: shipped classifiers)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_classify.json"))
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile on CPU)")
    ap.add_argument("--min-time", type=float, default=1.5, help="seconds timed per measurement")
    args = ap.parse_args(argv)
    global MIN_TIME
    MIN_TIME = args.min_time
    import torch

    from leukcore.models.registry import list_models

    torch.set_num_threads(args.threads)
    models = args.model or list_models("classification")
    res = {
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "threads": args.threads,
            "cpu_count": __import__("os").cpu_count(),
            "note": "shared 2-core machine; wall-clock numbers are indicative",
        },
        "matmul_gflops_fp32": round(matmul_gflops(), 2),
        "models": [],
        "training": None,
    }
    for m in models:
        res["models"].append(bench_model(m, args.batches, args.threads, compile_=not args.no_compile))
    res["training"] = bench_training()
    res["matmul_gflops_fp32_end"] = round(matmul_gflops(), 2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(
        f"raw fp32 matmul: {res['matmul_gflops_fp32']} GFLOP/s (start), {res['matmul_gflops_fp32_end']} (end); "
        f"threads={args.threads}"
    )
    print(f"{'model':12} {'backend':44} {'batch':>5} {'crops/s':>9} {'GFLOP/s':>8} same")
    for m in res["models"]:
        for r in m["rows"]:
            if "error" in r:
                print(f"{m['model']:12} {r['backend']:44} {r.get('batch', ''):>5} error: {r['error'][:60]}")
            else:
                print(
                    f"{m['model']:12} {r['backend']:44} {r['batch']:>5} {r['crops_per_s']:>9} "
                    f"{r.get('gflops_per_s', ''):>8} {r.get('same_predictions_as_eager', '')}"
                    + (f"  (first call {r['first_call_s']} s)" if r.get("first_call_s") is not None else "")
                )
    print("training (images/s):", json.dumps(res["training"]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
