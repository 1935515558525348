"""Results that cannot be stale (issue 18): input / settings / model fingerprints in summary.json, batch
resume that redoes a slide when any of them changed (and says why), invalidation of an old summary before
any work, and tamper-evident model cards (card sha256 + path recorded; a card without a weights sha256 is
refused unless trusted)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from leukcore import provenance as P
from leukcore.models.registry import MODEL_PATH_ENV, WEIGHTS_DIR, ModelError, load_card, load_state_dict, save_model


# ------------------------------------------------------------------ input fingerprints
def test_input_fingerprint_small_file_whole_and_changes(tmp_path):
    f = tmp_path / "a.png"
    f.write_bytes(b"x" * 1000)
    a = P.input_fingerprint(f)
    assert a["kind"] == "file" and a["size"] == 1000 and a["method"] == "whole file"
    assert a["path"] == str(f.resolve())
    f.write_bytes(b"x" * 999 + b"y")  # same size, other content
    os.utime(f, ns=(a["mtime_ns"], a["mtime_ns"]))  # and the same mtime: still caught
    b = P.input_fingerprint(f)
    assert P.compare(_block(a), _block(b)) == ["input changed: meta_sha256, sample_sha256"]
    assert P.input_fingerprint(None) is None
    assert P.input_fingerprint(tmp_path / "nope")["kind"] == "missing"


def test_input_fingerprint_large_file_is_bounded(tmp_path, monkeypatch):
    """A big file is read head + tail + 16 blocks only, and a changed sampled block is seen."""
    f = tmp_path / "big.tif"
    size = 64 << 20
    with open(f, "wb") as fh:
        fh.truncate(size)  # sparse: 64 MiB of zeros
    reads = []
    real_open = open

    class Counting:
        def __init__(self, fh):
            self.fh = fh

        def read(self, n=-1):
            b = self.fh.read(n)
            reads.append(len(b))
            return b

        def __getattr__(self, k):
            return getattr(self.fh, k)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

    monkeypatch.setattr("builtins.open", lambda *a, **k: Counting(real_open(*a, **k)))
    a = P.input_fingerprint(f)
    monkeypatch.undo()
    assert sum(reads) <= (2 << 20) + 16 * 64 * 1024 + 65536  # + the TIFF sniff
    assert a["size"] == size and "16 x 64 KiB" in a["method"]
    # flip a byte inside the middle sampled block (block 8 of 16)
    off = int(round(8 * (size - 65536) / 15)) + 100
    with open(f, "r+b") as fh:
        fh.seek(off)
        fh.write(b"\x01")
    os.utime(f, ns=(a["mtime_ns"], a["mtime_ns"]))
    b = P.input_fingerprint(f)
    assert b["sample_sha256"] != a["sample_sha256"] and b["meta_sha256"] == a["meta_sha256"]


def test_input_fingerprint_tiff_and_zarr(tmp_path):
    from leukcore.io import write_slide

    img = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    t = write_slide(tmp_path / "s.ome.tif", img, mpp=0.5, tile=256)
    a = P.input_fingerprint(t)
    assert a["kind"] == "file" and a["size"] == Path(t).stat().st_size
    z = write_slide(tmp_path / "s.ome.zarr", img, mpp=0.5, tile=256, format="ome-zarr")
    b = P.input_fingerprint(z)
    assert b["kind"] == "directory" and b["n_files"] >= 1 and b["size"] > 0
    # rewriting the zarr with other pixels changes the data sample; other metadata changes the meta hash
    write_slide(tmp_path / "t.ome.zarr", 255 - img, mpp=0.5, tile=256, format="ome-zarr")
    c = P.input_fingerprint(tmp_path / "t.ome.zarr")
    assert c["sample_sha256"] != b["sample_sha256"]
    write_slide(tmp_path / "u.ome.zarr", img, mpp=0.25, tile=256, format="ome-zarr")
    assert P.input_fingerprint(tmp_path / "u.ome.zarr")["meta_sha256"] != b["meta_sha256"]


def _block(input_fp, settings=None, det=None, clf=None):
    return P.fingerprint(input_fp, settings or P.analysis_settings(), det, clf)


def test_compare_names_every_difference():
    inp = {"path": "/a.tif", "kind": "file", "size": 1, "mtime_ns": 1, "meta_sha256": "m", "sample_sha256": "s"}
    det = {
        "name": "wbc-stardist",
        "version": 3,
        "card_sha256": "c",
        "sha256": "w",
        "origin": "shipped",
        "card_path": "/site/a/wbc-stardist.yaml",
    }
    clf = {
        "name": "all-binary",
        "version": 2,
        "card_sha256": "c2",
        "sha256": "w2",
        "origin": "shipped",
        "card_path": "/site/a/all-binary.yaml",
    }
    a = _block(inp, P.analysis_settings(), det, clf)
    assert P.compare(a, _block(inp, P.analysis_settings(), det, clf)) == []
    # a shipped card installed elsewhere (another worker machine) is the same card
    moved = {**det, "card_path": "/other/site/wbc-stardist.yaml"}
    assert P.compare(a, _block(inp, P.analysis_settings(), moved, clf)) == []
    b = _block(inp, P.analysis_settings(mpp=0.5), det, {**clf, "name": "all-4class"})
    assert P.compare(a, b) == ["settings changed: model, mpp"]
    c = _block(
        {**inp, "size": 2, "mtime_ns": 5},
        P.analysis_settings(),
        det,
        {**clf, "card_sha256": "X", "origin": "user", "card_path": "/mine/all-binary.yaml"},
    )
    r = P.compare(a, c)
    assert r[0] == "input changed: size, mtime_ns"
    assert r[1].startswith("classifier changed: card sha256, card path") and "/mine/all-binary.yaml" in r[1]
    assert P.compare(None, a) == ["no fingerprint (written by an older leukcore)"]
    assert a["digest"] != c["digest"]


# ------------------------------------------------------------------ cards
def _tiny_model(tmp_path, name="m", classes=("a", "b")):
    import torch

    return save_model(
        {"w": torch.ones(3)}, {"task": "classification", "version": 1, "classes": list(classes)}, tmp_path, name
    )


def test_card_hash_and_unverified_refused(tmp_path):
    cpath = _tiny_model(tmp_path)
    c = load_card(cpath)
    assert c["_card_sha256"] == P.sha256_file(cpath) and c["_card_path"] == str(cpath)
    load_state_dict(c)
    assert c["_weights_sha256"] == c["weights"]["sha256"]
    # the same card with its weights hash removed: refused, then loaded when trusted
    import yaml

    d = yaml.safe_load(cpath.read_text())
    del d["weights"]["sha256"]
    cpath.write_text(yaml.safe_dump(d, sort_keys=False))
    with pytest.raises(ModelError, match="no sha256.*trust-unverified"):
        load_state_dict(load_card(cpath))
    c2 = load_card(cpath, trust_unverified=True)
    load_state_dict(c2)
    rec = P.model_record(c2)
    assert rec["weights_verified"] is False and rec["sha256"] == c["weights"]["sha256"]  # hash of the file read
    assert rec["card_sha256"] != c["_card_sha256"] and rec["origin"] == "user"


def test_unverified_card_refused_by_cli_and_batch(tmp_path, capsys):
    """`leuk classify` / `leuk analyze` / run_batch refuse a card without weights sha256 (exit 2, clear error)."""
    import yaml

    from leukcore.batch import run_batch
    from leukcore.cli import main

    src = load_card("all-binary")
    d = {k: v for k, v in src.items() if not k.startswith("_")}
    d["weights"] = {"file": "all-binary.safetensors"}
    shutil.copy(WEIGHTS_DIR / "all-binary.safetensors", tmp_path / "all-binary.safetensors")
    card = tmp_path / "nohash.yaml"
    card.write_text(yaml.safe_dump(d, sort_keys=False))
    from leukcore.sample import bundled_fields

    crop = Path(bundled_fields()[0].path)  # a real smear field, taken as one cell (--kind cell)
    assert main(["classify", str(crop), "--model", str(card), "--kind", "cell"]) == 2
    assert "no sha256" in capsys.readouterr().err
    assert (
        main(
            [
                "classify",
                str(crop),
                "--model",
                str(card),
                "--kind",
                "cell",
                "--trust-unverified",
                "--json",
                "--backend",
                "torch",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["label"] in ("ALL", "normal")
    assert (
        main(["analyze", str(crop), "-o", str(tmp_path / "o"), "--model", str(card), "--quiet", "--mpp", "0.25"]) == 2
    )
    assert "no sha256" in capsys.readouterr().err
    with pytest.raises(ModelError, match="no sha256"):
        run_batch([crop], tmp_path / "b", classifier=str(card))


# ------------------------------------------------------------------ pipeline: summary + invalidation
@pytest.fixture
def fakes(monkeypatch):
    import leukcore.detect
    from test_pipeline_plumbing import FakeClassifier, FakeDetector, fake_iter_detect

    monkeypatch.setattr(leukcore.detect, "iter_detect", fake_iter_detect, raising=False)
    return FakeDetector(), FakeClassifier()


@pytest.fixture
def slide_file(tmp_path):
    from leukcore.io import write_slide
    from test_pipeline_plumbing import _disk_image

    img, _ = _disk_image(n=6, size=600, seed=3)
    return write_slide(tmp_path / "src" / "s1.ome.tif", img, mpp=0.5, tile=256)


def test_summary_records_provenance(fakes, slide_file, tmp_path):
    from leukcore.pipeline import analyze_slide

    det, clf = fakes
    res = analyze_slide(slide_file, det, clf, device="cpu", tile_size=256, out_dir=tmp_path / "o")
    pv = json.loads((tmp_path / "o" / "summary.json").read_text())["provenance"]
    assert pv == json.loads(json.dumps(res.summary["provenance"]))
    assert pv["input"]["path"] == str(Path(slide_file).resolve()) and pv["input"]["size"] > 0
    assert set(pv["settings"]) == set(P.analysis_settings())
    assert pv["settings"]["tile_size"] == 256 and pv["settings"]["device"] == "cpu"
    assert pv["settings"]["mpp"] is None and pv["settings"]["skip_missing"] is False
    assert pv["models"]["classifier"]["name"] == "fake-clf" and pv["models"]["classifier"]["sha256"] == "1" * 64
    assert len(pv["digest"]) == 64


def test_failed_or_cancelled_run_never_leaves_old_summary(fakes, slide_file, tmp_path, monkeypatch):
    from leukcore.export.summary import is_complete
    from leukcore.pipeline import analyze_slide
    from leukcore.progress import CancelToken

    det, clf = fakes
    out = tmp_path / "o"
    analyze_slide(slide_file, det, clf, device="cpu", tile_size=256, out_dir=out)
    assert is_complete(out)

    class Boom(Exception):
        pass

    def broken(*a, **k):
        raise Boom("classifier died")

    monkeypatch.setattr(clf, "predict_crops", broken)
    with pytest.raises(Boom):
        analyze_slide(slide_file, det, clf, device="cpu", tile_size=256, out_dir=out)
    assert not (out / "summary.json").exists() and not is_complete(out)

    monkeypatch.undo()
    import leukcore.detect
    from test_pipeline_plumbing import fake_iter_detect

    monkeypatch.setattr(leukcore.detect, "iter_detect", fake_iter_detect, raising=False)
    analyze_slide(slide_file, det, clf, device="cpu", tile_size=256, out_dir=out)
    assert is_complete(out)
    tok = CancelToken()
    tok.cancel()
    res = analyze_slide(slide_file, det, clf, device="cpu", tile_size=256, out_dir=out, cancel=tok)
    assert res.partial and not (out / "summary.json").exists()
    # a worker task whose slide cannot even be opened: the marker is gone too
    from leukcore.batch import process_slide

    analyze_slide(slide_file, det, clf, device="cpu", tile_size=256, out_dir=out)
    row = process_slide(
        str(tmp_path / "missing.ome.tif"), str(out), {"detector": det, "classifier": clf, "device": "cpu"}
    )
    assert row["status"] == "error" and not (out / "summary.json").exists()


# ------------------------------------------------------------------ batch resume decisions
@pytest.fixture
def client(fakes):
    """An in-process dask cluster (threads), so the monkeypatched fake detection is what runs."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def test_batch_resume_redoes_on_any_change(fakes, slide_file, tmp_path, client):
    from leukcore.batch import BatchCluster, run_batch
    from test_pipeline_plumbing import FakeClassifier

    det, clf = fakes
    out = tmp_path / "out"
    kw = dict(cluster=BatchCluster(client=client), detector=det, device="cpu", tile_size=256)

    def plan_of(res_events):
        return [e.data["plan"] for e in res_events if e.data and "plan" in e.data][0]["s1"]

    ev = []
    r = run_batch([slide_file], out, classifier=clf, progress=ev.append, **kw)
    assert r["n_done"] == 1 and plan_of(ev) == "new" and r.rows[0]["resume"] == "new"

    ev = []
    r = run_batch([slide_file], out, classifier=clf, progress=ev.append, **kw)
    assert r["n_skipped"] == 1 and plan_of(ev) == "skipped (complete)"

    # another classifier and another pixel size: redone, and said why
    other = FakeClassifier()
    other.card = {**other.card, "name": "fake-clf-4"}
    ev = []
    r = run_batch([slide_file], out, classifier=other, mpp=0.5, progress=ev.append, **kw)
    assert r["n_done"] == 1 and plan_of(ev) == "redo (settings changed: model, mpp)"
    import pandas as pd

    row = pd.read_csv(out / "batch_summary.csv").iloc[0]
    assert row["status"] == "done" and row["resume"] == "redo (settings changed: model, mpp)"
    assert row["classifier"] == "fake-clf-4"

    # the same name, other weights (a retrained model): redone
    retrained = FakeClassifier()
    retrained.card = {**other.card, "weights": {"sha256": "2" * 64}}
    ev = []
    r = run_batch([slide_file], out, classifier=retrained, mpp=0.5, progress=ev.append, **kw)
    assert plan_of(ev) == "redo (classifier changed: weights sha256)"

    # a different file at the same path: redone
    from leukcore.io import write_slide
    from test_pipeline_plumbing import _disk_image

    img, _ = _disk_image(n=7, size=640, seed=9)
    write_slide(slide_file, img, mpp=0.5, tile=256)
    ev = []
    r = run_batch([slide_file], out, classifier=retrained, mpp=0.5, progress=ev.append, **kw)
    assert plan_of(ev).startswith("redo (input changed: size, mtime_ns") and r["n_done"] == 1

    # an old summary without a fingerprint is not trusted
    s = json.loads((out / "s1" / "summary.json").read_text())
    del s["provenance"]
    (out / "s1" / "summary.json").write_text(json.dumps(s))
    ev = []
    run_batch([slide_file], out, classifier=retrained, mpp=0.5, progress=ev.append, **kw)
    assert plan_of(ev) == "redo (no fingerprint (written by an older leukcore))"


def test_batch_invalidates_before_any_work(fakes, slide_file, tmp_path, monkeypatch):
    """A rerun with other settings that dies before its task runs leaves no complete summary behind."""
    from leukcore import batch as B
    from leukcore.export.summary import is_complete
    from leukcore.pipeline import analyze_slide

    det, clf = fakes
    out = tmp_path / "out"
    analyze_slide(slide_file, det, clf, device="cpu", tile_size=256, out_dir=out / "s1")
    assert is_complete(out / "s1")

    class Died(Exception):
        pass

    def no_cluster(*a, **k):
        raise Died("killed before the cluster started")

    import distributed

    monkeypatch.setattr(distributed, "LocalCluster", no_cluster)
    with pytest.raises(Died):
        B.run_batch([slide_file], out, detector=det, classifier=clf, device="cpu", tile_size=256, mpp=0.4)
    assert not (out / "s1" / "summary.json").exists()


# ------------------------------------------------------------------ the audit's card swap, real classifier
def _field_slide(tmp_path):
    """One bundled four-class field as a small OME-TIFF (real cells)."""
    from leukcore.sample import build_mosaic, bundled_fields

    four = [f for f in bundled_fields() if f.source == "all4class"]
    return build_mosaic([four[0]], tmp_path / "field.ome.tif", grid=(1, 1), mpp=0.25, shuffle=None).path


def _swapped_card(tmp_path, name="all-binary"):
    import yaml

    d = yaml.safe_load((WEIGHTS_DIR / f"{name}.yaml").read_text())
    d["classes"] = list(reversed(d["classes"]))
    user = tmp_path / "models"
    user.mkdir()
    shutil.copy(WEIGHTS_DIR / d["weights"]["file"], user / d["weights"]["file"])
    (user / f"{name}.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    return user


@pytest.mark.slow
def test_swapped_card_on_model_path_changes_the_summary(tmp_path, monkeypatch):
    """A card of the same name on LEUK_MODEL_PATH with its classes swapped: the summary's model block
    says so (card path, card sha256, classes), and batch resume redoes the slide."""
    from test_pipeline_e2e import _classifier

    if _classifier() != "all-binary":
        pytest.skip("needs the shipped all-binary classifier")
    from leukcore.batch import current_models, resume_decision
    from leukcore.pipeline import analyze_slide

    slide = _field_slide(tmp_path)
    kw = dict(device="cpu", mpp=0.25)
    a = analyze_slide(slide, "wbc-stardist", "all-binary", out_dir=tmp_path / "a", **kw)
    ma = a.summary["models"]["classifier"]
    assert ma["origin"] == "shipped" and ma["card_path"] == str((WEIGHTS_DIR / "all-binary.yaml").resolve())
    assert ma["card_sha256"] == P.sha256_file(WEIGHTS_DIR / "all-binary.yaml") and ma["weights_verified"]

    user = _swapped_card(tmp_path)
    monkeypatch.setenv(MODEL_PATH_ENV, str(user))
    b = analyze_slide(slide, "wbc-stardist", "all-binary", out_dir=tmp_path / "b", **kw)
    mb = b.summary["models"]["classifier"]
    assert mb["card_path"] == str((user / "all-binary.yaml").resolve()) and mb["origin"] == "user"
    assert mb["card_sha256"] != ma["card_sha256"] and mb["sha256"] == ma["sha256"]  # same weights, other card
    assert mb["classes"] == list(reversed(ma["classes"]))
    assert a.summary["provenance"]["digest"] != b.summary["provenance"]["digest"]
    n = a.summary["cells"]
    assert (
        b.summary["cells"] == n and b.summary["counts"] == {k: n - v for k, v in a.summary["counts"].items()} or n == 0
    )
    # batch resume on the folder written with the shipped card: redone, with the reason
    settings = P.analysis_settings(mpp=0.25, device="cpu")
    skip, why = resume_decision(Path(slide), tmp_path / "a", settings, current_models("wbc-stardist", "all-binary"))
    assert not skip and why.startswith("redo (classifier changed: card sha256, card path")
    monkeypatch.delenv(MODEL_PATH_ENV)
    assert resume_decision(Path(slide), tmp_path / "a", settings, current_models("wbc-stardist", "all-binary")) == (
        True,
        "skipped (complete)",
    )


@pytest.mark.slow
def test_leuk_batch_cli_says_why_it_redoes(tmp_path, capsys):
    """The audit's case: a rerun with --model all-4class --mpp 0.5 is redone, not skipped (complete)."""
    from test_pipeline_e2e import _classifier

    _classifier()
    from leukcore.models.registry import list_models

    if not {"all-binary", "all-4class"} <= set(list_models()):
        pytest.skip("needs both shipped classifiers")
    from leukcore.cli import main

    src = tmp_path / "src"
    src.mkdir()
    _field_slide(src)
    out = tmp_path / "out"
    base = ["batch", str(src), "-o", str(out), "--workers", "1", "--device", "cpu", "--quiet"]
    assert main(base + ["--model", "all-binary"]) == 0
    capsys.readouterr()
    assert main(base + ["--model", "all-binary"]) == 0
    assert "skipped (complete): 1" in capsys.readouterr().out
    assert main(base + ["--model", "all-4class", "--mpp", "0.5"]) == 0
    cap = capsys.readouterr()
    assert "field: redo (settings changed: model, mpp)" in cap.err and "done: 1" in cap.out
    s = json.loads((out / "field" / "summary.json").read_text())
    assert s["models"]["classifier"]["name"] == "all-4class" and s["mpp"]["value"] == 0.5
