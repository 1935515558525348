"""Classifier: save/load through a model card (hash checked), inference, classify_cells, Grad-CAM, ONNX."""

import numpy as np
import pytest

from leukcore.classify import Classifier, CropSpec, classify_cells, gradcam
from leukcore.classify.network import build_network
from leukcore.io.slide import Slide
from leukcore.models.registry import ModelError, load_card, save_model
from leukcore.progress import CancelToken
from leukcore.results import CellTable

ARCH = "tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def card_path(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    net = build_network(ARCH, 3)
    spec = CropSpec(size=32, crop_um=16.0, mode="rgb")
    card = {
        "name": "tiny",
        "task": "classification",
        "version": 1,
        "architecture": {"name": ARCH, "num_classes": 3},
        "input": spec.to_card(),
        "classes": ["a", "b", "c"],
    }
    return save_model(net.state_dict(), card, tmp_path_factory.mktemp("m"), "tiny")


@pytest.fixture(scope="module")
def clf(card_path):
    return Classifier.load(card_path, device="cpu", backend="torch")


def _field(n=5):
    rng = np.random.default_rng(1)
    img = np.full((200, 300, 3), 225, np.uint8)
    cents = []
    for i in range(n):
        y, x = 40 + 30 * (i % 4), 40 + 50 * i
        yy, xx = np.mgrid[:200, :300]
        img[(yy - y) ** 2 + (xx - x) ** 2 < 100] = rng.integers(60, 200, 3)
        cents.append([y, x])
    polys = [np.array([[y - 8, x - 8], [y - 8, x + 8], [y + 8, x + 8], [y + 8, x - 8]], np.float32) for y, x in cents]
    return img, CellTable.from_detections(np.array(cents, float), polys, np.ones(n), mpp=0.5)


def test_load_and_predict(clf):
    assert clf.classes == ["a", "b", "c"] and clf.spec.size == 32 and clf.backend == "torch"
    crops = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3)).astype(np.uint8)
    p = clf.predict_crops(crops, batch_size=2)
    assert p.shape == (5, 3) and p.dtype == np.float32
    assert np.allclose(p.sum(1), 1, atol=1e-5)
    big = np.stack([np.kron(c, np.ones((2, 2, 1), np.uint8)) for c in crops])  # 64 px -> resampled
    assert clf.predict_crops(big).shape == (5, 3)
    assert clf.predict_crops(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, 3)
    with pytest.raises(ValueError, match="uint8"):
        clf.predict_crops(crops.astype(np.float32))


def test_hash_mismatch_and_wrong_task_are_refused(card_path, tmp_path):
    import shutil

    import yaml

    d = tmp_path / "bad"
    shutil.copytree(card_path.parent, d)
    c = yaml.safe_load((d / "tiny.yaml").read_text())
    c["weights"]["sha256"] = "0" * 64
    (d / "tiny.yaml").write_text(yaml.safe_dump(c))
    with pytest.raises(ModelError, match="sha256"):
        Classifier.load(d / "tiny.yaml", device="cpu", backend="torch")
    c = load_card(card_path)
    c["task"] = "detection"
    with pytest.raises(ModelError, match="not a classification"):
        Classifier.load(c, device="cpu")


def test_classify_cells_progress_and_cancel(clf):
    img, table = _field(5)
    slide = Slide.from_array(img, mpp=0.5)
    events = []
    out = classify_cells(slide, table, clf, batch_size=2, progress=events.append)
    assert len(out) == 5 and set(out.df["label"]) <= set(clf.classes)
    assert {"prob_a", "prob_b", "prob_c", "confidence", "review"} <= set(out.df.columns)
    assert events[-1].done == 5 and events[-1].total == 5 and events[-1].stage == "classify"
    assert out.meta["classifier"]["name"] == "tiny" and not out.partial
    assert "label" not in table.df.columns  # input untouched
    # the same crops give the same probabilities as predict_crops
    from leukcore.classify import extract_crops

    p = clf.predict_crops(extract_crops(slide, table, clf))
    assert np.allclose(p, out.df[["prob_a", "prob_b", "prob_c"]].to_numpy(), atol=1e-5)

    tok = CancelToken()

    def cancel_after_first(ev):
        if ev.done >= 2:
            tok.cancel()

    part = classify_cells(slide, table, clf, batch_size=2, progress=cancel_after_first, cancel=tok)
    assert part.partial
    assert (part.df["label"].iloc[:2] != "unclassified").all()
    assert (part.df["label"].iloc[2:] == "unclassified").all() and part.df["review"].iloc[2:].all()


def test_gradcam_shapes_targets_and_errors(clf):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (3, 32, 32, 3)).astype(np.uint8)
    h = gradcam(clf, crops)
    assert h.shape == (3, 32, 32) and h.dtype == np.float32
    assert h.min() >= 0 and h.max() <= 1 and (h.reshape(3, -1).max(1) > 0).any()
    h2 = gradcam(clf, crops, target="b")
    h3 = gradcam(clf, crops, target=[1, 1, 1])
    assert np.allclose(h2, h3)
    with pytest.raises(ValueError, match="unknown class"):
        gradcam(clf, crops, target="zzz")
    with pytest.raises(ValueError, match="3 crops"):
        gradcam(clf, crops, target=[0, 1])


def test_onnx_backend_matches_torch(card_path, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("LEUK_CACHE", str(tmp_path))
    ct = Classifier.load(card_path, device="cpu", backend="torch")
    co = Classifier.load(card_path, device="cpu", backend="onnx")
    assert co.backend == "onnx"
    assert list((tmp_path / "onnx").glob("*.onnx"))  # cached, keyed by the weights hash
    crops = np.random.default_rng(2).integers(0, 255, (6, 32, 32, 3)).astype(np.uint8)
    pt, po = ct.predict_crops(crops), co.predict_crops(crops)
    assert np.allclose(pt, po, atol=1e-4)
    assert (pt.argmax(1) == po.argmax(1)).all()
    ca = Classifier.load(card_path, device="cpu", backend="auto")  # reuses the cached export
    assert ca.backend == "onnx"


def test_a_loaded_classifier_pickles_to_a_worker_with_its_backend():
    """run_batch ships loaded models to dask workers by pickle: the ONNX session is reopened there."""
    import pickle

    clf = Classifier.load("all-binary", device="cpu", backend="onnx")
    s = clf.spec.size
    crops = np.random.default_rng(0).integers(0, 255, (3, s, s, 3), dtype=np.uint8)
    p0 = clf.predict_crops(crops)
    back = pickle.loads(pickle.dumps(clf))
    assert back.backend == "onnx" and back._onnx is not None
    assert np.array_equal(p0, back.predict_crops(crops))
