"""Architecture comparison of classifiers trained with one recipe (``leuk train CONFIG --arch NAME``).

For each run directory (or card): the parameter count, CPU crops/s (one thread, the backend ``leuk classify``
uses), the training time its card records, the in-source held-out figures its training run wrote into the card
(image-level test split), and figures through the ``leuk classify`` path without ``--mpp``
(:mod:`leukcore.train.crosssource`): the four-class fields and their re-stained copies (``--split val`` to
choose, ``test`` to report), and normal white cells of two labs the four-class models never saw (Zheng 2018,
evaluation-only; PBC, source-level) called a blast class (Early / Pre / Pro).

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_classify_arch.py runs/all-4class-v4 runs/arch-lite1 \
        [--split val] [--n-fields 150] [--out benchmarks/results/bench_classify_arch.json]

Writes JSON (one entry per model) and prints a short table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def crops_per_second(clf, n: int = 256) -> float:
    """CPU crops/s of ``clf.predict_crops`` on random crops (``bench_classify``'s timing loop)."""
    from bench_classify import _timeit

    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(n, clf.spec.size, clf.spec.size, 3), dtype=np.uint8)
    return n / _timeit(lambda: clf.predict_crops(crops))


def measure(model: str, data: Path, split: str, n_fields: int, n_per_type: int = 40) -> dict:
    """One row of the table for ``model`` (run directory or card)."""
    from leukcore.classify import Classifier
    from leukcore.train.crosssource import CrossSourceOptions, cross_source_eval

    card_path = Path(model) / "model.yaml" if Path(model).is_dir() else model
    clf = Classifier.load(str(card_path), device="cpu")
    m = clf.card.get("metrics", {})
    net = getattr(clf, "network", None)
    opts = CrossSourceOptions(
        sets=("four-class", "zheng", "pbc"), n_fields=n_fields, split=split, n_per_type=n_per_type
    )
    sets = cross_source_eval(clf, data, opts)["sets"]
    timings = clf.card.get("training", {}).get("timings", {})
    return {
        "model": str(model),
        "architecture": clf.card.get("architecture", {}).get("name"),
        "imagenet_init": clf.card.get("training", {}).get("imagenet_init"),
        "params": int(sum(p.numel() for p in net.parameters())) if net is not None else None,
        "crops_per_s_cpu_1_thread": round(crops_per_second(clf), 1),
        "in_source_test_images_accuracy": m.get("cnn_images_accuracy"),
        "in_source_test_cells_accuracy": m.get("cnn_cells_accuracy"),
        "in_source_stain_swap_images_accuracy": m.get("stain_swap_cnn_images_accuracy"),
        "split_type": m.get("split_type", "image-level"),
        "cross_source_split": split,
        "four_class_no_mpp": sets["four-class"]["accuracy"],
        "four_class_restained_no_mpp": sets["four-class-restained"]["accuracy"],
        "four_class_ece": sets["four-class"]["ece"],
        "train_total_s": timings.get("total_s"),
        "train_phase2_s": timings.get("phase2_s"),
        **{f"{k}_normal_called_blast": sets[k]["false_positive_rate"] if k in sets else None for k in ("zheng", "pbc")},
        **{f"{k}_split": sets[k]["split"] for k in ("zheng", "pbc") if k in sets},
    }


def main(argv=None) -> int:
    import torch

    from leukcore.train.datasets import data_root

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="run directories or model cards")
    ap.add_argument("--data", default=None, help="data folder (default $LEUK_DATA or ../shared/data)")
    ap.add_argument("--split", choices=("test", "val"), default="val", help="four-class split of the cross-source run")
    ap.add_argument("--n-fields", type=int, default=150)
    ap.add_argument("--n-per-type", type=int, default=40, help="Zheng / PBC normal cells per cell type")
    ap.add_argument("--out", default="benchmarks/results/bench_classify_arch.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = Path(a.data) if a.data else data_root()
    out = Path(a.out)
    rows = json.loads(out.read_text()) if out.exists() else {}
    for m in a.models:
        print(f"[arch] {m}", file=sys.stderr)
        r = measure(m, data, a.split, a.n_fields, a.n_per_type)
        rows[f"{r['architecture']}@{m}@{a.split}"] = r
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1, default=float))
    print(_table(rows))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _table(rows: dict) -> str:
    """The short table: one line per measured model and split."""
    nan = float("nan")
    lines = [
        f"{'architecture':22}{'split':>6}{'params':>9}{'crops/s':>9}{'train min':>10}{'in-src img':>11}"
        f"{'swap img':>9}{'fields':>8}{'re-st.':>8}{'Zheng FP':>9}{'PBC FP':>8}"
    ]
    for r in rows.values():
        zf, pf = r.get("zheng_normal_called_blast"), r.get("pbc_normal_called_blast")
        lines.append(
            f"{r['architecture']:22}{r['cross_source_split']:>6}{(r['params'] or 0) / 1e6:>8.2f}M"
            f"{r['crops_per_s_cpu_1_thread']:>9.1f}{(r.get('train_total_s') or nan) / 60:>10.1f}"
            f"{r['in_source_test_images_accuracy'] or nan:>11.3f}{r['in_source_stain_swap_images_accuracy'] or nan:>9.3f}"
            f"{r['four_class_no_mpp']:>8.3f}{r['four_class_restained_no_mpp']:>8.3f}"
            f"{nan if zf is None else zf:>9.3f}{nan if pf is None else pf:>8.3f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
