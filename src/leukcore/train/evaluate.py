"""Held-out evaluation (``leuk eval``): CNN metrics, the colour-only baseline, the stain-swap test.

Everything is measured on the config's held-out ``test`` split (never used for training or model
selection) and reported at two levels:

``cells``   one row per detected cell crop (CIs resample whole images)
``images``  per image, mean class probability over its cells (the rule ``leuk classify`` uses for fields)

Beside every CNN number stands a colour-only baseline (per-crop RGB and LAB mean/std, 12 numbers,
standardised, logistic regression trained on the training cells) so a stain shortcut shows.
The stain-swap test re-stains every held-out field (Reinhard transfer in LAB) to the average LAB
mean/std of the training fields of another stain group (class folder), cycling through the others,
re-crops the same cells and classifies again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .metrics import classification_metrics, plot_confusion, plot_roc

__all__ = ["evaluate_model", "EvalOptions", "colour_features", "ColourBaseline", "stain_swap_crops", "image_level"]


def colour_features(crops: np.ndarray) -> np.ndarray:
    """12 colour numbers per crop: mean and std of R, G, B and of L, a, b."""
    from skimage.color import rgb2lab

    x = crops.reshape(len(crops), -1, 3).astype(np.float32)
    lab = np.stack([rgb2lab(c).reshape(-1, 3) for c in crops]) if len(crops) else np.zeros((0, 1, 3))
    return np.concatenate([x.mean(1), x.std(1), lab.mean(1), lab.std(1)], axis=1)


class ColourBaseline:
    """Per-crop colour statistics + logistic regression (class-balanced)."""

    def fit(self, crops, y):
        """The baseline fitted to RGB ``crops`` (N, H, W, 3) with class indices ``y`` (returns itself)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, class_weight="balanced"))
        self.model.fit(colour_features(crops), y)
        return self

    def predict_proba(self, crops, C: int):
        """The class probabilities (N, ``C``) of ``crops``; a class absent from the training cells gets 0."""
        p = np.zeros((len(crops), C))
        if len(crops):
            p[:, self.model.classes_] = self.model.predict_proba(colour_features(crops))
        return p


def image_level(probs, rows, labels_by_row, how: str = "mean_prob", max_cells: Optional[int] = None):
    """Per image, its cells' probabilities aggregated (``how``, see :mod:`leukcore.classify.fields`)
    -> (image rows, y, probs).  ``max_cells`` keeps only each image's first cells (ablation).
    """
    from ..classify.fields import aggregate_cells

    rows = np.asarray(rows)
    u = np.unique(rows)
    P = (
        np.stack([aggregate_cells(probs[rows == r][:max_cells], how) for r in u])
        if len(u)
        else np.zeros((0, probs.shape[1]))
    )
    return u, np.asarray(labels_by_row)[u], P


def _field_acc(probs, rows, labels_by_row, how, max_cells=None, review_threshold=None, blast=(None, None)) -> float:
    """Field accuracy; with ``review_threshold`` a field that ``leuk classify`` holds for review (no call:
    :func:`leukcore.results.held_for_review`, the one rule) counts as wrong, as the cross-source benchmarks
    count it.  ``blast`` is ``(blast threshold, class names)``: a one-cell image's blast call below the
    threshold is held too.
    """
    from ..results import held_for_review

    u, y, P = image_level(probs, rows, labels_by_row, how, max_cells)
    if not len(u):
        return float("nan")
    ok = P.argmax(1) == y
    if review_threshold is not None:
        tb, classes = blast
        n_cells = np.minimum(np.unique(np.asarray(rows), return_counts=True)[1], max_cells or np.inf)
        calls = np.asarray(classes, dtype=object)[P.argmax(1)] if classes is not None else np.full(len(u), "")
        ok &= ~held_for_review(
            P.max(1), calls, float(review_threshold), tb if classes is not None else None, n_cells <= 1
        )
    return float(ok.mean())


def select_field_rule(
    val: dict, labels_by_row, tta_modes=(None, "d4"), review_threshold: Optional[float] = None, blast=(None, None)
) -> tuple[dict, list]:
    """The field rule (TTA x aggregation) with the best **validation** field accuracy.

    ``val`` maps a TTA mode to ``(probs, rows)`` of the validation cells.  With ``review_threshold`` a
    field whose top probability falls below it counts as wrong (``leuk classify`` holds it for review):
    an aggregation whose field probabilities are flatter sends more fields to review, which the argmax
    alone does not see; ``blast`` (blast threshold, class names) holds a one-cell image's unsure blast call
    too, as ``leuk classify`` does.  Ties go to the cheaper rule (no TTA first, then ``mean_prob``).  Returns
    ``(rule, table)``; ``table`` lists every rule's validation field accuracy.
    """
    from ..classify.fields import FIELD_AGGREGATIONS

    table, best = [], None
    for tta in tta_modes:
        if tta not in val:
            continue
        P, rows = val[tta]
        for how in FIELD_AGGREGATIONS:
            a = _field_acc(P, rows, labels_by_row, how, review_threshold=review_threshold, blast=blast)
            table.append({"tta": tta, "field_aggregation": how, "val_images_accuracy": a})
            if best is None or a > best[0] + 1e-12:
                best = (a, {"tta": tta, "field_aggregation": how})
    return (best[1] if best else {"tta": None, "field_aggregation": "mean_prob"}), table


def stain_swap_crops(df, cells, spec, test_rows, train_rows, *, group_col="stain_group"):
    """Re-stained crops of the test fields: returns (crops, cell_index, target_group per cell)."""
    from ..classify.crops import crops_from_array
    from .cells import load_image
    from .stain import class_lab_stats, lab_stats, reinhard, swap_targets

    fields = [r for r in test_rows if df.at[r, "kind"] == "field"]
    groups = sorted(df.loc[[r for r in train_rows if df.at[r, "kind"] == "field"], group_col].unique())
    if len(groups) < 2 or not fields:
        return None
    tr_fields = [r for r in train_rows if df.at[r, "kind"] == "field"]
    stats = class_lab_stats([df.at[r, "path"] for r in tr_fields], [df.at[r, group_col] for r in tr_fields])
    targets = swap_targets([df.at[r, group_col] for r in fields], groups)
    out_crops, out_idx, out_tgt = [], [], []
    for r, tgt in zip(fields, targets, strict=False):
        ci = np.flatnonzero(cells["row"] == r)
        if not len(ci):
            continue
        img = load_image(df.at[r, "path"])
        sw = reinhard(img, stats[tgt], lab_stats(img))
        out_crops.append(crops_from_array(sw, cells["centroid"][ci], spec, float(df.at[r, "mpp"])))
        out_idx.append(ci)
        out_tgt += [tgt] * len(ci)
    return np.concatenate(out_crops), np.concatenate(out_idx), np.array(out_tgt)


def _block(y, P, rows, classes, split_type, n_boot, groups=True):
    return classification_metrics(y, P, classes, split_type=split_type, n_boot=n_boot, groups=rows if groups else None)


@dataclass(frozen=True)
class EvalOptions:
    """How :func:`evaluate_model` evaluates (``leuk eval`` and the training run build one).

    Attributes
    ----------
    stain_swap : bool
        Also evaluate the test crops re-stained to another class's stain.
    n_boot : int
        Bootstrap resamples of the confidence intervals.
    device, backend : str
        Where and how a model given by name runs (``Classifier.load``).
    update_card : bool
        Copy the headline numbers (and the field rule) into the card when it sits in ``out_dir``.
    field_rule : "select", "card" or dict
        How an image's cells make its label (see :func:`evaluate_model`).
    tta_modes : tuple
        Test-time augmentations the ``"select"`` rule chooses among.
    """

    stain_swap: bool = True
    n_boot: int = 1000
    device: str = "auto"
    backend: str = "auto"
    update_card: bool = True
    field_rule: Optional[dict | str] = "select"
    tta_modes: tuple = (None, "d4")


def evaluate_model(
    model,
    cfg: dict,
    out_dir: Optional[str | Path] = None,
    options: Optional[EvalOptions] = None,
    *,
    prepared=None,
    baseline_cells: Optional[dict] = None,
    log=print,
) -> dict:
    """Evaluate ``model`` (name, card path, run dir or Classifier) on the config's held-out split.

    ``options``: stain swap, bootstrap, device, backend, card update, field rule, TTA modes
    (:class:`EvalOptions`; default ``EvalOptions()``).  ``prepared``: the config's prepared cells
    (default: prepared here).

    Writes ``metrics.json``, ``confusion_*.json/png`` and ``roc_*.png`` into ``out_dir`` and, when
    ``update_card`` and the card sits in ``out_dir``, copies the headline numbers (and the field rule)
    into the card.  ``baseline_cells`` (a prepared cell set) trains the colour baseline on other crops,
    e.g. when the evaluated crops exist for held-out images only.

    Field rule (how an image's cells make its label, :mod:`leukcore.classify.fields`):
    ``"select"`` picks the test-time augmentation (``tta_modes``) and aggregation with the best
    **validation** field accuracy (never the test split); ``"card"`` uses the model card's
    ``inference`` block; a dict ``{"tta", "field_aggregation"}`` fixes it.  Cell-level metrics are
    always without TTA (what the whole-slide pipeline computes); the test-split accuracy of every
    rule is reported as an ablation (``field_rule_ablation``), not used for any choice.
    """
    from ..classify.model import Classifier
    from .prepare import prepare

    o = options or EvalOptions()
    t0 = time.perf_counter()
    clf = model if isinstance(model, Classifier) else Classifier.load(model, device=o.device, backend=o.backend)
    ev = _Evaluation(clf, cfg, prepared or prepare(cfg), o.n_boot)
    rule, rule_table = ev.field_rule(o.field_rule, o.tta_modes)
    ev.predict_test(rule, rule_table, o.tta_modes)
    ev.colour_baseline(baseline_cells)
    res = ev.results(rule, rule_table, baseline_cells is not None)
    ev.pbc_and_source_blocks(res)
    if o.stain_swap:
        ev.stain_swap(res, rule)
    res["eval_s"] = round(time.perf_counter() - t0, 1)
    if out_dir is not None:
        _write(res, Path(out_dir), ev, clf, o.update_card, log)
    return res


class _Evaluation:
    """One call of :func:`evaluate_model`: the held-out cells, their predictions, the blocks of metrics."""

    def __init__(self, clf, cfg: dict, prepared, n_boot: int):
        df, classes, spec, cells = prepared
        if list(classes) != list(clf.classes):
            raise ValueError(f"model classes {clf.classes} differ from the config's {classes}")
        self.clf, self.cfg, self.n_boot = clf, cfg, n_boot
        self.df, self.classes, self.spec, self.cells = df, classes, spec, cells
        self.C = len(classes)
        self.split_type = df.attrs.get("split_type", "image-level")
        self.lab_of_row = df["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
        self.te = te = np.flatnonzero(cells["split"] == "test")
        self.test_rows = np.flatnonzero(df["split"].to_numpy() == "test")
        self.train_rows = np.flatnonzero(df["split"].to_numpy() == "train")
        self.y = cells["label"][te]
        self.rows = cells["row"][te]
        self.P = clf.predict_crops(cells["crops"][te])

    def block(self, y, P, rows, groups=True, n_boot=None):
        return _block(y, P, rows, self.classes, self.split_type, self.n_boot if n_boot is None else n_boot, groups)

    def field_rule(self, field_rule, tta_modes) -> tuple[dict, list]:
        """The field rule: chosen on the validation split (or given), then applied to the test split."""
        from ..classify.fields import field_rule as _card_rule

        clf, cells = self.clf, self.cells
        va = np.flatnonzero(cells["split"] == "val")
        rule_table: list = []
        if field_rule == "select":
            vp = {}
            for t in tta_modes:
                if len(va):
                    vp[t] = (clf.predict_crops(cells["crops"][va], tta=t), cells["row"][va])
            from ..classify.infer import review_rule

            rt, tb = review_rule(clf)
            rule, rule_table = select_field_rule(
                vp, self.lab_of_row, tta_modes, review_threshold=rt, blast=(tb, self.classes)
            )
            rule["selected_on"] = (
                f"validation split, images accuracy, a field under the review threshold {rt:g} counted wrong "
                "(ties: cheaper rule)"
            )
        elif field_rule == "card":
            rule = _card_rule(clf.card)
        else:
            rule = _card_rule({"inference": field_rule})
        return rule, rule_table

    def predict_test(self, rule: dict, rule_table: list, tta_modes) -> None:
        """Test predictions under every TTA mode; the test accuracy of each rule (ablation, not a choice)."""
        rows, lab = self.rows, self.lab_of_row
        self.Pt = Pt = {None: self.P}
        for t in set(tta_modes) | {rule["tta"]}:
            if t not in Pt:
                Pt[t] = self.clf.predict_crops(self.cells["crops"][self.te], tta=t)
        self.P_field = Pt[rule["tta"]]
        self.how = how = rule["field_aggregation"]
        for r in rule_table:
            r["test_images_accuracy"] = _field_acc(Pt[r["tta"]], rows, lab, r["field_aggregation"])
        for t in Pt:
            for h in ("mean_prob", "mean_log_prob"):
                if not any(r["tta"] == t and r["field_aggregation"] == h for r in rule_table):
                    rule_table.append(
                        {"tta": t, "field_aggregation": h, "test_images_accuracy": _field_acc(Pt[t], rows, lab, h)}
                    )
        for mc in (1, 8):
            rule_table.append(
                {
                    "tta": rule["tta"],
                    "field_aggregation": how,
                    "max_cells_per_image": mc,
                    "test_images_accuracy": _field_acc(self.P_field, rows, lab, how, mc),
                }
            )

    def colour_baseline(self, baseline_cells: Optional[dict]) -> None:
        bc = baseline_cells if baseline_cells is not None else self.cells  # colour baseline's training cells
        btr = np.flatnonzero(bc["split"] == "train")
        self.colour = ColourBaseline().fit(bc["crops"][btr], bc["label"][btr])
        self.Pc = self.colour.predict_proba(self.cells["crops"][self.te], self.C)

    def results(self, rule: dict, rule_table: list, other_baseline: bool) -> dict:
        """Cell and image metrics of the CNN and the colour baseline."""
        cells, cfg, te, y, rows, P, Pc = self.cells, self.cfg, self.te, self.y, self.rows, self.P, self.Pc
        res: dict = {
            "model": self.clf.name,
            "classes": self.classes,
            "split_type": self.split_type,
            "held_out": "test split: never used for training or model selection",
            "backend": self.clf.backend,
            "test_images": int(len(self.test_rows)),
            "test_images_without_cells": int((cells["n_cells"][self.test_rows] == 0).sum()),
            "test_cells": int(len(te)),
            "crops": cfg["data"]["finder"] + (" (held-out images only)" if cfg["data"].get("only_cached") else ""),
        }
        if other_baseline:
            res["colour_baseline_trained_on"] = "training cells of another crop source (baseline_cells)"
        res["cnn"] = {"cells": self.block(y, P, rows)}
        res["colour_baseline"] = {"cells": self.block(y, Pc, rows)}
        if len(te):
            res["cnn"]["cells_tta"] = {str(t): {"accuracy": float((self.Pt[t].argmax(1) == y).mean())} for t in self.Pt}
        res["field_rule"] = {k: v for k, v in rule.items()}
        res["field_rule_ablation"] = rule_table
        u, self.yi, self.Pi = image_level(self.P_field, rows, self.lab_of_row, self.how)
        _, _, Pci = image_level(Pc, rows, self.lab_of_row, self.how)
        res["cnn"]["images"] = self.block(self.yi, self.Pi, u, groups=False)
        res["colour_baseline"]["images"] = self.block(self.yi, Pci, u, groups=False)
        n_img = len(self.test_rows)
        res["cnn"]["images"]["accuracy_counting_images_without_cells_as_wrong"] = float(
            (self.Pi.argmax(1) == self.yi).sum() / max(1, n_img)
        )
        return res

    def pbc_and_source_blocks(self, res: dict) -> None:
        """PBC (all normal) false-positive rates and the four-class-only cell block, when both sources are in."""
        df, classes, rows, P, Pc, y = self.df, self.classes, self.rows, self.P, self.Pc, self.y
        if not ("ALL" in classes and (df["source"] == "pbc").any()):
            return
        pbc = np.isin(rows, np.flatnonzero(df["source"].to_numpy() == "pbc"))
        a = classes.index("ALL")
        if pbc.any():
            res["pbc_false_positive_rate"] = {
                "cnn": float((P[pbc].argmax(1) == a).mean()),
                "colour_baseline": float((Pc[pbc].argmax(1) == a).mean()),
                "n_cells": int(pbc.sum()),
                "per_cell_type": {
                    str(t): float((P[pbc & (np.asarray(df["cell_type"])[rows] == t)].argmax(1) == a).mean())
                    for t in sorted(set(np.asarray(df["cell_type"])[rows[pbc]]))
                },
            }
        fa = np.isin(rows, np.flatnonzero(df["source"].to_numpy() == "all4class"))
        if fa.any():
            res["cnn"]["cells_all4class_only"] = self.block(y[fa], P[fa], rows[fa], n_boot=0)

    def stain_swap(self, res: dict, rule: dict) -> None:
        """The held-out fields Reinhard-transferred to other stain groups: cell and image metrics."""
        sw = stain_swap_crops(self.df, self.cells, self.spec, self.test_rows, self.train_rows)
        if sw is None:
            return
        clf, cells, lab, how = self.clf, self.cells, self.lab_of_row, self.how
        crops_s, idx_s, tgt = sw
        ys, rs = cells["label"][idx_s], cells["row"][idx_s]
        Ps = clf.predict_crops(crops_s)
        Psf = Ps if rule["tta"] is None else clf.predict_crops(crops_s, tta=rule["tta"])
        Pcs = self.colour.predict_proba(crops_s, self.C)
        us, ysi, Psi = image_level(Psf, rs, lab, how)
        _, _, Pcsi = image_level(Pcs, rs, lab, how)
        res["stain_swap"] = {
            "method": "Reinhard LAB mean/std transfer of each held-out field to the mean of another "
            "stain group's training fields (cycling through the other groups)",
            "cnn": {"cells": self.block(ys, Ps, rs), "images": self.block(ysi, Psi, us, groups=False)},
            "colour_baseline": {"cells": self.block(ys, Pcs, rs), "images": self.block(ysi, Pcsi, us, groups=False)},
            "cnn_cells_accuracy_by_target": {
                str(t): float((Ps[tgt == t].argmax(1) == ys[tgt == t]).mean()) for t in sorted(set(tgt))
            },
        }


def headline(res: dict) -> dict:
    """The few numbers a model card shows (each with its split type)."""
    h = {"split_type": res["split_type"], "test_images": res["test_images"], "test_cells": res["test_cells"]}
    for k in ("cnn", "colour_baseline"):
        for lvl in ("cells", "images"):
            m = res[k][lvl]
            h[f"{k}_{lvl}_accuracy"] = round(m.get("accuracy", float("nan")), 4)
            h[f"{k}_{lvl}_macro_f1"] = round(m.get("macro_f1", float("nan")), 4)
            if "ci95" in m:
                h[f"{k}_{lvl}_accuracy_ci95"] = [round(v, 4) for v in m["ci95"]["accuracy"]]
    h["cnn_cells_balanced_accuracy"] = round(res["cnn"]["cells"].get("balanced_accuracy", float("nan")), 4)
    h["cnn_cells_roc_auc_macro"] = round(res["cnn"]["cells"].get("roc_auc_macro", float("nan")), 4)
    h["cnn_cells_ece"] = round(res["cnn"]["cells"].get("ece", float("nan")), 4)
    if "field_rule" in res:
        h["images_rule"] = (
            f"tta={res['field_rule'].get('tta')}, {res['field_rule'].get('field_aggregation')} "
            "over all detected cells (selected on the validation split)"
            if "selected_on" in res["field_rule"]
            else f"tta={res['field_rule'].get('tta')}, {res['field_rule'].get('field_aggregation')} over all detected cells"
        )
    if "stain_swap" in res:
        s = res["stain_swap"]
        for k in ("cnn", "colour_baseline"):
            for lvl in ("cells", "images"):
                h[f"stain_swap_{k}_{lvl}_accuracy"] = round(s[k][lvl].get("accuracy", float("nan")), 4)
    if "pbc_false_positive_rate" in res:
        h["pbc_false_positive_rate_cnn"] = round(res["pbc_false_positive_rate"]["cnn"], 4)
        h["pbc_false_positive_rate_colour_baseline"] = round(res["pbc_false_positive_rate"]["colour_baseline"], 4)
    return h


def _write(res, out: Path, ev: _Evaluation, clf, update_card, log):
    classes, y, P, yi, Pi = ev.classes, ev.y, ev.P, ev.yi, ev.Pi
    from ..results import atomic_path, json_default

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "metrics.json") as tmp:
        Path(tmp).write_text(json.dumps(res, indent=1, default=json_default))
    for lvl, (yy, pp) in {"cells": (y, P), "images": (yi, Pi)}.items():
        cm = res["cnn"][lvl].get("confusion_matrix")
        if cm is None:
            continue
        with atomic_path(out / f"confusion_{lvl}.json") as tmp:
            Path(tmp).write_text(
                json.dumps(
                    {
                        "classes": classes,
                        "matrix": cm,
                        "rows": "true",
                        "cols": "predicted",
                        "split_type": res["split_type"],
                    }
                )
            )
        plot_confusion(cm, classes, out / f"confusion_{lvl}.png", f"{clf.name} held-out {lvl} ({res['split_type']})")
        plot_roc(yy, pp, classes, out / f"roc_{lvl}.png", f"{clf.name} held-out {lvl} ({res['split_type']})")
    h = headline(res)
    log("[eval] " + json.dumps(h))
    cp = clf.card.get("_card_path")
    if update_card and cp and Path(cp).parent.resolve() == out.resolve():
        import yaml

        card = yaml.safe_load(Path(cp).read_text())
        if "field_rule" in res:
            card["inference"] = dict(res["field_rule"])
        card["metrics"] = h
        with atomic_path(cp) as tmp:
            Path(tmp).write_text(yaml.safe_dump(card, sort_keys=False))
