"""Out-of-distribution review (issue 14 item 3): a cell unlike the training cells goes to review with
reason ``ood``; a card without OOD statistics behaves as before; torch and ONNX give the same scores; the
card records the threshold and the statistics file's sha256, which is checked when the file is read."""

import numpy as np
import pytest
import yaml

from leukcore.classify import Classifier, CropSpec, classify_cells
from leukcore.classify.model import crop_features
from leukcore.classify.network import build_network
from leukcore.classify.ood import fit_ood, load_ood, save_ood
from leukcore.io.slide import Slide
from leukcore.models.registry import ModelError, load_card, save_model
from leukcore.results import CellTable
from leukcore.train.review import choose_ood_threshold, ood_review_block

ARCH = "tf_efficientnet_lite0"


def _disk_crops(n, seed=0, size=32):
    """Pale crops each holding one dark purple disk: the 'training cells'."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        c = np.full((size, size, 3), 225, np.int32) + rng.integers(-8, 8, (size, size, 3))
        cy, cx, r = size / 2 + rng.normal(0, 2), size / 2 + rng.normal(0, 2), rng.uniform(6, 10)
        c[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (110, 50, 150) + rng.integers(-15, 15, 3)
        out[i] = np.clip(c, 0, 255)
    return out


def _far_crop(size=32, seed=5):
    """Nothing like a cell: saturated green/blue noise."""
    rng = np.random.default_rng(seed)
    c = np.zeros((size, size, 3), np.uint8)
    c[..., 1] = rng.integers(150, 256, (size, size))
    c[..., 2] = rng.integers(0, 256, (size, size))
    return c


@pytest.fixture(scope="module")
def plain_card(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    net = build_network(ARCH, 2)
    spec = CropSpec(size=32, crop_um=16.0, mode="rgb")
    card = {
        "name": "tiny-ood",
        "task": "classification",
        "version": 1,
        "architecture": {"name": ARCH, "num_classes": 2},
        "input": spec.to_card(),
        "classes": ["ALL", "normal"],
        "review": {"confidence": 0.5},
    }
    return save_model(net.state_dict(), card, tmp_path_factory.mktemp("m"), "tiny-ood")


@pytest.fixture(scope="module")
def ood_card(plain_card):
    """The same model plus OOD statistics fitted on disk crops (as calibrate_review.py --ood writes them)."""
    clf = Classifier.load(plain_card, device="cpu", backend="torch")
    crops = _disk_crops(200)
    _, F = crop_features(clf, crops)
    stats = fit_ood(F, np.arange(200) % 2, k=32)
    t = choose_ood_threshold(stats.score(crop_features(clf, _disk_crops(100, seed=1))[1]), 0.99)
    ofile = plain_card.parent / "tiny-ood.ood.safetensors"
    sha = save_ood(stats, ofile)
    card = yaml.safe_load(plain_card.read_text())
    card["review"]["ood"] = ood_review_block(
        {"file": ofile.name, "sha256": sha},
        t,
        0.99,
        "test disks",
        "test",
        {"n_train_cells": 200, "n_val_cells": 100, "pca_k": 32, "shrinkage": 0.05},
    )
    path = plain_card.parent / "tiny-ood-with-ood.yaml"
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


def _slide_with(crops):
    """A slide of the crops side by side (0.5 um/px) and a table of their centres."""
    n, s = len(crops), crops.shape[1]
    img = np.full((s, s * n, 3), 225, np.uint8)
    for i, c in enumerate(crops):
        img[:, i * s : (i + 1) * s] = c
    cents = np.array([[s / 2, s * i + s / 2] for i in range(n)], float)
    polys = [np.array([[y - 6, x - 6], [y - 6, x + 6], [y + 6, x + 6], [y + 6, x - 6]], np.float32) for y, x in cents]
    return Slide.from_array(img, mpp=0.5), CellTable.from_detections(cents, polys, np.ones(n), mpp=0.5)


def test_card_records_threshold_and_hash(ood_card):
    card = load_card(ood_card)
    b = card["review"]["ood"]
    assert b["score"] == "mahalanobis-pca" and b["threshold"] > 0 and len(b["sha256"]) == 64
    assert b["file"] == "tiny-ood.ood.safetensors"
    clf = Classifier.load(ood_card, device="cpu", backend="torch")
    assert clf.ood_threshold == pytest.approx(b["threshold"])
    assert clf._ood_stats is False  # lazy: not read at load
    assert clf.ood is not None and clf.ood.basis.shape == (1280, 32)


def test_hash_is_checked_when_the_statistics_are_read(ood_card, tmp_path):
    import shutil

    for f in ood_card.parent.iterdir():
        shutil.copy(f, tmp_path / f.name)
    ofile = tmp_path / "tiny-ood.ood.safetensors"
    b = bytearray(ofile.read_bytes())
    b[-5] ^= 0xFF
    ofile.write_bytes(bytes(b))
    clf = Classifier.load(tmp_path / ood_card.name, device="cpu", backend="torch")
    with pytest.raises(ModelError, match="sha256"):
        clf.predict_crops_ood(_disk_crops(2))
    card = load_card(tmp_path / ood_card.name)
    card["review"]["ood"]["sha256"] = ""
    with pytest.raises(ModelError, match="no sha256"):
        load_ood(card)


def test_far_cell_goes_to_review_with_reason_ood(ood_card):
    clf = Classifier.load(ood_card, device="cpu", backend="torch")
    crops = np.concatenate([_disk_crops(4, seed=7), _far_crop()[None]])
    _, scores = clf.predict_crops_ood(crops)
    assert scores[-1] > clf.ood_threshold and (scores[:-1] <= clf.ood_threshold).all()
    slide, table = _slide_with(crops)
    out = classify_cells(slide, table, clf, batch_size=2)
    assert out.df["review"].iloc[-1] and out.df["review_reason"].iloc[-1] == "ood"
    assert out.df["ood_score"].iloc[-1] > clf.ood_threshold
    assert (out.df["review_reason"].iloc[:-1] != "ood").all()
    s = out.summary()
    assert s["review_reasons"]["ood"] == 1 and s["review"] == sum(s["review_reasons"].values())
    assert out.meta["classifier"]["ood"]["threshold"] == pytest.approx(clf.ood_threshold)
    # the one-image path (`leuk classify` of a single-cell image) says why as well
    from leukcore.field import classify_image

    rec = classify_image(np.kron(_far_crop(), np.ones((4, 4, 1), np.uint8)), clf, kind="cell")
    assert rec["review"] and rec["review_reason"] == "ood" and rec["label"] == "review"


def test_card_without_ood_behaves_as_before(plain_card, ood_card):
    plain = Classifier.load(plain_card, device="cpu", backend="torch")
    assert plain.ood_threshold is None and plain.ood is None
    crops = np.concatenate([_disk_crops(3, seed=7), _far_crop()[None]])
    p, s = plain.predict_crops_ood(crops)
    assert s is None and np.array_equal(p, plain.predict_crops(crops))
    slide, table = _slide_with(crops)
    out = classify_cells(slide, table, plain)
    assert "ood_score" not in out.df and "review_reason" not in out.df
    assert "review_reasons" not in out.summary() and "ood" not in out.meta["classifier"]
    # the probabilities do not depend on whether OOD statistics are present
    withood = classify_cells(slide, table, Classifier.load(ood_card, device="cpu", backend="torch"))
    assert np.allclose(out.df[["prob_ALL", "prob_normal"]], withood.df[["prob_ALL", "prob_normal"]], atol=1e-6)
    assert (out.df["review"].to_numpy() <= withood.df["review"].to_numpy()).all()
    from leukcore.field import classify_image

    rec = classify_image(np.kron(_far_crop(), np.ones((4, 4, 1), np.uint8)), plain, kind="cell")
    assert "review_reason" not in rec and "ood" not in rec


def test_onnx_gives_the_torch_scores_and_its_own_cache_key(plain_card, ood_card, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("LEUK_CACHE", str(tmp_path))
    Classifier.load(plain_card, device="cpu", backend="onnx")
    old = sorted(p.name for p in (tmp_path / "onnx").glob("*.onnx"))
    assert len(old) == 1 and not old[0].endswith("-feat.onnx")
    co = Classifier.load(ood_card, device="cpu", backend="onnx")
    new = sorted(p.name for p in (tmp_path / "onnx").glob("*.onnx"))
    assert co.backend == "onnx" and len(new) == 2 and any(n.endswith("-feat.onnx") for n in new)
    ct = Classifier.load(ood_card, device="cpu", backend="torch")
    crops = np.concatenate([_disk_crops(5, seed=3), _far_crop()[None]])
    po, so = co.predict_crops_ood(crops, batch_size=4)
    pt, st = ct.predict_crops_ood(crops, batch_size=4)
    assert np.allclose(po, pt, atol=1e-4) and np.allclose(so, st, rtol=1e-3, atol=1e-3)
    pf, sf = co.predict_crops_ood(crops, tta="flip")
    assert np.allclose(pf, ct.predict_crops(crops, tta="flip"), atol=1e-4) and np.allclose(sf, so, atol=1e-5)


def test_mahalanobis_pca_is_the_shrunk_mahalanobis_distance():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 6))
    F = rng.normal(size=(500, 6)) @ A + np.repeat([[0.0] * 6, [3.0] * 6], 250, axis=0)
    y = np.repeat([0, 1], 250)
    st = fit_ood(F, y, k=5, shrinkage=0.0)
    # with k = D - 1 the isotropic rest is the last eigenvalue: the exact distance
    mu = np.stack([F[y == 0].mean(0), F[y == 1].mean(0)])
    r = F - mu[y]
    Si = np.linalg.inv(r.T @ r / (len(F) - 2))
    x = rng.normal(size=(7, 6)) * 4
    exact = np.sqrt(np.min([np.einsum("ij,jk,ik->i", x - m, Si, x - m) for m in mu], axis=0) / 6)
    assert np.allclose(st.score(x), exact, rtol=1e-4)
    assert st.score(mu).max() < 1e-3
    assert choose_ood_threshold(np.arange(101.0), 0.95) == pytest.approx(95.0)


def test_statistics_round_trip_through_the_file(tmp_path):
    rng = np.random.default_rng(1)
    st = fit_ood(rng.normal(size=(300, 20)), np.arange(300) % 3, k=7)
    sha = save_ood(st, tmp_path / "s.ood.safetensors")
    card = {"_card_path": str(tmp_path / "m.yaml"), "review": {"ood": {"file": "s.ood.safetensors", "sha256": sha}}}
    back = load_ood(card)
    x = rng.normal(size=(9, 20)) * 3
    assert np.array_equal(back.basis, st.basis) and np.allclose(back.score(x), st.score(x))


def test_a_field_is_judged_from_its_familiar_cells(ood_card):
    from leukcore.field import _cells_record, _review

    clf = Classifier.load(ood_card, device="cpu", backend="torch")
    crops = np.concatenate([_disk_crops(3, seed=7), _far_crop()[None]])
    slide, table = _slide_with(crops)
    img = slide.read_region(0, 0, 0, *slide.shape)
    rec = _review(_cells_record(img, table, clf, 0.5), clf)
    assert rec["n_cells"] == 4 and rec["n_cells_ood"] == 1 and rec["ood"] is False
    assert rec.get("review_reason") != "ood"
    slide, table = _slide_with(np.stack([_far_crop(seed=s) for s in range(3)]))
    rec = _review(_cells_record(slide.read_region(0, 0, 0, *slide.shape), table, clf, 0.5), clf)
    assert rec["ood"] and rec["review"] and rec["review_reason"] == "ood" and rec["label"] == "review"
