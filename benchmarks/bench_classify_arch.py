"""Architecture comparison of classifiers trained with one recipe (``leuk train CONFIG --arch NAME``).

For each run directory (or card): the parameter count, CPU crops/s (one thread, the backend ``leuk classify``
uses), the in-source held-out figures its training run wrote into the card (image-level test split), and the
cross-source figures through the ``leuk classify`` path without ``--mpp`` on the four-class fields and their
re-stained copies (:mod:`leukcore.train.crosssource`; ``--split val`` to choose, ``test`` to report).

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


def measure(model: str, data: Path, split: str, n_fields: int) -> dict:
    """One row of the table for ``model`` (run directory or card)."""
    from leukcore.classify import Classifier
    from leukcore.train.crosssource import CrossSourceOptions, cross_source_eval

    card_path = Path(model) / "model.yaml" if Path(model).is_dir() else model
    clf = Classifier.load(str(card_path), device="cpu")
    m = clf.card.get("metrics", {})
    net = getattr(clf, "network", None)
    res = cross_source_eval(clf, data, CrossSourceOptions(sets=("four-class",), n_fields=n_fields, split=split))
    sets = res["sets"]
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
    }


def main(argv=None) -> int:
    import torch

    from leukcore.train.datasets import data_root

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="run directories or model cards")
    ap.add_argument("--data", default=None, help="data folder (default $LEUK_DATA or ../shared/data)")
    ap.add_argument("--split", choices=("test", "val"), default="val", help="four-class split of the cross-source run")
    ap.add_argument("--n-fields", type=int, default=150)
    ap.add_argument("--out", default="benchmarks/results/bench_classify_arch.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = Path(a.data) if a.data else data_root()
    out = Path(a.out)
    rows = json.loads(out.read_text()) if out.exists() else {}
    for m in a.models:
        print(f"[arch] {m}", file=sys.stderr)
        r = measure(m, data, a.split, a.n_fields)
        rows[f"{r['architecture']}@{m}@{a.split}"] = r
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1, default=float))
    print(f"{'architecture':26}{'params':>10}{'crops/s':>9}{'in-src img':>11}{'swap img':>9}{'x-src':>7}{'re-st.':>7}")
    for r in rows.values():
        print(
            f"{r['architecture']:26}{(r['params'] or 0) / 1e6:>9.2f}M{r['crops_per_s_cpu_1_thread']:>9.1f}"
            f"{r['in_source_test_images_accuracy'] or float('nan'):>11.3f}"
            f"{r['in_source_stain_swap_images_accuracy'] or float('nan'):>9.3f}"
            f"{r['four_class_no_mpp']:>7.3f}{r['four_class_restained_no_mpp']:>7.3f}"
        )
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
