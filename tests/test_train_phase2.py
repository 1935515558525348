"""Phase 2 of classifier training: the network split, the schedule and wall-clock budget, whole-network training."""

import json

import numpy as np
import pytest

from test_train_loop import _make_dataset


def _x(n=2, size=32):
    import torch

    return torch.from_numpy(np.random.default_rng(0).normal(size=(n, 3, size, size)).astype(np.float32))


def test_whole_network_split_is_the_network_for_any_family():
    import torch

    from leukcore.classify.network import build_network
    from leukcore.train.features import split_network

    net = build_network("resnet10t", 3).eval()
    trunk, top = split_network(net, "all")
    assert not list(trunk.parameters())  # nothing frozen: the cache holds the preprocessed crops
    x = _x()
    with torch.no_grad():
        assert torch.equal(trunk(x), x)
        assert torch.allclose(top.eval()(trunk(x)), net(x))
        assert top.pooled(x).shape == (2, net.num_features)
    assert {id(p) for p in top.parameters()} == {id(p) for p in net.parameters()}
    with pytest.raises(ValueError, match="finetune_stages: all"):  # a ResNet has no EfficientNet stages to split
        split_network(net, 2)


def test_stage_split_keeps_the_network_output():
    import torch

    from leukcore.classify.network import build_network
    from leukcore.train.features import split_network

    net = build_network("tf_efficientnet_lite0", 4).eval()
    trunk, top = split_network(net, 2)
    top.eval()
    with torch.no_grad():
        assert torch.allclose(top(trunk(_x())), net(_x()), atol=1e-5)
    n_top = {id(p) for p in top.parameters()} - {id(p) for p in trunk.parameters()}
    assert 0 < len(n_top) < len(list(net.parameters()))


def test_budget_schedules(monkeypatch):
    from leukcore.train import phase2

    assert phase2.Budget(lr=0.01, epochs=4).lr_at(3) == 0.01
    b = phase2.Budget(lr=0.01, epochs=4, schedule="cosine")
    assert [b.lr_at(e) for e in range(3)] == pytest.approx([0.01, 0.01 * 0.5 * (1 + np.cos(np.pi / 4)), 0.005])
    assert not b.over()  # no budget: never over
    now = [1000.0]
    monkeypatch.setattr(phase2.time, "perf_counter", lambda: now[0])
    tb = phase2.Budget(lr=0.01, epochs=100, schedule="cosine", minutes=2.0, spent_s=30.0)  # a resumed run
    assert tb.elapsed_s() == pytest.approx(30.0)
    assert tb.lr_at(0) == pytest.approx(0.01 * 0.5 * (1 + np.cos(np.pi * 0.25)))  # the time, not the epoch
    assert not tb.over()
    now[0] += 60.0
    assert tb.lr_at(99) == pytest.approx(0.005 * (1 + np.cos(np.pi * 0.75)))
    now[0] += 30.0
    assert tb.over() and tb.lr_at(1) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="schedule"):
        phase2.Budget(lr=0.01, epochs=1, schedule="linear")
    with pytest.raises(ValueError, match="minutes"):
        phase2.Budget(lr=0.01, epochs=1, minutes=0)


def test_make_batches_cover_or_balance():
    from leukcore.train.phase2 import class_weights, make_batches

    y = np.array([0] * 90 + [1] * 10)
    b = make_batches(100, 32, np.random.default_rng(0), y, "loss", 2)
    assert [len(x) for x in b] == [32, 32, 32, 4] and sorted(np.concatenate(b)) == list(range(100))
    s = np.concatenate(make_batches(100, 32, np.random.default_rng(0), y, "sampler", 2))
    assert 0.3 < np.mean(y[s]) < 0.7  # the rare class drawn about as often as the common one
    assert class_weights(y, 2).tolist() == pytest.approx([100 / 180, 100 / 20]) and class_weights(y, 3)[2] == 0


@pytest.mark.slow
def test_whole_network_from_random_weights_within_a_budget(tmp_path, monkeypatch):
    """A ResNet trained whole from random weights: no head phase, BatchNorm learned, stopped by the budget."""
    monkeypatch.setenv("LEUK_CACHE", str(tmp_path / "cache"))
    from leukcore.classify import Classifier
    from leukcore.classify.network import build_network
    from leukcore.train.loop import train_classifier

    _make_dataset(tmp_path / "data", n=10)
    cfg = {
        "name": "shapes-scratch",
        "classes": ["round", "square"],
        "data": {
            "datasets": [{"reader": "folder", "root": str(tmp_path / "data"), "mpp": 0.5, "kind": "cell"}],
            "finder": "centre",
            "test_frac": 0.25,
            "val_frac": 0.2,
        },
        "model": {"architecture": "resnet10t", "imagenet": "none", "input": {"size": 32, "crop_um": 20.0}},
        "train": {
            "views": 2,
            "phase1": {"epochs": 0},
            "phase2": {"epochs": 10_000, "lr": 0.002, "batch_size": 4, "finetune_stages": "all", "patience": 10_000}
            | {"schedule": "cosine", "minutes": 0.1},
        },
        "eval": {"n_boot": 20},
    }
    from leukcore.train.config import resolve_config

    run = train_classifier(resolve_config(cfg), tmp_path / "run", evaluate=False, log=lambda *a: None)
    hist = json.loads((run / "history.json").read_text())
    assert hist and {h["phase"] for h in hist} == {2}  # phase 1 skipped
    assert 1 <= len(hist) < 10_000 and hist[-1]["elapsed_s"] >= 5.0  # the 6 s budget, not the epochs, ended it
    assert hist[-1]["lr"] < 0.002 * 0.2  # the cosine ran over the budget's time
    clf = Classifier.load(run, device="cpu", backend="torch")
    ref = build_network("resnet10t", 2)
    key = next(k for k in ref.state_dict() if k.endswith("running_mean"))
    learned = clf.network.state_dict()[key].cpu().numpy()  # BatchNorm statistics learned, not the initial zeros
    assert not np.allclose(learned, ref.state_dict()[key].numpy())
    assert clf.card["training"]["timings"]["phase2_budget_min"] == 0.1


def test_presets_resolve_and_the_scratch_recipe_trains_the_whole_network():
    from pathlib import Path

    import leukcore.train.config as config

    presets = sorted(Path(config.__file__).parent.glob("configs/*.yaml"))
    assert len(presets) >= 9
    for p in presets:
        config.load_config(p)  # every shipped recipe resolves
    s = config.load_config(config.preset_path("all-4class-scratch"))
    lite = config.load_config(config.preset_path("all-4class"))
    assert s["model"]["imagenet"] == "none" and s["train"]["phase1"]["epochs"] == 0
    assert s["train"]["phase2"]["finetune_stages"] == "all" and s["train"]["phase2"]["minutes"] > 0
    assert s["data"] == lite["data"] and s["model"]["input"] == lite["model"]["input"]  # same crops as the Lite rows
    for bad in ("some", -1, 1.5):
        with pytest.raises(ValueError, match="finetune_stages"):
            config.resolve_config(
                {**lite, "train": {**lite["train"], "phase2": {**lite["train"]["phase2"]} | {"finetune_stages": bad}}}
            )
