"""Out-of-distribution (OOD) score of a classifier: how unlike its training cells a cell is.

A cell whose score is above the card's threshold goes to ``review`` with reason ``"ood"``, never
silently to a class (issue 14: a cell from another lab must not become a blast because the network
is confident about something it never saw).

The score is the class-conditional **Mahalanobis distance** of the network's pooled (penultimate)
features to the training class means under one shared covariance (Lee et al., NeurIPS 2018), the
minimum over classes.  The covariance is shrunk towards a multiple of the identity and kept as its
top ``k`` principal directions plus one isotropic variance for the rest (probabilistic PCA), so the
statistics stay small (a ``1280 x 256`` basis: 1.3 MB) and the distance stays defined off the span of
the training features::

    d_c = f - mu_c;  z = V^T d_c;  q_c = sum(z^2 / lambda) + (|d_c|^2 - |z|^2) / lambda_rest
    score = sqrt(min_c q_c / D)          (about 1 for a typical training cell)

The statistics are computed from the model's own training crops
(``benchmarks/calibrate_review.py --ood``), written to ``<name>.ood.safetensors`` beside the weights and
named in the card's ``review.ood`` block with their sha256 (checked when read; read lazily, offline).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["OodStats", "fit_ood", "save_ood", "load_ood", "ood_block", "OOD_SCORE_NAME"]

#: the name of the score in the card's ``review.ood.score``
OOD_SCORE_NAME = "mahalanobis-pca"


@dataclass
class OodStats:
    """Class means ``(C, D)``, basis ``(D, k)``, its variances ``(k,)`` and the rest's variance."""

    means: np.ndarray
    basis: np.ndarray
    variances: np.ndarray
    rest_variance: float

    @property
    def dim(self) -> int:
        """Feature dimension ``D``."""
        return int(self.means.shape[1])

    def score(self, features: np.ndarray, batch: int = 4096) -> np.ndarray:
        """OOD score ``(N,)`` float32 of pooled features ``(N, D)`` (higher: less like training)."""
        f = np.asarray(features, np.float64)
        if f.ndim != 2 or f.shape[1] != self.dim:
            raise ValueError(f"OOD statistics need (N, {self.dim}) features, got {f.shape}")
        out = np.empty(len(f), np.float64)
        V = self.basis.astype(np.float64)
        iv = 1.0 / self.variances.astype(np.float64)
        for i in range(0, len(f), batch):
            q = None
            for mu in self.means.astype(np.float64):
                d = f[i : i + batch] - mu
                z = d @ V
                zz = (z * z).sum(1)
                qc = (z * z) @ iv + np.maximum((d * d).sum(1) - zz, 0.0) / self.rest_variance
                q = qc if q is None else np.minimum(q, qc)
            out[i : i + batch] = q
        return np.sqrt(out / self.dim).astype(np.float32)

    def tensors(self) -> dict:
        """The arrays as safetensors stores them."""
        # C order: safetensors writes the buffer as it lies (an F-ordered basis would come back transposed)
        return {
            "means": np.ascontiguousarray(self.means, np.float32),
            "basis": np.ascontiguousarray(self.basis, np.float32),
            "variances": np.ascontiguousarray(self.variances, np.float32),
            "rest_variance": np.asarray([self.rest_variance], np.float32),
        }


def fit_ood(features: np.ndarray, labels: np.ndarray, *, k: int = 256, shrinkage: float = 0.05) -> OodStats:
    """Fit the statistics on training features ``(N, D)`` and class indices ``(N,)``.

    ``shrinkage``: the shared within-class covariance ``S`` becomes ``(1 - a) S + a tr(S)/D I``;
    ``k``: principal directions kept (the remaining variance is averaged into one number).
    """
    f = np.asarray(features, np.float64)
    y = np.asarray(labels)
    classes = np.unique(y)
    means = np.stack([f[y == c].mean(0) for c in classes])
    r = f - means[np.searchsorted(classes, y)]
    S = (r.T @ r) / max(len(r) - len(classes), 1)
    D = S.shape[0]
    S = (1.0 - shrinkage) * S + shrinkage * np.trace(S) / D * np.eye(D)
    w, V = np.linalg.eigh(S)
    order = np.argsort(w)[::-1]
    w, V = w[order], V[:, order]
    k = int(min(k, D - 1))
    rest = float(w[k:].mean())
    return OodStats(
        means=np.ascontiguousarray(means, np.float32),
        basis=np.ascontiguousarray(V[:, :k], np.float32),
        variances=np.ascontiguousarray(w[:k], np.float32),
        rest_variance=rest,
    )


def save_ood(stats: OodStats, path) -> str:
    """Write ``stats`` with safetensors (atomically); returns the file's sha256."""
    from safetensors.numpy import save_file

    from ..hashing import sha256_file
    from ..results import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(stats.tensors(), str(tmp), metadata={"score": OOD_SCORE_NAME})
    return sha256_file(path)


def ood_block(card: Optional[dict]) -> Optional[dict]:
    """The card's ``review.ood`` block when it names a statistics file, else ``None``."""
    ood = ((card or {}).get("review") or {}).get("ood")
    return dict(ood) if isinstance(ood, dict) and ood.get("file") else None


def load_ood(card: dict) -> Optional[OodStats]:
    """The card's OOD statistics (``None`` when it names none); the file's sha256 must match the card's."""
    from safetensors.numpy import load_file

    from ..hashing import sha256_file
    from ..models.registry import ModelError

    ood = ood_block(card)
    if ood is None:
        return None
    if ood.get("score", OOD_SCORE_NAME) != OOD_SCORE_NAME:
        raise ModelError(f"{card.get('_card_path')}: unknown review.ood.score {ood.get('score')!r}")
    path = Path(card.get("_card_path", ".")).parent / ood["file"]
    if not path.exists():
        raise ModelError(f"{path}: OOD statistics file missing for model {card.get('name')!r}")
    got = sha256_file(path)
    if not ood.get("sha256"):
        raise ModelError(f"{card.get('_card_path')}: review.ood gives no sha256 for {path.name}")
    if got != ood["sha256"]:
        raise ModelError(
            f"{path}: sha256 {got[:12]}... does not match the model card "
            f"({str(ood['sha256'])[:12]}...); the file is corrupt or was replaced"
        )
    t = load_file(str(path))
    return OodStats(
        means=t["means"], basis=t["basis"], variances=t["variances"], rest_variance=float(t["rest_variance"][0])
    )
