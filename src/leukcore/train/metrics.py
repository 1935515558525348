"""Classification metrics with bootstrap confidence intervals, calibration and plots.

Every metrics dict carries the ``split_type`` it was measured on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["classification_metrics", "bootstrap_ci", "ece", "plot_confusion", "plot_roc", "macro_f1"]


def macro_f1(y_true, y_pred, n_classes: int) -> float:
    """Macro-averaged F1 over ``n_classes`` classes (a class never predicted nor present counts 0)."""
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro", zero_division=0))


def ece(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error of the top-class confidence (equal-width bins)."""
    probs = np.asarray(probs, np.float64)
    if not len(probs):
        return float("nan")
    conf = probs.max(1)
    correct = probs.argmax(1) == np.asarray(y_true)
    bins = np.linspace(0, 1, n_bins + 1)
    e = 0.0
    for lo, hi in zip(bins[:-1], bins[1:], strict=False):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            e += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(e)


def _point(y, p, C):
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    pred = p.argmax(1)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if len(np.unique(y)) > 1 else float("nan"),
        "macro_f1": float(f1_score(y, pred, labels=list(range(C)), average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y, pred, labels=list(range(C)), average="weighted", zero_division=0)),
    }


def bootstrap_ci(
    y: np.ndarray,
    p: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: Optional[np.ndarray] = None,
) -> dict:
    """Percentile bootstrap CIs of the headline metrics (resampling ``groups`` when given)."""
    import warnings

    rng = np.random.default_rng(seed)
    C = p.shape[1]
    units = np.unique(groups) if groups is not None else None
    by_unit = None
    if units is not None:
        order = np.argsort(groups, kind="stable")
        g_sorted = groups[order]
        starts = np.searchsorted(g_sorted, units)
        ends = np.searchsorted(g_sorted, units, side="right")
        by_unit = [order[s:e] for s, e in zip(starts, ends, strict=False)]
    vals: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(n_boot):
            if by_unit is None:
                idx = rng.integers(0, len(y), len(y))
            else:
                pick = rng.integers(0, len(by_unit), len(by_unit))
                idx = np.concatenate([by_unit[i] for i in pick])
            for k, v in _point(y[idx], p[idx], C).items():
                vals.setdefault(k, []).append(v)
        return {
            k: [float(np.nanpercentile(v, 100 * alpha / 2)), float(np.nanpercentile(v, 100 * (1 - alpha / 2)))]
            for k, v in vals.items()
        }


def classification_metrics(
    y_true, probs, classes: Sequence[str], *, split_type: str, n_boot: int = 1000, groups=None, seed: int = 0
) -> dict:
    """Accuracy, balanced accuracy, per-class P/R/F1, macro/weighted F1, one-vs-rest ROC AUC,
    confusion matrix, ECE and bootstrap 95 % CIs; ``split_type`` is recorded.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    y = np.asarray(y_true, int)
    p = np.asarray(probs, np.float64)
    C = len(classes)
    out = {"split_type": split_type, "n": int(len(y)), "classes": list(classes)}
    if not len(y):
        return out
    out.update(_point(y, p, C))
    pr, rc, f1, sup = precision_recall_fscore_support(y, p.argmax(1), labels=list(range(C)), zero_division=0)
    out["per_class"] = {
        c: {"precision": float(pr[i]), "recall": float(rc[i]), "f1": float(f1[i]), "support": int(sup[i])}
        for i, c in enumerate(classes)
    }
    auc = {}
    for i, c in enumerate(classes):
        yy = (y == i).astype(int)
        auc[c] = float(roc_auc_score(yy, p[:, i])) if 0 < yy.sum() < len(yy) else float("nan")
    out["roc_auc_ovr"] = auc
    vals = [v for v in auc.values() if v == v]
    out["roc_auc_macro"] = float(np.mean(vals)) if vals else float("nan")
    out["confusion_matrix"] = confusion_matrix(y, p.argmax(1), labels=list(range(C))).tolist()
    out["ece"] = ece(p, y)
    if n_boot:
        out["ci95"] = bootstrap_ci(
            y, p, n_boot=n_boot, seed=seed, groups=None if groups is None else np.asarray(groups)
        )
    return out


def _pyplot():
    """Matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_png(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically and close it."""
    from ..results import atomic_path

    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    _pyplot().close(fig)
    return path


def plot_confusion(cm, classes, path: str | Path, title: str = "") -> Path:
    """Draw the confusion matrix ``cm`` (rows: truth) to ``path``; returns ``path``."""
    plt = _pyplot()
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(classes), 1 + 0.9 * len(classes)), dpi=110)
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
                fontsize=9,
            )
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return _save_png(fig, path)


def plot_roc(y_true, probs, classes, path: str | Path, title: str = "") -> Path:
    """Draw one-vs-rest ROC curves (with AUC) of ``probs`` to ``path``; returns ``path``."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    y = np.asarray(y_true)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    for i, c in enumerate(classes):
        yy = (y == i).astype(int)
        if 0 < yy.sum() < len(yy):
            fpr, tpr, _ = roc_curve(yy, probs[:, i])
            ax.plot(fpr, tpr, label=f"{c} (AUC {roc_auc_score(yy, probs[:, i]):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return _save_png(fig, path)
