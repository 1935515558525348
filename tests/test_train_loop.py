"""End-to-end training on a tiny synthetic folder dataset: config, two phases, resume, card, eval, CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def _make_dataset(root, n=14):
    """Two classes of centred 'cells': round vs. square nuclei, random stain colours (shape is the signal)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    for c in ("round", "square"):
        for i in range(n):
            img = np.full((48, 48, 3), 225, np.uint8)
            col = rng.integers(40, 200, 3)
            r = rng.integers(9, 13)
            m = (
                ((yy - 24) ** 2 + (xx - 24) ** 2 <= r * r)
                if c == "round"
                else ((abs(yy - 24) <= r * 0.85) & (abs(xx - 24) <= r * 0.85))
            )
            img[m] = col
            img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
            (root / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / c / f"{c}{i}.png")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import yaml

    tmp = tmp_path_factory.mktemp("train")
    data = tmp / "data"
    _make_dataset(data)
    cfg = {
        "name": "shapes",
        "classes": ["round", "square"],
        "data": {
            "datasets": [{"reader": "folder", "root": str(data), "mpp": 0.5, "kind": "cell"}],
            "finder": "centre",
            "test_frac": 0.25,
            "val_frac": 0.2,
        },
        "model": {"input": {"size": 32, "crop_um": 20.0, "mode": "lstd"}},
        "train": {
            "views": 2,
            "phase1": {"epochs": 12, "lr": 0.01, "patience": 20},
            "phase2": {"epochs": 2, "lr": 0.0003, "finetune_stages": 1, "patience": 5, "schedule": "cosine"},
        },
        "eval": {"n_boot": 50},
    }
    cpath = tmp / "shapes.yaml"
    cpath.write_text(yaml.safe_dump(cfg))
    return tmp, cpath


@pytest.mark.slow
def test_train_resume_card_eval_and_cli(trained, monkeypatch):
    monkeypatch.setenv("LEUK_CACHE", str(trained[0] / "cache"))
    from leukcore.classify import Classifier
    from leukcore.train.config import load_config
    from leukcore.train.loop import train_classifier

    tmp, cpath = trained
    cfg = load_config(cpath)
    run = train_classifier(cfg, tmp / "run", log=lambda *a: None)
    for f in (
        "config.yaml",
        "splits.csv",
        "checkpoint.pt",
        "history.json",
        "model.safetensors",
        "model.yaml",
        "metrics.json",
        "confusion_cells.png",
        "confusion_cells.json",
        "roc_cells.png",
    ):
        assert (run / f).exists(), f
    hist = json.loads((run / "history.json").read_text())
    assert [h["phase"] for h in hist].count(2) == 2 and hist[0]["phase"] == 1
    assert [h["lr"] for h in hist if h["phase"] == 2] == pytest.approx([3e-4, 1.5e-4])  # cosine over 2 epochs
    assert hist[0]["loss"] == pytest.approx(np.log(2), abs=0.2)  # zero-initialised head
    m = json.loads((run / "metrics.json").read_text())
    assert m["split_type"] == "image-level"
    assert m["cnn"]["cells"]["split_type"] == "image-level" and m["colour_baseline"]["cells"]["n"] == m["test_cells"]
    assert m["cnn"]["cells"]["accuracy"] >= 0.7  # shape is learnable
    # the field rule was chosen on the validation split and written into the card
    assert m["field_rule"]["selected_on"].startswith("validation") and m["field_rule"]["tta"] in (None, "flip")
    assert {(r["tta"], r["field_aggregation"]) for r in m["field_rule_ablation"] if "val_images_accuracy" in r} == {
        (None, "mean_prob"),
        (None, "mean_log_prob"),
        ("flip", "mean_prob"),
        ("flip", "mean_log_prob"),
    }
    clf = Classifier.load(run, device="cpu", backend="torch")
    assert clf.card["inference"]["field_aggregation"] == m["field_rule"]["field_aggregation"]
    assert clf.classes == ["round", "square"] and clf.card["metrics"]["split_type"] == "image-level"
    assert clf.card["training"]["split_type"] == "image-level"

    # resume: a finished run resumed with more phase-2 epochs continues from its checkpoint
    cfg["train"]["phase2"]["epochs"] = 3
    run2 = train_classifier(cfg, run, resume=True, evaluate=False, log=lambda *a: None)
    hist2 = json.loads((run2 / "history.json").read_text())
    assert len(hist2) == len(hist) + 1 and hist2[-1]["epoch"] == 2 and hist2[: len(hist)] == hist

    # leuk classify --json on one image (whole-image rule: a cell crop)
    img = next((tmp / "data" / "round").glob("*.png"))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "leukcore.cli",
            "classify",
            str(img),
            "--model",
            str(run / "model.yaml"),
            "--json",
            "--kind",
            "cell",
            "--backend",
            "torch",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ},
    )
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    assert rec["path"] == str(img) and rec["label"] in ("round", "square")
    assert set(rec["probabilities"]) == {"round", "square"}
    assert sum(rec["probabilities"].values()) == pytest.approx(1, abs=1e-4)

    # leuk eval re-selecting the field rule on the validation split among the given TTA modes
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "leukcore.cli",
            "eval",
            "--model",
            str(run / "model.yaml"),
            "--field-rule",
            "select",
            "--tta",
            "none",
            "d4",
            "--no-stain-swap",
            "--n-boot",
            "20",
            "--backend",
            "torch",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    ev = json.loads(out.stdout)
    assert ev["field_rule"]["tta"] in (None, "d4") and "stain_swap" not in ev
    assert {r["tta"] for r in ev["field_rule_ablation"]} == {None, "d4"}


def test_config_errors(tmp_path):
    from leukcore.train.config import resolve_config

    with pytest.raises(ValueError, match="schedule"):
        resolve_config({"data": {"datasets": [{"reader": "all4class"}]}, "train": {"phase2": {"schedule": "step"}}})
    with pytest.raises(ValueError, match="max_train_cells_per_image"):
        resolve_config({"data": {"datasets": [{"reader": "all4class"}], "max_train_cells_per_image": 0}})
    from leukcore.train.config import load_config

    p = tmp_path / "c.yaml"
    p.write_text("name: x\ndata: {datasets: [{reader: nope}]}\n")
    with pytest.raises(ValueError, match="unknown reader"):
        load_config(p)
    p.write_text("name: x\n")
    with pytest.raises(ValueError, match="datasets is empty"):
        load_config(p)
    t = tmp_path / "c.toml"
    t.write_text('name = "x"\n[[data.datasets]]\nreader = "all4class"\n[train]\nviews = 3\n')
    cfg = load_config(t)
    assert cfg["train"]["views"] == 3 and cfg["train"]["phase1"]["epochs"] == 40
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "none.yaml")
